// Integration test harness: every test binary runs in a private mount
// namespace, with tmpfs over /sys/fs (so /sys/fs/mshare can be created) and
// over /dev/shm (so each run's state is its own), and mounts a real msharefsd
// there. Tests drive it with real processes.
#pragma once

#include <linux/msharefs.h>
#include <msharefs/unique_fd.hpp>

#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <sys/mman.h>
#include <sys/types.h>
#include <vector>

namespace msharefs::test {

inline constexpr const char *kMount = MSHAREFS_MOUNT_POINT;
inline constexpr uint64_t kTiB = 1ULL << 40;
inline constexpr uint64_t kGiB = 1ULL << 30;
inline constexpr uint64_t kMiB = 1ULL << 20;

// Sets up the private namespace; call first thing in main(). Returns false
// (after printing why) when the tests cannot run here.
bool enter_test_namespace();

// A Daemon option that starts msharefsd without any datapath= (its
// default); otherwise the data path under test (data_path()) is passed.
inline constexpr const char *kDefaultDataPath = "datapath=default";

// A running msharefsd on /sys/fs/mshare; stopped (umount) when destroyed.
class Daemon {
public:
	// umask_for_daemon >= 0: the daemon starts under that umask.
	explicit Daemon(std::vector<std::string> options = {"align=1G"}, int umask_for_daemon = -1);
	~Daemon();
	Daemon(const Daemon &) = delete;
	Daemon &operator=(const Daemon &) = delete;

