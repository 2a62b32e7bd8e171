// Who may change a region (SPEC section 2, "Ownership"): SET_SIZE, ftruncate,
// fallocate, CREATE_MAPPING, UNMAP and PROTECT are the owner's; LOCK and
// UNLOCK are any O_RDWR opener's; MSHAREFS_SET_OWNER hands a region to
// another process, whose exit then tears it down. And CREATE_MAPPING and
// PROTECT never grant more than the mapped file allows.
#include <doctest/doctest.h>

#include "harness.hpp"

#include <msharefs/region_stats.hpp>

#include <linux/falloc.h>
#include <linux/msharefs.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <grp.h>
#include <poll.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <vector>

using namespace msharefs::test;

namespace {

constexpr uint64_t kStart = 2 * kTiB;
constexpr uint64_t kSize = kGiB;
constexpr uint64_t kMapped = 2 * kMiB; // the owner's mapping: [0, 2 MiB)
constexpr uint32_t kAnon = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;
constexpr uint32_t kRW = PROT_READ | PROT_WRITE;
constexpr uid_t kNobody = 65534;
constexpr const char kPayload[] = "the owner's data";

int raw_ioctl(int fd, unsigned long cmd, const void *arg) { return ioctl(fd, cmd, arg) == 0 ? 0 : errno; }

int create_mapping_v3(int fd, uint64_t region_offset, uint64_t size)
{
	mshare_create_v3 c{region_offset, size, 0, kRW, kAnon, static_cast<uint32_t>(-1)};
	return raw_ioctl(fd, MSHAREFS_CREATE_MAPPING_V3, &c);
}

int unmap_v3(int fd, uint64_t region_offset, uint64_t size)
{
	mshare_unmap_v3 u{region_offset, size};
	return raw_ioctl(fd, MSHAREFS_UNMAP_V3, &u);
}

int set_owner(int fd, int pidfd, uint32_t flags = 0)
{
	mshare_owner o{pidfd, flags};
	return raw_ioctl(fd, MSHAREFS_SET_OWNER, &o);
}

int lock_ioctl(int fd, unsigned long cmd) { return ioctl(fd, cmd, 0) == 0 ? 0 : errno; }

int pidfd_open(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// What LOCK answers an O_RDWR opener: served by the runtime, refused
// (not EPERM) where the data path cannot.
int expected_lock() { return exact_semantics() ? 0 : EOPNOTSUPP; }
// PROTECT by the owner where the data path serves it, else EOPNOTSUPP.
int expected_protect() { return exact_semantics() ? 0 : EOPNOTSUPP; }

// The region's figures as the daemon reports them.
msharefs::RegionStats stats_of(const std::string &name)
{
	std::vector<char> buf(1 << 16);
	const ssize_t n = getxattr(path(name).c_str(), msharefs::kStatsAttribute, buf.data(), buf.size());
	REQUIRE_MESSAGE(n > 0, "getxattr " << name << ": " << strerror(errno));
	auto s = msharefs::region_stats_from_json(std::string_view(buf.data(), static_cast<size_t>(n)));
	REQUIRE(s.has_value());
	return *s;
}

// A sized region with one anonymous mapping over [0, kMapped) and kPayload
// written at its start; mode as given (after the umask: set with fchmod).
int owned_region(const std::string &name, mode_t mode = 0600)
{
	int fd = open(path(name).c_str(), O_RDWR | O_CREAT | O_EXCL, mode);
	REQUIRE_MESSAGE(fd >= 0, "create " << name << ": " << strerror(errno));
	REQUIRE(fchmod(fd, mode) == 0);
	REQUIRE(set_size(fd, kStart, kSize) == 0);
	REQUIRE(create_mapping(fd, kStart, kMapped, 0, kRW, kAnon) == 0);
	{
		// Through a window, as programs write regions (every data path).
		Window w(fd);
		REQUIRE(w);
		std::memcpy(w.get(), kPayload, sizeof(kPayload));
	}
	return fd;
}

// Reads the payload back through a read-only window (none: not intact).
bool payload_intact(int fd)
{
	Window w(fd, PROT_READ);
	if (!w)
		return false;
	volatile bool intact = false;
	const Fault f = fault_of([&] { intact = std::memcmp(w.get(), kPayload, sizeof(kPayload)) == 0; });
	return f.sig == 0 && intact;
}

// A child process that runs one step each time it is told to, with a 64-bit
// argument from the test, and reports each step's result (an errno).
class Peer {
public:
	using Step = std::function<int(int64_t)>;
	// uid: the child becomes this uid first (-1: stays root).
	explicit Peer(std::vector<Step> steps, uid_t uid = static_cast<uid_t>(-1))
	{
		int a[2], b[2];
		REQUIRE(pipe2(a, O_CLOEXEC) == 0);
		REQUIRE(pipe2(b, O_CLOEXEC) == 0);
		pid_ = spawn([&] {
			close(a[1]);
			close(b[0]);
			if (uid != static_cast<uid_t>(-1) &&
			    (setgroups(0, nullptr) != 0 || setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0))
				return 100;
			for (const Step &step : steps) {
				int64_t arg = 0;
				if (read(a[0], &arg, sizeof(arg)) != sizeof(arg))
					return 101;
				const int32_t result = step(arg);
				if (write(b[1], &result, sizeof(result)) != sizeof(result))
					return 102;
			}
			int64_t quit = 0; // a message or EOF: the test is done
			return read(a[0], &quit, sizeof(quit)) >= 0 ? 0 : 103;
		});
		close(a[0]);
		close(b[1]);
		go_ = a[1];
		done_ = b[0];
	}
	~Peer() { finish(); }
	Peer(const Peer &) = delete;
	Peer &operator=(const Peer &) = delete;

	pid_t pid() const { return pid_; }
	// Runs the next step; its result, or -1 if the child did not answer.
	int step(int64_t arg = 0)
	{
		if (write(go_, &arg, sizeof(arg)) != sizeof(arg))
			return -1;
		pollfd p{done_, POLLIN, 0};
		int32_t result = -1;
		if (poll(&p, 1, 30000) != 1 || read(done_, &result, sizeof(result)) != sizeof(result))
			return -1;
		return result;
	}
	// Lets the child exit; its result.
	ChildResult finish()
	{
		if (pid_ < 0)
			return result_;
		// Told, not by EOF: peers forked later hold this pipe too.
		const int64_t quit = 0;
		(void)!write(go_, &quit, sizeof(quit));
		close(go_);
		close(done_);
		result_ = wait_for(pid_, 30);
		pid_ = -1;
		return result_;
	}

private:
	pid_t pid_ = -1;
	int go_ = -1;
	int done_ = -1;
	ChildResult result_;
};

// Every changing ioctl, ftruncate and fallocate of a process that opened
// `name` (sized, mapped over [0, kMapped)) and `unsized` O_RDWR but is not
// their owner: EPERM; LOCK and UNLOCK as for anyone.
void non_owner_is_refused(uid_t uid)
{
	int fd = -1, unsized = -1;
	Peer other(
		{
			[&](int64_t) {
				fd = open(path("owned").c_str(), O_RDWR);
				unsized = open(path("unsized").c_str(), O_RDWR);
				return fd < 0 || unsized < 0 ? errno : 0;
			},
			[&](int64_t) { return set_size(unsized, kStart, kSize); },
			[&](int64_t) { return ftruncate(unsized, static_cast<off_t>(kSize)) == 0 ? 0 : errno; },
			[&](int64_t) { return fallocate(unsized, 0, 0, static_cast<off_t>(kSize)) == 0 ? 0 : errno; },
			[&](int64_t) { return create_mapping(fd, kStart + 4 * kMiB, kMiB, 0, kRW, kAnon); },
			[&](int64_t) { return create_mapping_v3(fd, 4 * kMiB, kMiB); },
			[&](int64_t) { return unmap(fd, kStart, kMapped); },
			[&](int64_t) { return unmap_v3(fd, 0, kMapped); },
			[&](int64_t) { return protect(fd, kStart, kMapped, PROT_READ); },
			[&](int64_t) { return lock_ioctl(fd, MSHAREFS_LOCK); },
			[&](int64_t) { return lock_ioctl(fd, MSHAREFS_UNLOCK); },
			[&](int64_t) { return set_owner(fd, pidfd_open(getpid())); },
		},
		uid);
	REQUIRE(other.step() == 0);
	CHECK(other.step() == EPERM);		  // SET_SIZE
	CHECK(other.step() == EPERM);		  // ftruncate
	CHECK(other.step() == EPERM);		  // fallocate
	CHECK(other.step() == EPERM);		  // CREATE_MAPPING
	CHECK(other.step() == EPERM);		  // CREATE_MAPPING v3
	CHECK(other.step() == EPERM);		  // UNMAP
	CHECK(other.step() == EPERM);		  // UNMAP v3
	CHECK(other.step() == EPERM);		  // PROTECT
	CHECK(other.step() == expected_lock()); // LOCK
	CHECK(other.step() == expected_lock()); // UNLOCK
	CHECK(other.step() == EPERM);		  // SET_OWNER to itself
	CHECK(other.finish().exit_code == 0);
}

// The owner's layout after a refused non-owner: exactly as it made it.
void layout_intact(int fd, int unsized)
{
	const msharefs::RegionStats s = stats_of("owned");
	CHECK(s.owner_pid == getpid());
	CHECK(s.size == kSize);
	REQUIRE(s.mappings.size() == 1);
	CHECK(s.mappings[0].offset == 0);
	CHECK(s.mappings[0].size == kMapped);
	CHECK(s.mappings[0].prot == "rw-");
	CHECK(payload_intact(fd));
	mshare_info info{};
	CHECK(get_size(unsized, &info) == EINVAL);
	struct stat st {};
	REQUIRE(fstat(unsized, &st) == 0);
	CHECK(st.st_size == 0);
	// The owner itself still may.
	CHECK(create_mapping(fd, kStart + 4 * kMiB, kMiB, 0, kRW, kAnon) == 0);
	CHECK(protect(fd, kStart, kMapped, PROT_READ) == expected_protect());
	CHECK(ftruncate(unsized, static_cast<off_t>(kSize)) == 0);
}

} // namespace

TEST_CASE("a non-owner of the same uid opened O_RDWR gets EPERM for every change; LOCK/UNLOCK stay open")
{
	Daemon d;
	Fd fd(owned_region("owned"));
	Fd unsized(open(path("unsized").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(unsized.get() >= 0);
	non_owner_is_refused(static_cast<uid_t>(-1));
	layout_intact(fd.get(), unsized.get());
}

TEST_CASE("uid 65534 with an O_RDWR open of root's 0666 region gets EPERM for every change")
{
	Daemon d;
	Fd fd(owned_region("owned", 0666));
	Fd unsized(open(path("unsized").c_str(), O_RDWR | O_CREAT | O_EXCL, 0666));
	REQUIRE(unsized.get() >= 0);
	REQUIRE(fchmod(unsized.get(), 0666) == 0);
	non_owner_is_refused(kNobody);
	layout_intact(fd.get(), unsized.get());
}

TEST_CASE("SET_OWNER hands the region over: the old owner is refused, its exit changes nothing, the new owner's "
	  "exit tears the region down")
{
	Daemon d;
	int fd = -1;
	Peer old_owner({
		[&](int64_t) {
			fd = owned_region("handed");
			return 0;
		},
		[&](int64_t new_owner) {
			const int pidfd = pidfd_open(static_cast<pid_t>(new_owner));
			return pidfd < 0 ? errno : set_owner(fd, pidfd);
		},
		[&](int64_t) { return create_mapping(fd, kStart + 4 * kMiB, kMiB, 0, kRW, kAnon); },
		[&](int64_t) { return unmap(fd, kStart, kMapped); },
		[&](int64_t) { return protect(fd, kStart, kMapped, PROT_READ); },
		[&](int64_t) { return ftruncate(fd, static_cast<off_t>(kSize)) == 0 ? 0 : errno; },
	});
	int mine = -1;
	Peer new_owner({
		[&](int64_t) {
			mine = open(path("handed").c_str(), O_RDWR);
			return mine < 0 ? errno : 0;
		},
		[&](int64_t) { return create_mapping(mine, kStart + 4 * kMiB, kMiB, 0, kRW, kAnon); },
		[&](int64_t) { return create_mapping(mine, kStart + 8 * kMiB, kMiB, 0, kRW, kAnon); },
	});
	REQUIRE(old_owner.step() == 0);
	REQUIRE(new_owner.step() == 0);
	REQUIRE(old_owner.step(new_owner.pid()) == 0);
	CHECK(stats_of("handed").owner_pid == new_owner.pid());
	CHECK(old_owner.step() == EPERM); // CREATE_MAPPING
	CHECK(old_owner.step() == EPERM); // UNMAP
	CHECK(old_owner.step() == EPERM); // PROTECT
	CHECK(old_owner.step() == EPERM); // ftruncate
	CHECK(new_owner.step() == 0);	  // CREATE_MAPPING

	// The old owner exits: nothing happens to the region.
	CHECK(old_owner.finish().exit_code == 0);
	usleep(300 * 1000); // the owner watch reacts within milliseconds
	Fd observer(open(path("handed").c_str(), O_RDWR));
	REQUIRE(observer.get() >= 0);
	CHECK(stats_of("handed").owner_pid == new_owner.pid());
	CHECK(stats_of("handed").mappings.size() == 2);
	CHECK(payload_intact(observer.get()));
	CHECK(new_owner.step() == 0); // still maps: not orphaned

	// The new owner exits: every mapping goes.
	CHECK(new_owner.finish().exit_code == 0);
	CHECK_MESSAGE(eventually([&] { return stats_of("handed").owner_pid == 0; }),
		      "the region still has an owner 5 s after the new owner exited");
	CHECK(stats_of("handed").mappings.empty());
	CHECK_FALSE(payload_intact(observer.get()));
}

TEST_CASE("SET_OWNER: EINVAL for flags, EBADF for a descriptor that is no pidfd, EPERM for a process that "
	  "cannot open the region O_RDWR, ESRCH for an exited one")
{
	Daemon d;
	Fd fd(owned_region("refused"));
	Fd self(pidfd_open(getpid()));
	REQUIRE(self.get() >= 0);
	CHECK(set_owner(fd.get(), self.get(), 1) == EINVAL);
	CHECK(set_owner(fd.get(), fd.get()) == EBADF);
	CHECK(set_owner(fd.get(), 1 << 20) == EBADF);
	CHECK(set_owner(fd.get(), self.get()) == 0); // to itself: nothing changes

	Peer nobody({[](int64_t) { return 0; }}, kNobody);
	REQUIRE(nobody.step() == 0);
	Fd nobody_pidfd(pidfd_open(nobody.pid()));
	REQUIRE(nobody_pidfd.get() >= 0);
	CHECK(set_owner(fd.get(), nobody_pidfd.get()) == EPERM); // 0600, root's
	REQUIRE(fchmod(fd.get(), 0666) == 0);
	CHECK(set_owner(fd.get(), nobody_pidfd.get()) == 0); // now it could open it
	CHECK(stats_of("refused").owner_pid == nobody.pid());

	Fd other(owned_region("exited"));
	Peer gone({});
	Fd gone_pidfd(pidfd_open(gone.pid()));
	REQUIRE(gone_pidfd.get() >= 0);
	CHECK(gone.finish().exit_code == 0);
	CHECK(set_owner(other.get(), gone_pidfd.get()) == ESRCH);
	CHECK(stats_of("exited").owner_pid == getpid());
	CHECK(nobody.finish().exit_code == 0);
}

// ---- CREATE_MAPPING and PROTECT never grant more than the object allows ----

namespace {

// A file of two pages in the private /dev/shm, opened with flags.
int shm_file(const char *name, int flags)
{
	const std::string p = std::string("/dev/shm/msharefs-access-") + name;
	Fd rw(open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644));
	REQUIRE(rw.get() >= 0);
	REQUIRE(ftruncate(rw.get(), 2 * 4096) == 0);
	int fd = open(p.c_str(), flags);
	REQUIRE(fd >= 0);
	unlink(p.c_str());
	return fd;
}

// A memfd of two pages with seals added.
int sealed_memfd(unsigned seals)
{
	int fd = memfd_create("msharefs-sealed", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	REQUIRE(fd >= 0);
	REQUIRE(ftruncate(fd, 2 * 4096) == 0);
	REQUIRE(fcntl(fd, F_ADD_SEALS, seals) == 0);
	return fd;
}

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

constexpr uint32_t kFileMap = MAP_SHARED | MAP_FIXED;

// The object may be mapped PROT_READ but not PROT_WRITE, and a read-only
// mapping of it cannot be made writable with PROTECT.
void read_only_object(int region, int object)
{
	CHECK(create_mapping(region, kStart, 2 * 4096, 0, kRW, kFileMap, object) == EACCES);
	REQUIRE(create_mapping(region, kStart, 2 * 4096, 0, PROT_READ, kFileMap, object) == 0);
	CHECK(protect(region, kStart, 2 * 4096, kRW) == EACCES);
	CHECK(protect(region, kStart, 4096, PROT_READ | PROT_WRITE | PROT_EXEC) == EACCES);
	CHECK(protect(region, kStart, 2 * 4096, PROT_READ) == expected_protect());
	const msharefs::RegionStats s = stats_of("access");
	REQUIRE(s.mappings.size() == 1);
	CHECK(s.mappings[0].prot == "r--");
}

} // namespace

TEST_CASE("CREATE_MAPPING and PROTECT: EACCES for PROT_WRITE of read-only files, sealed memfds and O_APPEND")
{
	Daemon d;
	Fd region(open(path("access").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(region.get() >= 0);
	REQUIRE(set_size(region.get(), kStart, kSize) == 0);
	SUBCASE("a file opened O_RDONLY")
	{
		Fd object(shm_file("ro", O_RDONLY));
		read_only_object(region.get(), object.get());
	}
	SUBCASE("a memfd sealed with F_SEAL_WRITE")
	{
		Fd object(sealed_memfd(F_SEAL_WRITE));
		read_only_object(region.get(), object.get());
	}
	SUBCASE("a memfd sealed with F_SEAL_FUTURE_WRITE")
	{
		Fd object(sealed_memfd(F_SEAL_FUTURE_WRITE));
		read_only_object(region.get(), object.get());
	}
	SUBCASE("a file opened O_RDWR | O_APPEND")
	{
		Fd object(shm_file("append", O_RDWR | O_APPEND));
		read_only_object(region.get(), object.get());
	}
	SUBCASE("a writable file may be made writable again")
	{
		Fd object(shm_file("rw", O_RDWR));
		REQUIRE(create_mapping(region.get(), kStart, 2 * 4096, 0, PROT_READ, kFileMap, object.get()) == 0);
		CHECK(protect(region.get(), kStart, 2 * 4096, kRW) == expected_protect());
	}
}

TEST_CASE("fallocate(PUNCH_HOLE) of a region (mshare_advise MADV_DONTNEED) frees a range for every attacher; any "
	  "O_RDWR opener may")
{
	Daemon d;
	if (on_kmod()) {
		// The module keeps region memory itself: refused, layout intact.
		Fd fd(owned_region("punched"));
		CHECK((fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0 ? 0 : errno) ==
		      EOPNOTSUPP);
		CHECK(payload_intact(fd.get()));
		return;
	}
	Fd fd(open(path("punched").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(fd.get() >= 0);
	REQUIRE(set_size(fd.get(), kStart, kSize) == 0);
	REQUIRE(create_mapping(fd.get(), kStart, 2 * kMapped, 0, kRW, kAnon) == 0);
	Window w(fd.get());
	REQUIRE(w);
	std::memset(w.get(), 'a', 2 * kMapped);
	int mine = -1;
	void *window = MAP_FAILED;
	Peer other({
		[&](int64_t) {
			munmap(reinterpret_cast<void *>(kStart), kSize); // the window fork gave it
			mine = open(path("punched").c_str(), O_RDWR);
			window = mine < 0 ? MAP_FAILED : attach(mine);
			return window == MAP_FAILED ? errno : 0;
		},
		[&](int64_t) {
			const char *p = static_cast<const char *>(window);
			return p[0] == 'a' && p[kMapped] == 'a' ? 0 : 1;
		},
		[&](int64_t) {
			return fallocate(mine, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(kMapped)) == 0
				       ? 0
				       : errno;
		},
		[&](int64_t) {
			const char *p = static_cast<const char *>(window);
			for (uint64_t off = 0; off < kMapped; off += 4096)
				if (p[off] != 0)
					return 1;
			return p[kMapped] == 'a' ? 0 : 2;
		},
	});
	REQUIRE(other.step() == 0);
	CHECK(other.step() == 0);
	CHECK(other.step() == 0); // not the owner, but open O_RDWR
	CHECK(other.step() == 0); // its window reads zeros there now
	bool zeros = true;
	for (uint64_t off = 0; off < kMapped; off += 4096)
		zeros = zeros && w.get()[off] == 0;
	CHECK(zeros); // and so does the owner's
	CHECK(w.get()[kMapped] == 'a');
	CHECK(stats_of("punched").mappings.size() == 1); // the layout stays
	CHECK(other.finish().exit_code == 0);
}

TEST_CASE("a restarted daemon watches the owner a region was handed to, not its creator")
{
	Daemon d;
	int fd = -1;
	Peer old_owner({
		[&](int64_t) {
			fd = owned_region("kept");
			return 0;
		},
		[&](int64_t new_owner) {
			const int pidfd = pidfd_open(static_cast<pid_t>(new_owner));
			return pidfd < 0 ? errno : set_owner(fd, pidfd);
		},
	});
	int mine = -1;
	Peer new_owner({
		[&](int64_t) {
			mine = open(path("kept").c_str(), O_RDWR);
			return mine < 0 ? errno : 0;
		},
		[&](int64_t) { return create_mapping(mine, kStart + 4 * kMiB, kMiB, 0, kRW, kAnon); },
	});
	REQUIRE(old_owner.step() == 0);
	REQUIRE(new_owner.step() == 0);
	REQUIRE(old_owner.step(new_owner.pid()) == 0);
	Fd observer(open(path("kept").c_str(), O_RDWR));
	REQUIRE(observer.get() >= 0);

	d.kill9();
	d.restart();
	CHECK(old_owner.finish().exit_code == 0);
	usleep(300 * 1000);
	CHECK(region_owner("kept") == new_owner.pid());
	CHECK(payload_intact(observer.get()));
	CHECK(new_owner.step() == 0); // the new owner still maps after the restart
	CHECK(new_owner.finish().exit_code == 0);
	CHECK_MESSAGE(eventually([&] { return region_owner("kept") == 0; }),
		      "the region still has an owner 5 s after the new owner exited");
}
