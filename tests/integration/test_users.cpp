// The kernel's other users of window memory: what an ordinary MAP_SHARED
// shmem mapping does for a program, done with msharefs region windows by
// real processes. Process-shared futexes (mutex and condition variables,
// contended by processes that attach by name), another process reading and
// writing this one's window (/proc/PID/mem, process_vm_readv/writev),
// vmsplice, O_DIRECT, io_uring fixed buffers, madvise, fork and threads, and
// a PROT_READ window that neither the CPU nor the kernel may store into.
// fastpath-kmod/tests/kmod_users.c checks the same on the module's device;
// this suite runs on every data path (compat, under the uffd runtime, and in
// the guest on datapath=kmod). Each check compares against data another
// process wrote (or a pattern computed independently), and every refused
// call is followed by a check that the window's data is unchanged. A child
// reports through its exit code (0 = as expected).
#include <doctest/doctest.h>

#include "harness.hpp"
#include "window_data.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <string>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace msharefs::test;

namespace {

// ---- helpers of this suite (the shared ones are in window_data.hpp) -----------

std::vector<char> pattern(uint64_t len, uint64_t seed)
{
	std::vector<char> v(len);
	fill_buffer(v.data(), len, seed);
	return v;
}

// For buffers outside any window.
bool buffer_matches(const char *p, uint64_t len, uint64_t seed)
{
	const auto *w = reinterpret_cast<const uint64_t *>(p);
	for (uint64_t i = 0; i < len / 8; i++)
		if (w[i] != stamp(seed, i))
			return false;
	return true;
}

// Another process attaches NAME by name (read-only: it stores nothing) and
// checks [addr, addr+len) holds the pattern of seed: its exit code.
ChildResult seen_by_another(const std::string &name, uint64_t addr, uint64_t len, uint64_t seed)
{
	return run_in_child([&] {
		if (!child_attach(name, PROT_READ))
			return int(kAttachFailed);
		return matches(at(addr), len, seed) ? int(kOk) : int(kBadData);
	});
}

// Another process attaches NAME by name and fills [addr, addr+len).
ChildResult written_by_another(const std::string &name, uint64_t addr, uint64_t len, uint64_t seed)
{
	return run_in_child([&] {
		if (!child_attach(name))
			return int(kAttachFailed);
		return fill(at(addr), len, seed) ? int(kOk) : int(kUnexpectedFault);
	});
}

// In a child: as another user (the -user variant), give up the harness's
// saved root uid, so that the process is an ordinary one of that user whose
// memory another of its processes may read (ptrace access needs all of the
// target's uids to be the caller's). False if that failed.
bool become_plain_user()
{
	if (!running_as_user())
		return true;
	const gid_t gid = getgid();
	const uid_t uid = getuid();
	if (setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
		return false;
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	return true;
}

std::string errno_name(int err) { return err ? std::string(strerrorname_np(err) ? strerrorname_np(err) : "?") : "0"; }

bool kernel_at_least(int major, int minor)
{
	utsname u{};
	int ma = 0, mi = 0;
	if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return true;
	return ma > major || (ma == major && mi >= minor);
}

// Whether this process runs under libmshare-preload.so (the -uffd variants,
// and the module's file mapped directly on kernels without passthrough).
bool preloaded()
{
	const char *p = getenv("LD_PRELOAD");
	return p && strstr(p, "libmshare-preload") != nullptr;
}

// Waits up to timeout_ms for a byte on fd; false on EOF, error or timeout.
bool wait_byte(int fd, int timeout_ms = 30000)
{
	pollfd p{fd, POLLIN, 0};
	if (poll(&p, 1, timeout_ms) != 1)
		return false;
	char c;
	return read(fd, &c, 1) == 1;
}

// Reads exactly len bytes (or fewer at EOF); -1 on error.
ssize_t read_full(int fd, char *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = read(fd, buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return done ? static_cast<ssize_t>(done) : -1;
		if (n == 0)
			break;
		done += static_cast<size_t>(n);
	}
	return static_cast<ssize_t>(done);
}

// A file opened with O_DIRECT in the first of /var/tmp, /tmp and / where that
// works; removed when it goes. unsupported: every directory that could hold
// the file refused O_DIRECT with EINVAL (its filesystem does not do it).
struct DirectFile {
	std::string path;
	int fd = -1;
	bool unsupported = false;
	std::string tried;
	explicit DirectFile(const char *name)
	{
		bool einval = false;
		for (const char *dir : {"/var/tmp", "/tmp", ""}) {
			const std::string p = std::string(dir) + "/" + name + "." + std::to_string(getpid());
			int f = open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
			if (f >= 0) {
				path = p;
				fd = f;
				return;
			}
			const int err = errno;
			tried += p + ": " + errno_name(err) + "; ";
			if (err == EINVAL) {
				einval = true;
				unlink(p.c_str()); // O_CREAT may have made it before O_DIRECT was refused
			}
		}
		unsupported = einval;
	}
	~DirectFile()
	{
		if (fd >= 0)
			close(fd);
		if (!path.empty())
			unlink(path.c_str());
	}
	DirectFile(const DirectFile &) = delete;
	DirectFile &operator=(const DirectFile &) = delete;
};

} // namespace

// ---------------------------------------------------------------------------
// 1. Process-shared futexes.

namespace {

struct SharedSync {
	pthread_mutex_t mutex;
	pthread_cond_t attached_cv; // children -> parent: one more has attached
	pthread_cond_t go_cv;	    // parent -> children: start
	int attached;		    // under mutex
	int go;			    // under mutex
	long counter;		    // under mutex, deliberately not atomic
};

timespec deadline_in(int seconds)
{
	timespec t{};
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += seconds;
	return t;
}

} // namespace

TEST_CASE("users: a PTHREAD_PROCESS_SHARED mutex and condition variables, contended by 4 processes that attach by name")
{
	Daemon d;
	Fd region(create_region("futex", kStart, kSize));
	REQUIRE(region.get() >= 0);
	Window w(region.get());
	REQUIRE(w);
	constexpr uint64_t kSync = kStart + 5 * kMiB + 3 * kPage; // never touched before
	constexpr int kProcesses = 4;
	constexpr int kIncrements = 20000;
	auto *s = reinterpret_cast<SharedSync *>(at(kSync));

	pthread_mutexattr_t ma;
	pthread_condattr_t ca;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_condattr_init(&ca);
	pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
	REQUIRE(pthread_mutex_init(&s->mutex, &ma) == 0);
	REQUIRE(pthread_cond_init(&s->attached_cv, &ca) == 0);
	REQUIRE(pthread_cond_init(&s->go_cv, &ca) == 0);
	pthread_mutexattr_destroy(&ma);
	pthread_condattr_destroy(&ca);
	s->attached = 0;
	s->go = 0;
	s->counter = 0;

	// Each child attaches by name (its inherited window goes first), says
	// so under the mutex, waits on go_cv, then increments under the lock,
	// yielding now and then while holding it so that the others block in
	// the kernel (futex waits keyed on the shared page).
	std::vector<pid_t> pids;
	for (int i = 0; i < kProcesses; i++)
		pids.push_back(spawn([&] {
			w.reset();
			if (!child_attach("futex"))
				return int(kAttachFailed);
			auto *cs = reinterpret_cast<SharedSync *>(at(kSync));
			if (pthread_mutex_lock(&cs->mutex) != 0)
				return int(kCallFailed);
			cs->attached++;
			pthread_cond_signal(&cs->attached_cv);
			while (!cs->go)
				if (pthread_cond_wait(&cs->go_cv, &cs->mutex) != 0)
					return int(kCallFailed) + 100;
			pthread_mutex_unlock(&cs->mutex);
			for (int n = 0; n < kIncrements; n++) {
				if (pthread_mutex_lock(&cs->mutex) != 0)
					return int(kCallFailed);
				const long v = cs->counter;
				if ((n & 63) == 0)
					sched_yield();
				cs->counter = v + 1;
				if (pthread_mutex_unlock(&cs->mutex) != 0)
					return int(kCallFailed);
			}
			return int(kOk);
		}));

	// The parent waits for all four on attached_cv (woken by the children's
	// signals from their own windows), then wakes them all on go_cv.
	timespec until = deadline_in(60);
	const int locked = pthread_mutex_timedlock(&s->mutex, &until);
	INFO("pthread_mutex_timedlock in the parent: " << errno_name(locked));
	if (locked != 0) {
		for (pid_t pid : pids)
			kill(pid, SIGKILL);
		for (pid_t pid : pids)
			wait_for(pid, 10);
		FAIL("the parent could not take the mutex within 60 s");
	}
	int waited = 0;
	while (s->attached < kProcesses && waited == 0)
		waited = pthread_cond_timedwait(&s->attached_cv, &s->mutex, &until);
	const int attached = s->attached;
	s->go = 1;
	pthread_cond_broadcast(&s->go_cv);
	pthread_mutex_unlock(&s->mutex);
	INFO("children attached and waiting: " << attached << " (pthread_cond_timedwait: " << errno_name(waited) << ")");
	CHECK(attached == kProcesses);

	for (size_t i = 0; i < pids.size(); i++) {
		ChildResult r = wait_for(pids[i], 240);
		INFO("child " << i << ": " << describe(r) << " (11: attach, 17/117: a mutex or condvar call failed)");
		CHECK(r.exit_code == 0);
	}
	long counted = -1;
	CHECK(without_fault([&] { counted = *reinterpret_cast<volatile long *>(&s->counter); }));
	CHECK(counted == long(kProcesses) * kIncrements);
	// And another process reads the same count from its own window.
	ChildResult r = run_in_child([&] {
		w.reset();
		if (!child_attach("futex", PROT_READ))
			return int(kAttachFailed);
		auto *cs = reinterpret_cast<volatile SharedSync *>(at(kSync));
		return cs->counter == long(kProcesses) * kIncrements ? int(kOk) : int(kBadData);
	});
	INFO("another attacher reading the count: " << describe(r));
	CHECK(r.exit_code == 0);
}

// ---------------------------------------------------------------------------
// 2. Another process reads and writes this process's window (debuggers).

TEST_CASE("users: another process reads and writes this process's window through /proc/PID/mem and process_vm_readv/writev")
{
	Daemon d;
	Fd region(create_region("debugged", kStart, kSize));
	REQUIRE(region.get() >= 0);
	Window w(region.get());
	REQUIRE(w);
	constexpr uint64_t kLen = 200 * kKiB; // over 50 pages, not page aligned
	constexpr uint64_t kOwn = kStart + 1 * kMiB + 104;	   // written by the target
	constexpr uint64_t kOtherMem = kStart + 64 * kMiB + 200;   // written by another attacher only
	constexpr uint64_t kOtherVm = kStart + 96 * kMiB + 312;	   // likewise
	constexpr uint64_t kMemWrite = kStart + 128 * kMiB + 8;	   // never touched before the write
	constexpr uint64_t kVmWrite = kStart + 192 * kMiB + 4088;  // likewise
	ChildResult wr = written_by_another("debugged", kOtherMem, kLen, 22);
	ChildResult wr2 = written_by_another("debugged", kOtherVm, kLen, 23);
	INFO("other attachers writing: " << describe(wr) << ", " << describe(wr2));
	REQUIRE(wr.exit_code == 0);
	REQUIRE(wr2.exit_code == 0);

	// On the uffd path the kernel does not wait for a userfaultfd on a
	// remote access through /proc/PID/mem (nor a ptrace peek): a page the
	// target has not touched yet fails with EIO there (README, "Kernel
	// users of window memory"); process_vm_readv/writev wait and work.
	const int untouched_refused = on_uffd() ? EIO : 0;
	// The target: a process that attaches by name and writes kOwn. Its
	// child, the other process, drops the window it inherited (it reaches
	// the target's memory only through the kernel), tries every step and
	// reports each one's outcome on a pipe. As another user (the -user
	// variant) both give up the harness's saved root uid first: a process
	// may read another's memory only if all of that one's uids are its own.
	Pipe report;
	REQUIRE(report.r >= 0);
	ChildResult r = run_in_child([&] {
		if (!become_plain_user())
			return int(kCallFailed);
		if (!child_attach("debugged"))
			return int(kAttachFailed);
		if (!fill(at(kOwn), kLen, 21))
			return int(kUnexpectedFault);
		const pid_t target = getpid();
		ChildResult other = run_in_child([&] {
			munmap(at(kStart), kSize);
			std::string out;
			int failed = 0;
			std::vector<char> buf(kLen);
			// One step: n bytes transferred (or -1 with errno); for
			// reads, the buffer must then hold the pattern of seed. A
			// step documented to fail must fail with refused.
			auto step = [&](const char *what, ssize_t n, int err, int64_t seed, int refused = 0) {
				std::string line = std::string(what) + ": ";
				if (refused) {
					line += n == -1 && err == refused ? "refused as documented" : "not refused with " + errno_name(refused);
					failed += !(n == -1 && err == refused);
				} else if (n != static_cast<ssize_t>(kLen)) {
					line += n < 0 ? "-1 " + errno_name(err) : std::to_string(n) + " bytes";
					failed++;
				} else if (seed >= 0 && !buffer_matches(buf.data(), kLen, static_cast<uint64_t>(seed))) {
					line += "other bytes";
					failed++;
				} else {
					line += "ok";
				}
				out += line + "; ";
			};
			Fd mem(open(("/proc/" + std::to_string(target) + "/mem").c_str(), O_RDWR));
			if (mem.get() < 0) {
				out = "open /proc/PID/mem: " + errno_name(errno);
				return write(report.w, out.data(), out.size()) > 0 ? int(kOpenFailed) : int(kCallFailed);
			}
			ssize_t n;
			// /proc/PID/mem: pages the target wrote, pages only
			// another attacher wrote, a write into untouched pages.
			std::fill(buf.begin(), buf.end(), 0);
			n = pread(mem.get(), buf.data(), kLen, static_cast<off_t>(kOwn));
			step("/proc/PID/mem read of pages the target wrote", n, errno, 21);
			std::fill(buf.begin(), buf.end(), 0);
			n = pread(mem.get(), buf.data(), kLen, static_cast<off_t>(kOtherMem));
			step("/proc/PID/mem read of pages only another attacher wrote", n, errno, 22, untouched_refused);
			fill_buffer(buf.data(), kLen, 24);
			n = pwrite(mem.get(), buf.data(), kLen, static_cast<off_t>(kMemWrite));
			step("/proc/PID/mem write into untouched pages", n, errno, -1, untouched_refused);
			// process_vm_readv / process_vm_writev, the same way.
			iovec local{buf.data(), kLen};
			iovec remote{at(kOwn), kLen};
			std::fill(buf.begin(), buf.end(), 0);
			n = process_vm_readv(target, &local, 1, &remote, 1, 0);
			step("process_vm_readv of pages the target wrote", n, errno, 21);
			std::fill(buf.begin(), buf.end(), 0);
			remote = {at(kOtherVm), kLen};
			n = process_vm_readv(target, &local, 1, &remote, 1, 0);
			step("process_vm_readv of pages only another attacher wrote", n, errno, 23);
			fill_buffer(buf.data(), kLen, 25);
			remote = {at(kVmWrite), kLen};
			n = process_vm_writev(target, &local, 1, &remote, 1, 0);
			step("process_vm_writev into untouched pages", n, errno, -1);
			if (write(report.w, out.data(), out.size()) != static_cast<ssize_t>(out.size()))
				return int(kCallFailed);
			return failed ? int(kBadData) : int(kOk);
		});
		if (other.exit_code != 0)
			return other.exit_code >= 0 ? 40 + other.exit_code : 39;
		// The target's own window shows what the other process wrote
		// (or, where the write was refused, what was there: nothing).
		if (!(untouched_refused ? all_zero(at(kMemWrite), kLen) : matches(at(kMemWrite), kLen, 24)) ||
		    !matches(at(kVmWrite), kLen, 25))
			return 30;
		return matches(at(kOwn), kLen, 21) ? int(kOk) : 31;
	});
	std::string steps(4096, '\0');
	pollfd ready{report.r, POLLIN, 0};
	const ssize_t got = poll(&ready, 1, 0) == 1 ? read(report.r, steps.data(), steps.size()) : 0;
	steps.resize(got > 0 ? static_cast<size_t>(got) : 0);
	INFO("the target: " << describe(r)
			    << " (40+n: the other process exited with n, 53 = a step failed; 30: the target's "
			       "window misses the writes) ; the other process: "
			    << steps);
	CHECK(r.exit_code == 0);
	// The writes are in the region: this process's window shows them ...
	if (untouched_refused)
		CHECK(all_zero(at(kMemWrite), kLen));
	else
		CHECK(matches(at(kMemWrite), kLen, 24));
	CHECK(matches(at(kVmWrite), kLen, 25));
	// ... and so does another process's.
	ChildResult s1 = untouched_refused ? ChildResult{0, 0, false}
					   : seen_by_another("debugged", kMemWrite, kLen, 24);
	ChildResult s2 = seen_by_another("debugged", kVmWrite, kLen, 25);
	INFO("another attacher: /proc/PID/mem write " << describe(s1) << ", process_vm_writev " << describe(s2));
	CHECK(s1.exit_code == 0);
	CHECK(s2.exit_code == 0);
	// Nothing else moved.
	CHECK(matches(at(kOwn), kLen, 21));
	CHECK(matches(at(kOtherMem), kLen, 22));
	CHECK(matches(at(kOtherVm), kLen, 23));
}

// ---------------------------------------------------------------------------
// 3. vmsplice.

TEST_CASE("users: window pages vmspliced into a pipe read back with the same bytes")
{
	Daemon d;
	Fd region(create_region("spliced", kStart, kSize));
	REQUIRE(region.get() >= 0);
	Window w(region.get());
	REQUIRE(w);
	constexpr uint64_t kLen = 32 * kKiB;
	constexpr uint64_t kOwn = kStart + 6 * kMiB;	// written here
	constexpr uint64_t kOther = kStart + 40 * kMiB; // written by another attacher, never touched here
	REQUIRE(fill(at(kOwn), kLen, 31));
	ChildResult wr = written_by_another("spliced", kOther, kLen, 32);
	INFO("another attacher writing: " << describe(wr));
	REQUIRE(wr.exit_code == 0);
	Pipe p;
	REQUIRE(p.r >= 0);
	std::vector<char> buf(kLen);

	for (auto [addr, seed] : {std::pair{kOwn, uint64_t{31}}, std::pair{kOther, uint64_t{32}}}) {
		INFO("window offset " << (addr - kStart));
		iovec iov{at(addr), kLen};
		const ssize_t n = vmsplice(p.w, &iov, 1, 0);
		const int err = errno;
		INFO("vmsplice: " << n << " (" << errno_name(n < 0 ? err : 0) << ")");
		CHECK(n == static_cast<ssize_t>(kLen));
		std::fill(buf.begin(), buf.end(), 0);
		const ssize_t got = n > 0 ? read_full(p.r, buf.data(), static_cast<size_t>(n)) : -1;
		CHECK(got == n);
		CHECK(buffer_matches(buf.data(), kLen, seed));
		CHECK(matches(at(addr), kLen, seed));
	}

	// The pipe holds the window's pages themselves, not copies (as for any
	// shared memory): a store another process makes after the vmsplice,
	// through its own window, is what the pipe gives.
	iovec iov{at(kOther), kLen};
	const ssize_t n = vmsplice(p.w, &iov, 1, 0);
	CHECK(n == static_cast<ssize_t>(kLen));
	constexpr uint64_t kMarkAt = 5000;
	const uint64_t marker = ~stamp(32, kMarkAt / 8);
	ChildResult mark = run_in_child([&] {
		w.reset();
		if (!child_attach("spliced"))
			return int(kAttachFailed);
		*reinterpret_cast<volatile uint64_t *>(at(kOther + kMarkAt)) = marker;
		return int(kOk);
	});
	INFO("another attacher storing after the vmsplice: " << describe(mark));
	CHECK(mark.exit_code == 0);
	std::fill(buf.begin(), buf.end(), 0);
	const ssize_t got = n > 0 ? read_full(p.r, buf.data(), static_cast<size_t>(n)) : -1;
	CHECK(got == n);
	uint64_t seen = 0;
	std::memcpy(&seen, buf.data() + kMarkAt, 8);
	CHECK(seen == marker);
	const uint64_t original = stamp(32, kMarkAt / 8);
	std::memcpy(buf.data() + kMarkAt, &original, 8);
	CHECK(buffer_matches(buf.data(), kLen, 32)); // the rest is the pattern
}

// ---------------------------------------------------------------------------
// 4. O_DIRECT.

TEST_CASE("users: O_DIRECT writes a file from a window buffer and reads it back into another process's window")
{
	Daemon d;
	Fd region(create_region("direct", kStart, kSize));
	REQUIRE(region.get() >= 0);
	Window w(region.get());
	REQUIRE(w);
	DirectFile file("msharefs-users-odirect");
	if (file.fd < 0 && file.unsupported) {
		MESSAGE("O_DIRECT is refused with EINVAL by every filesystem tried (" << file.tried << "); case skipped");
		return;
	}
	INFO("O_DIRECT file: " << file.tried << file.path);
	REQUIRE(file.fd >= 0);
	constexpr uint64_t kLen = kMiB;
	constexpr uint64_t kSrc = kStart + 8 * kMiB;  // page aligned, written by another attacher
	constexpr uint64_t kDst = kStart + 20 * kMiB; // never touched before the read
	ChildResult wr = written_by_another("direct", kSrc, kLen, 41);
	INFO("another attacher writing: " << describe(wr));
	REQUIRE(wr.exit_code == 0);

	// The write: 1 MiB straight from the window's pages to the file.
	const ssize_t n = pwrite(file.fd, at(kSrc), kLen, 0);
	const int err = errno;
	INFO("O_DIRECT pwrite from the window: " << n << " (" << errno_name(n < 0 ? err : 0) << ")");
	CHECK(n == static_cast<ssize_t>(kLen));
	CHECK(fsync(file.fd) == 0);
	{
		// The file has the bytes (read without O_DIRECT, into a buffer).
		Fd plain(open(file.path.c_str(), O_RDONLY | O_CLOEXEC));
		REQUIRE(plain.get() >= 0);
		std::vector<char> back(kLen);
		CHECK(pread(plain.get(), back.data(), kLen, 0) == static_cast<ssize_t>(kLen));
		CHECK(buffer_matches(back.data(), kLen, 41));
	}
	CHECK(matches(at(kSrc), kLen, 41));

	// The read: another process, attached by name, reads the file with
	// O_DIRECT into a part of its window nobody touched yet.
	const std::string file_path = file.path;
	ChildResult rd = run_in_child([&] {
		w.reset();
		if (!child_attach("direct"))
			return int(kAttachFailed);
		Fd f(open(file_path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
		if (f.get() < 0)
			return int(kOpenFailed);
		if (pread(f.get(), at(kDst), kLen, 0) != static_cast<ssize_t>(kLen))
			return int(kCallFailed);
		return matches(at(kDst), kLen, 41) ? int(kOk) : int(kBadData);
	});
	INFO("the O_DIRECT reader: " << describe(rd) << " (17: the read failed, 13: its window has other bytes)");
	CHECK(rd.exit_code == 0);
	// This process sees what the other process's O_DIRECT read stored.
	CHECK(matches(at(kDst), kLen, 41));
	CHECK(matches(at(kSrc), kLen, 41));
}

// ---------------------------------------------------------------------------
// 5. io_uring fixed buffers.

namespace {

int uring_setup(unsigned entries, io_uring_params *p)
{
	return static_cast<int>(syscall(__NR_io_uring_setup, entries, p));
}

int uring_enter(int fd, unsigned submit, unsigned min_complete, unsigned flags)
{
	return static_cast<int>(syscall(__NR_io_uring_enter, fd, submit, min_complete, flags, nullptr, 0));
}

int uring_register(int fd, unsigned op, void *arg, unsigned nr)
{
	return static_cast<int>(syscall(__NR_io_uring_register, fd, op, arg, nr));
}

// An io_uring and its three mappings, all gone with it.
struct Ring {
	io_uring_params p{};
	int fd = -1;
	int setup_errno = 0;
	void *sq = MAP_FAILED;
	void *cq = MAP_FAILED;
	void *sqes = MAP_FAILED;
	size_t sq_size = 0;
	size_t cq_size = 0;

	explicit Ring(unsigned entries)
	{
		fd = uring_setup(entries, &p);
		if (fd < 0) {
			setup_errno = errno;
			return;
		}
		sq_size = p.sq_off.array + p.sq_entries * sizeof(__u32);
		cq_size = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
		if (p.features & IORING_FEAT_SINGLE_MMAP)
			sq_size = cq_size = std::max(sq_size, cq_size);
		sq = mmap(nullptr, sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
		cq = (p.features & IORING_FEAT_SINGLE_MMAP)
			     ? sq
			     : mmap(nullptr, cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
				    IORING_OFF_CQ_RING);
		sqes = mmap(nullptr, p.sq_entries * sizeof(io_uring_sqe), PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
	}
	bool mapped() const { return fd >= 0 && sq != MAP_FAILED && cq != MAP_FAILED && sqes != MAP_FAILED; }
	~Ring()
	{
		if (sqes != MAP_FAILED)
			munmap(sqes, p.sq_entries * sizeof(io_uring_sqe));
		if (cq != MAP_FAILED && cq != sq)
			munmap(cq, cq_size);
		if (sq != MAP_FAILED)
			munmap(sq, sq_size);
		if (fd >= 0)
			close(fd);
	}
	Ring(const Ring &) = delete;
	Ring &operator=(const Ring &) = delete;

	template <class T> T *in(void *base, __u32 off) { return reinterpret_cast<T *>(static_cast<char *>(base) + off); }

	// Submits one READ_FIXED and waits for it; the completion's res, or
	// -errno of io_uring_enter (enter_err) when nothing completed.
	int read_fixed(int file, void *addr, unsigned len, unsigned buf_index, int *enter_err)
	{
		auto *sq_tail = in<unsigned>(sq, p.sq_off.tail);
		const unsigned sq_mask = *in<unsigned>(sq, p.sq_off.ring_mask);
		auto *sq_array = in<unsigned>(sq, p.sq_off.array);
		auto *cq_head = in<unsigned>(cq, p.cq_off.head);
		auto *cq_tail = in<unsigned>(cq, p.cq_off.tail);
		const unsigned cq_mask = *in<unsigned>(cq, p.cq_off.ring_mask);
		auto *cqes = in<io_uring_cqe>(cq, p.cq_off.cqes);
		auto *entries = static_cast<io_uring_sqe *>(sqes);
		const unsigned tail = __atomic_load_n(sq_tail, __ATOMIC_ACQUIRE);
		const unsigned idx = tail & sq_mask;
		std::memset(&entries[idx], 0, sizeof(entries[idx]));
		entries[idx].opcode = IORING_OP_READ_FIXED;
		entries[idx].fd = file;
		entries[idx].addr = reinterpret_cast<uintptr_t>(addr);
		entries[idx].len = len;
		entries[idx].off = 0;
		entries[idx].buf_index = static_cast<__u16>(buf_index);
		entries[idx].user_data = 0x6d7368617265ULL;
		sq_array[idx] = idx;
		__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
		const int rc = uring_enter(fd, 1, 1, IORING_ENTER_GETEVENTS);
		*enter_err = rc < 0 ? errno : 0;
		const unsigned head = __atomic_load_n(cq_head, __ATOMIC_ACQUIRE);
		if (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE))
			return rc < 0 ? -*enter_err : -EAGAIN;
		const io_uring_cqe cqe = cqes[head & cq_mask];
		__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
		return cqe.user_data == 0x6d7368617265ULL ? cqe.res : -EBADMSG;
	}
};

} // namespace

TEST_CASE("users: io_uring READ_FIXED from a regular file into buffers registered in the window")
{
	Daemon d;
	Fd region(create_region("uring", kStart, kSize));
	REQUIRE(region.get() >= 0);
	Window w(region.get());
	REQUIRE(w);
	constexpr uint64_t kLen = kMiB;
	constexpr uint64_t kBuf = kStart + 16 * kMiB;
	const std::string file_path = "/dev/shm/msharefs-users-uring." + std::to_string(getpid());
	{
		Fd f(open(file_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
		REQUIRE(f.get() >= 0);
		const auto data = pattern(kLen, 51);
		REQUIRE(pwrite(f.get(), data.data(), kLen, 0) == static_cast<ssize_t>(kLen));
	}
	// The buffer holds other bytes first, written by another process.
	ChildResult wr = written_by_another("uring", kBuf, kLen, 50);
	INFO("another attacher writing: " << describe(wr));
	REQUIRE(wr.exit_code == 0);

	Fd file(open(file_path.c_str(), O_RDONLY | O_CLOEXEC));
	REQUIRE(file.get() >= 0);
	{
		Ring ring(4);
		if (ring.fd < 0 && (ring.setup_errno == ENOSYS || ring.setup_errno == EPERM)) {
			MESSAGE("io_uring unavailable here (io_uring_setup: " << errno_name(ring.setup_errno)
									      << "); case skipped");
			unlink(file_path.c_str());
			return;
		}
		INFO("io_uring_setup: " << errno_name(ring.setup_errno));
		REQUIRE(ring.mapped());
		iovec iov{at(kBuf), kLen};
		const int rc = uring_register(ring.fd, IORING_REGISTER_BUFFERS, &iov, 1);
		const int err = rc < 0 ? errno : 0;
		if (rc < 0 && err == EOPNOTSUPP && !kernel_at_least(6, 5)) {
			// Before 6.5 io_uring registers only anonymous, shmem and
			// hugetlbfs memory: any other file mapping (the module's file
			// on 6.1, README "Kernel users of window memory") is refused.
			MESSAGE("IORING_REGISTER_BUFFERS: EOPNOTSUPP, as for any non-shmem file mapping before Linux 6.5; "
				"case skipped");
			CHECK(matches(at(kBuf), kLen, 50));
			unlink(file_path.c_str());
			return;
		}
		INFO("IORING_REGISTER_BUFFERS of 1 MiB of the window: " << rc << " (" << errno_name(err) << ")");
		// A long-term writable pin of a file mapping whose filesystem
		// tracks dirty pages is refused by the kernel with EFAULT: a
		// window mapped through the FUSE mount (the compat path, and the
		// module's windows through FUSE passthrough) is such a mapping
		// (README, "Kernel users of window memory"). The uffd runtime's
		// windows and the module's own file are not.
		const bool through_fuse = !on_uffd() && !preloaded();
		if (through_fuse)
			CHECK((rc == -1 && err == EFAULT));
		else
			CHECK(rc == 0);
		// A refusal leaves the window's data as it was.
		CHECK(matches(at(kBuf), kLen, 50));
		if (rc != 0) {
			unlink(file_path.c_str());
			return;
		}
		int enter_err = 0;
		const int res = ring.read_fixed(file.get(), at(kBuf), kLen, 0, &enter_err);
		INFO("READ_FIXED: res " << res << " (io_uring_enter: " << errno_name(enter_err) << ")");
		CHECK(res == static_cast<int>(kLen));
		CHECK(matches(at(kBuf), kLen, 51));
		CHECK(uring_register(ring.fd, IORING_UNREGISTER_BUFFERS, nullptr, 0) == 0);
	}
	// The file's bytes are in the region: another process reads them.
	ChildResult seen = seen_by_another("uring", kBuf, kLen, 51);
	INFO("another attacher: " << describe(seen));
	CHECK(seen.exit_code == 0);
	CHECK(matches(at(kBuf), kLen, 51));
	unlink(file_path.c_str());
}

// ---------------------------------------------------------------------------
// 6. madvise.

TEST_CASE("users: madvise keeps the data: DONTNEED drops only this process's view, WILLNEED and SEQUENTIAL change nothing")
{
	Daemon d;
	Fd region(create_region("advised", kStart, kSize));
	REQUIRE(region.get() >= 0);
	Window w(region.get());
	REQUIRE(w);
	constexpr uint64_t kRange = kStart + 4 * kMiB; // 2 MiB, aligned as huge pages would need
	constexpr uint64_t kRangeLen = 2 * kMiB;
	constexpr uint64_t kMine = kRange + 64 * kKiB;	     // inside, written here
	constexpr uint64_t kTheirs = kRange + kMiB;	     // inside, written by another attacher
	constexpr uint64_t kOutside = kRange + kRangeLen;    // right after the range
	constexpr uint64_t kCounter = kRange + kRangeLen - 8; // stored into after each DONTNEED
	constexpr uint64_t kLen = 64 * kKiB;
	REQUIRE(fill(at(kMine), kLen, 61));
	REQUIRE(fill(at(kOutside), kLen, 63));
	ChildResult wr = written_by_another("advised", kTheirs, kLen, 62);
	INFO("another attacher writing: " << describe(wr));
	REQUIRE(wr.exit_code == 0);
	CHECK(matches(at(kTheirs), kLen, 62)); // now mapped here too

	// Another attacher keeps its own window through all of it.
	Pipe ready, go;
	pid_t keeper = spawn([&] {
		w.reset();
		if (!child_attach("advised"))
			return int(kAttachFailed);
		if (!matches(at(kMine), kLen, 61) || !matches(at(kTheirs), kLen, 62))
			return int(kBadData);
		if (write(ready.w, "r", 1) != 1 || !wait_byte(go.r))
			return int(kBarrierFailed);
		if (!matches(at(kMine), kLen, 61) || !matches(at(kTheirs), kLen, 62) ||
		    !matches(at(kOutside), kLen, 63))
			return int(kBadData) + 100;
		if (*reinterpret_cast<volatile long *>(at(kCounter)) != 199)
			return 20;
		return int(kOk);
	});
	REQUIRE_MESSAGE(wait_byte(ready.r), "the other attacher did not get ready");

	int zero = 0, einval = 0, other = 0, other_errno = 0;
	bool stored = true;
	for (long i = 0; i < 200; i++) {
		if (madvise(at(kRange), kRangeLen, MADV_DONTNEED) == 0)
			zero++;
		else if (errno == EINVAL)
			einval++;
		else
			other++, other_errno = errno;
		stored = stored && without_fault([&] { *reinterpret_cast<volatile long *>(at(kCounter)) = i; });
	}
	INFO("MADV_DONTNEED of 2 MiB, 200 times: " << zero << " returned 0, " << einval << " EINVAL, " << other
						  << " other (" << errno_name(other_errno) << ")");
	// Shared memory: DONTNEED drops this process's view; or a clean EINVAL.
	CHECK((zero == 200 || einval == 200));
	CHECK(stored);
	long last = -1;
	CHECK(without_fault([&] { last = *reinterpret_cast<volatile long *>(at(kCounter)); }));
	CHECK(last == 199);
	CHECK(matches(at(kMine), kLen, 61));
	CHECK(matches(at(kTheirs), kLen, 62));
	CHECK(matches(at(kOutside), kLen, 63));
	// For another attacher too: the one attached all along, and a new one.
	REQUIRE(write(go.w, "g", 1) == 1);
	ChildResult kr = wait_for(keeper, 30);
	INFO("the attacher that kept its window: " << describe(kr) << " (20: it misses the stores made after DONTNEED)");
	CHECK(kr.exit_code == 0);
	ChildResult s1 = seen_by_another("advised", kMine, kLen, 61);
	ChildResult s2 = seen_by_another("advised", kTheirs, kLen, 62);
	INFO("a new attacher: " << describe(s1) << ", " << describe(s2));
	CHECK(s1.exit_code == 0);
	CHECK(s2.exit_code == 0);

	// WILLNEED over a few MiB (the compat path reads ahead through FUSE: not
	// the whole GiB) and SEQUENTIAL/NORMAL over the whole window (no split):
	// each returns 0 or fails, and the data is as it was.
	struct Advice {
		uint64_t addr;
		uint64_t len;
		int advice;
		const char *name;
	};
	std::string results;
	for (const Advice &a : {Advice{kRange, 2 * kRangeLen, MADV_WILLNEED, "MADV_WILLNEED"},
				Advice{kStart, kSize, MADV_SEQUENTIAL, "MADV_SEQUENTIAL"},
				Advice{kStart, kSize, MADV_NORMAL, "MADV_NORMAL"}}) {
		const int rc = madvise(at(a.addr), a.len, a.advice);
		const int err = rc ? errno : 0;
		results += std::string(results.empty() ? "" : ", ") + a.name + " of " + std::to_string(a.len >> 20) +
			   " MiB: " + errno_name(err);
		INFO(std::string(a.name) << ": " << errno_name(err));
		CHECK(matches(at(kMine), kLen, 61));
		CHECK(matches(at(kTheirs), kLen, 62));
		CHECK(matches(at(kOutside), kLen, 63));
	}
	MESSAGE("madvise of the window: " << results);
	// The window still takes stores that reach another attacher.
	REQUIRE(fill(at(kRange), kLen, 64));
	ChildResult s3 = seen_by_another("advised", kRange, kLen, 64);
	INFO("a new attacher after the advice: " << describe(s3));
	CHECK(s3.exit_code == 0);
}

// ---------------------------------------------------------------------------
// 7. fork and threads.

TEST_CASE("users: a forked child and its parent see each other's stores; 8 threads' slices reach another process")
{
	Daemon d;
	Fd region(create_region("forked", kStart, kSize));
	REQUIRE(region.get() >= 0);
	Window w(region.get());
	REQUIRE(w);
	constexpr uint64_t kLen = 64 * kKiB;
	constexpr uint64_t kA = kStart + 7 * kMiB;   // parent -> child, before the fork
	constexpr uint64_t kB = kStart + 9 * kMiB;   // child -> parent, while both run
	constexpr uint64_t kC = kStart + 11 * kMiB;  // parent -> child, while both run
	constexpr uint64_t kFlag = kStart + 13 * kMiB;
	REQUIRE(fill(at(kA), kLen, 71));
	auto *flag = reinterpret_cast<std::atomic<int> *>(at(kFlag));
	auto wait_flag = [](std::atomic<int> *f, int value) {
		const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
		while (f->load(std::memory_order_acquire) != value)
			if (std::chrono::steady_clock::now() > deadline)
				return false;
			else
				usleep(100);
		return true;
	};

	// The inherited window, both ways, with both processes running: no
	// syscall between a store and the load that must see it.
	pid_t child = spawn([&] {
		if (!matches(at(kA), kLen, 71))
			return int(kBadData);
		if (!fill(at(kB), kLen, 72))
			return int(kUnexpectedFault);
		flag->store(1, std::memory_order_release);
		if (!wait_flag(flag, 2))
			return int(kTimeout);
		return matches(at(kC), kLen, 73) ? int(kOk) : int(kBadData) + 100;
	});
	const bool child_wrote = wait_flag(flag, 1);
	CHECK(child_wrote);
	CHECK(matches(at(kB), kLen, 72));
	REQUIRE(fill(at(kC), kLen, 73));
	flag->store(2, std::memory_order_release);
	ChildResult r = wait_for(child, 30);
	INFO("forked child: " << describe(r) << " (13: it missed the parent's data from before the fork, 113: "
					      "from after it)");
	CHECK(r.exit_code == 0);

	// 8 threads of one process (attached by name) write interleaved pages
	// of 16 MiB nobody touched (thread t: every page i with i % 8 == t), so
	// their first faults race on the same 2 MiB; another process checks
	// every page.
	constexpr int kThreads = 8;
	constexpr uint64_t kThreadArea = kStart + 32 * kMiB;
	constexpr uint64_t kThreadLen = 16 * kMiB;
	ChildResult tr = run_in_child([&] {
		w.reset();
		if (!child_attach("forked"))
			return int(kAttachFailed);
		std::vector<std::thread> threads;
		for (int t = 0; t < kThreads; t++)
			threads.emplace_back([=] {
				for (uint64_t pg = static_cast<uint64_t>(t); pg < kThreadLen / kPage; pg += kThreads) {
					auto *words = reinterpret_cast<volatile uint64_t *>(at(kThreadArea + pg * kPage));
					for (uint64_t i = 0; i < kPage / 8; i++)
						words[i] = stamp(100 + static_cast<uint64_t>(t), pg * (kPage / 8) + i);
				}
			});
		for (auto &t : threads)
			t.join();
		return int(kOk);
	});
	INFO("the process of 8 threads: " << describe(tr));
	CHECK(tr.exit_code == 0);
	auto check_slices = [] {
		for (uint64_t pg = 0; pg < kThreadLen / kPage; pg++) {
			const uint64_t seed = 100 + pg % kThreads;
			const auto *words = reinterpret_cast<const volatile uint64_t *>(at(kThreadArea + pg * kPage));
			for (uint64_t i = 0; i < kPage / 8; i++)
				if (words[i] != stamp(seed, pg * (kPage / 8) + i))
					return static_cast<int>(20 + pg % kThreads); // the thread whose slice is wrong
		}
		return int(kOk);
	};
	ChildResult cr = run_in_child([&] {
		w.reset();
		if (!child_attach("forked", PROT_READ))
			return int(kAttachFailed);
		int result = int(kUnexpectedFault);
		if (!without_fault([&] { result = check_slices(); }))
			return int(kUnexpectedFault);
		return result;
	});
	INFO("another process checking every slice: " << describe(cr) << " (20+t: thread t's slice is wrong)");
	CHECK(cr.exit_code == 0);
	int here = int(kUnexpectedFault);
	CHECK(without_fault([&] { here = check_slices(); }));
	CHECK(here == 0);
}

// ---------------------------------------------------------------------------
// 8. A PROT_READ window.

TEST_CASE("users: a PROT_READ window reads the data; stores fault and the kernel's copies into it fail, data intact")
{
	Daemon d;
	Fd region(create_region("readonly", kStart, kSize));
	REQUIRE(region.get() >= 0);
	constexpr uint64_t kLen = 64 * kKiB;
	constexpr uint64_t kData = kStart + 3 * kMiB;	  // written by another process
	constexpr uint64_t kData2 = kStart + 8 * kMiB;	  // likewise, for O_DIRECT
	constexpr uint64_t kCold = kStart + 300 * kMiB;	  // never touched by anyone
	constexpr uint64_t kCold2 = kStart + 400 * kMiB;  // not even read before a kernel copy into it
	ChildResult wr = run_in_child([&] {
		if (!child_attach("readonly"))
			return int(kAttachFailed);
		return fill(at(kData), kLen, 81) && fill(at(kData2), kLen, 82) ? int(kOk) : int(kUnexpectedFault);
	});
	INFO("the writer: " << describe(wr));
	REQUIRE(wr.exit_code == 0);

	// This process's window: PROT_READ, of the O_RDWR descriptor.
	Window ro(region.get(), PROT_READ);
	REQUIRE(ro);
	const auto intact = [&] {
		return matches(at(kData), kLen, 81) && matches(at(kData2), kLen, 82) && all_zero(at(kCold), kPage);
	};
	CHECK(matches(at(kData), kLen, 81));
	CHECK(matches(at(kData2), kLen, 82));
	CHECK(all_zero(at(kCold), 4 * kPage));

	// The CPU's stores fault: into a page read already and a cold one.
	CHECK(write_faults(at(kData + 5 * kPage)));
	CHECK(write_faults(at(kCold + kPage)));
	Fault f = fault_of([&] { *reinterpret_cast<volatile char *>(at(kData + 7)) = 1; });
	CHECK(f.sig == SIGSEGV);
	CHECK(intact());

	// The kernel's copies into it fail with EFAULT: read() of a file ...
	const std::string file_path = "/dev/shm/msharefs-users-readonly." + std::to_string(getpid());
	{
		Fd fw(open(file_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
		REQUIRE(fw.get() >= 0);
		const auto data = pattern(kLen, 89);
		REQUIRE(pwrite(fw.get(), data.data(), kLen, 0) == static_cast<ssize_t>(kLen));
	}
	Fd file(open(file_path.c_str(), O_RDONLY | O_CLOEXEC));
	REQUIRE(file.get() >= 0);
	for (uint64_t target : {kCold2, kData, kCold}) {
		INFO("read() of a file into the PROT_READ window at offset " << (target - kStart));
		errno = 0;
		const ssize_t n = pread(file.get(), at(target), kLen, 0);
		const int err = errno;
		INFO("pread: " << n << " (" << errno_name(n < 0 ? err : 0) << ")");
		CHECK(n == -1);
		CHECK(err == EFAULT);
		CHECK(intact());
		CHECK(all_zero(at(kCold2), 4 * kPage));
	}
	// ... and of a pipe ...
	{
		Pipe p;
		REQUIRE(p.r >= 0);
		REQUIRE(write(p.w, "0123456789abcdef", 16) == 16);
		errno = 0;
		const ssize_t n = read(p.r, at(kData), 16);
		const int err = errno;
		INFO("read() of a pipe into it: " << n << " (" << errno_name(n < 0 ? err : 0) << ")");
		CHECK(n == -1);
		CHECK(err == EFAULT);
		CHECK(intact());
	}
	// ... and an O_DIRECT read.
	{
		DirectFile direct("msharefs-users-readonly-odirect");
		if (direct.fd < 0 && direct.unsupported) {
			MESSAGE("O_DIRECT is refused with EINVAL by every filesystem tried (" << direct.tried
											   << "); that check skipped");
		} else {
			INFO("O_DIRECT file: " << direct.tried << direct.path);
			REQUIRE(direct.fd >= 0);
			alignas(4096) static char page_buf[64 * 1024];
			fill_buffer(page_buf, sizeof(page_buf), 88);
			REQUIRE(pwrite(direct.fd, page_buf, sizeof(page_buf), 0) == static_cast<ssize_t>(sizeof(page_buf)));
			errno = 0;
			const ssize_t n = pread(direct.fd, at(kData2), kLen, 0);
			const int err = errno;
			INFO("O_DIRECT pread into it: " << n << " (" << errno_name(n < 0 ? err : 0) << ")");
			CHECK(n == -1);
			CHECK(err == EFAULT);
			CHECK(intact());
		}
	}
	// Another process's writes into a PROT_READ window: process_vm_writev
	// is EFAULT, and a write through /proc/PID/mem (FOLL_FORCE breaks COW
	// only in private mappings) fails as well. The target attaches by name
	// (PROT_READ, O_RDONLY); its child, which dropped the window it
	// inherited, is the other process.
	ChildResult vw = run_in_child([&] {
		ro.reset();
		if (!become_plain_user())
			return int(kCallFailed);
		if (!child_attach("readonly", PROT_READ))
			return int(kAttachFailed);
		if (!matches(at(kData), kLen, 81))
			return int(kBadData);
		const pid_t target = getpid();
		ChildResult other = run_in_child([&] {
			munmap(at(kStart), kSize);
			std::vector<char> buf(kLen, 0x77);
			iovec local{buf.data(), kLen};
			iovec remote{at(kData), kLen};
			errno = 0;
			const ssize_t n = process_vm_writev(target, &local, 1, &remote, 1, 0);
			if (n >= 0)
				return 20;
			if (errno != EFAULT)
				return 21;
			Fd mem(open(("/proc/" + std::to_string(target) + "/mem").c_str(), O_RDWR));
			if (mem.get() < 0)
				return int(kOpenFailed);
			if (pwrite(mem.get(), buf.data(), kLen, static_cast<off_t>(kData)) >= 0)
				return 22;
			if (pwrite(mem.get(), buf.data(), kPage, static_cast<off_t>(kCold2 + kPage)) >= 0)
				return 23;
			return int(kOk);
		});
		if (other.exit_code != 0)
			return other.exit_code >= 0 ? 40 + other.exit_code : 39;
		// The target's window is unchanged.
		return matches(at(kData), kLen, 81) && all_zero(at(kCold2), 4 * kPage) ? int(kOk) : int(kBadData) + 100;
	});
	INFO("the target of another process's writes: " << describe(vw)
		<< " (40+n: the other process exited with n: 20 process_vm_writev wrote, 21 it failed with another "
		   "errno than EFAULT, 22/23 a /proc/PID/mem write went through; 113: the target's data changed)");
	CHECK(vw.exit_code == 0);
	CHECK(intact());
	CHECK(all_zero(at(kCold2), 4 * kPage));

	// What a read-write attacher reads afterwards: the data as it was.
	ChildResult rw = run_in_child([&] {
		ro.reset();
		if (!child_attach("readonly"))
			return int(kAttachFailed);
		if (!matches(at(kData), kLen, 81) || !matches(at(kData2), kLen, 82))
			return int(kBadData);
		return all_zero(at(kCold), 4 * kPage) && all_zero(at(kCold2), 4 * kPage) ? int(kOk) : int(kBadData) + 100;
	});
	INFO("a read-write attacher afterwards: " << describe(rw) << " (13: the data changed, 113: a cold page did)");
	CHECK(rw.exit_code == 0);
	// And this window still reads what that process stores now.
	ChildResult wr2 = written_by_another("readonly", kCold, kPage, 83);
	CHECK(wr2.exit_code == 0);
	CHECK(matches(at(kCold), kPage, 83));
	unlink(file_path.c_str());
}