	void stop();	// umount and wait for the daemon to exit
	void kill9();	// SIGKILL the daemon; the mount stays
	void restart(); // start a new daemon on the same mount point
	pid_t pid() const { return pid_; }
	uint64_t alignment() const;

private:
	void start();
	std::vector<std::string> options_;
	int umask_ = -1;
	pid_t pid_ = -1;
};

std::string path(const std::string &name);

// With MSHAREFS_TEST_UID set, the tests run as that user (the harness still
// mounts and stops daemons as root): the conformance suites as a non-root
// program would meet them. AsRoot lends the harness root for one scope.
bool running_as_user();
class AsRoot {
public:
	AsRoot();
	~AsRoot();
	AsRoot(const AsRoot &) = delete;
	AsRoot &operator=(const AsRoot &) = delete;
};

// The data path under test: $MSHAREFS_TEST_DATAPATH (pagecache; uffd, with
// the test binaries run under libmshare-preload.so; or kmod, in the QEMU
// guest with the module loaded), pagecache by default. Daemons start with
// datapath= set to it.
std::string data_path();
inline bool on_kmod() { return data_path() == "kmod"; }
inline bool on_uffd() { return data_path() == "uffd"; }
// The data paths with the exact semantics of SPEC section 3 (faults on
// read-only stores, PROTECT for every attacher).
inline bool exact_semantics() { return on_kmod() || on_uffd(); }

// Waits up to timeout_ms for pred (what the daemon does after a release or
// an exit reaches it asynchronously); false if pred never held.
bool eventually(const std::function<bool()> &pred, int timeout_ms = 5000);

// True while pid runs (not a zombie). Works for processes that are not our
// children, such as the daemon (started by the harness's launcher process).
bool alive(pid_t pid);
// Waits up to timeout_s for pid to end; false if it is still running.
bool wait_gone(pid_t pid, int timeout_s);

struct ChildResult {
	int exit_code = -1; // -1 if killed
	int signal = 0;	    // the signal that killed it, 0 if it exited
	bool timed_out = false;
};

// Runs fn in a forked child; its return value is the exit code. A child
// still running after timeout_s is killed and reported as timed out.
pid_t spawn(const std::function<int()> &fn);
ChildResult wait_for(pid_t pid, int timeout_s = 60);
ChildResult run_in_child(const std::function<int()> &fn, int timeout_s = 60);
// Runs a program; its stdout and stderr are appended to *output. With
// as_uid >= 0 it runs as that uid and gid, without supplementary groups.
// on_output, if given, is called with all the output so far each time more
// arrives (from the calling thread, while the program runs).
ChildResult run_program(const std::vector<std::string> &argv, std::string *output, int timeout_s = 60,
			int as_uid = -1, const std::function<void(const std::string &)> &on_output = {});

// Creates NAME, sizes it to [start, start+size) and maps one anonymous shared
// mapping over all of it. Returns the fd (or -1 with errno).
int create_region(const std::string &name, uint64_t start, uint64_t size, mode_t mode = 0600);
// mmap of the whole window at its start; MAP_FAILED with errno on failure.
void *attach(int fd, int prot = 3 /* PROT_READ|PROT_WRITE */);

// ioctl helpers returning 0 or errno.
int set_size(int fd, uint64_t start, uint64_t size);
int get_size(int fd, mshare_info *info);
int create_mapping(int fd, uint64_t addr, uint64_t size, uint64_t offset, uint32_t prot, uint32_t flags,
		   int object_fd = -1);
int unmap(int fd, uint64_t addr, uint64_t size);
int protect(int fd, uint64_t addr, uint64_t size, uint32_t prot); // MSHAREFS_PROTECT

// True if reading (or writing) addr in a child process faults.
bool read_faults(const void *addr);
bool write_faults(void *addr);

// A fault caught in this process: the signal (0 if f ran through), its
// si_code and si_addr.
struct Fault {
	int sig = 0;
	int code = 0;
	void *addr = nullptr;
};

namespace detail {
extern sigjmp_buf fault_jump;
// Catch SIGSEGV and SIGBUS into fault_jump; release_faults puts the old
// handlers back and returns what was caught.
void catch_faults(struct sigaction *old_segv, struct sigaction *old_bus);
Fault release_faults(const struct sigaction &old_segv, const struct sigaction &old_bus, bool faulted);
} // namespace detail

// Runs f in this process; a SIGSEGV or SIGBUS it raises ends it and is
// returned (sigsetjmp must be called here, in the frame that outlives f).
// f must not own objects with destructors: a fault leaves it by siglongjmp.
// Calls may nest.
template <class F> Fault fault_of(F &&f)
{
	sigjmp_buf outer;
	std::memcpy(outer, detail::fault_jump, sizeof(outer));
	struct sigaction old_segv {}, old_bus {};
	detail::catch_faults(&old_segv, &old_bus);
	volatile bool faulted = true;
	if (sigsetjmp(detail::fault_jump, 1) == 0) {
		f();
		faulted = false;
	}
	std::memcpy(detail::fault_jump, outer, sizeof(outer));
	return detail::release_faults(old_segv, old_bus, faulted);
}

// The owner of region NAME as the daemon reports it (user.mshare.stats):
// its pid, 0 once the owner has exited, -1 if the stats cannot be read.
int32_t region_owner(const std::string &name);

// The daemons' state root (msharefsd's default statedir), a private tmpfs
// in the test namespace.
#define MSHAREFS_TEST_STATE_ROOT "/run/msharefs"
inline constexpr const char *kStateRoot = MSHAREFS_TEST_STATE_ROOT;
// The running mount's state directory in it ("" if there is none).
std::string state_dir();

// Names of 4 KiB region objects in the mount's state directory (one per
// anonymous mapping); on datapath=kmod, one entry per module region with memory.
std::vector<std::string> region_objects();

// Closes on scope exit (declare it after the Daemon, so it closes first).
using Fd = msharefs::UniqueFd;

// A mapped window, unmapped on scope exit.
class Window {
public:
	Window() = default;
	Window(void *addr, size_t size) : addr_(addr), size_(size) {}
	// Attaches the whole window of region fd at its start (see attach()).
	explicit Window(int fd, int prot = PROT_READ | PROT_WRITE);
	Window(const Window &) = delete;
	Window &operator=(const Window &) = delete;
	Window &operator=(Window &&other) noexcept
	{
		if (this != &other) {
			reset();
			addr_ = std::exchange(other.addr_, MAP_FAILED);
			size_ = std::exchange(other.size_, 0);
		}
		return *this;
	}
	~Window() { reset(); }
	void reset();
	bool ok() const { return addr_ != MAP_FAILED; }
	explicit operator bool() const { return ok(); }
	void *addr() const { return addr_; }
	char *get() const { return ok() ? static_cast<char *>(addr_) : nullptr; }
	char *at(uint64_t off) const { return static_cast<char *>(addr_) + off; }

private:
	void *addr_ = MAP_FAILED;
	size_t size_ = 0;
};

// /proc/meminfo PageTables in bytes, once it has stopped moving (up to 2 s),
// with the per-CPU counters folded first (vm.stat_refresh): the tables of
// processes that just exited are freed after an RCU grace period, not when
// they are reaped, and unfolded counters drift by tens of KiB. 0 if absent.
uint64_t settled_page_tables();

} // namespace msharefs::test
