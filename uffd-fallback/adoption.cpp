// Adoption of shared memory into msharefs regions; see adoption.hpp.
#include "adoption.hpp"

#include "runtime.hpp"

#include "msharefs/region_stats.hpp"
#include "msharefs/unique_fd.hpp"

#include <linux/msharefs.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <pthread.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

namespace msharefs::runtime {

namespace {

constexpr uint64_t kPage = 4096;

uint64_t parse_size(const char *s)
{
	if (!s || !*s)
		return 0;
	char *end = nullptr;
	uint64_t v = strtoull(s, &end, 10);
	switch (*end) {
	case 'k': case 'K': return v << 10;
	case 'm': case 'M': return v << 20;
	case 'g': case 'G': return v << 30;
	default: return v;
	}
}

// Whether dir is an msharefs mount: it holds mshare_info.
bool is_msharefs_mount(const std::string &dir)
{
	return access((dir + "/" + MSHAREFS_INFO_NAME).c_str(), R_OK) == 0;
}

// Decodes the octal escapes (\040 and the like) of a /proc/self/mounts field.
std::string unescape_mount_field(const char *s)
{
	std::string out;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' &&
		    s[3] <= '7') {
			out += static_cast<char>(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
			s += 3;
		} else {
			out += *s;
		}
	}
	return out;
}

// The mount of a program that mshare-run did not name one for:
// $MSHAREFS_MOUNT if it is an msharefs mount (so that a program can be
// pointed at one; not for set-user-ID programs), else /sys/fs/mshare if it is
// one, else the first msharefs mount. mshare-run picks its mount in the same
// order.
std::string default_mount()
{
	if (const char *env = secure_getenv("MSHAREFS_MOUNT"); env && *env && is_msharefs_mount(env))
		return env;
	if (is_msharefs_mount(MSHAREFS_MOUNT_POINT))
		return MSHAREFS_MOUNT_POINT;
	FILE *f = fopen("/proc/self/mounts", "re");
	if (!f)
		return {};
	char dev[256], dir[4096], type[64];
	std::string found;
	while (fscanf(f, "%255s %4095s %63s %*[^\n]", dev, dir, type) == 3) {
		if (std::strcmp(type, "fuse.msharefs") == 0 || std::strcmp(type, "msharefs") == 0) {
			found = unescape_mount_field(dir);
			break;
		}
	}
	fclose(f);
	return found;
}

// The pids (as the daemon sees them) with a window of the region open at
// fd; false if unknown.
bool attacher_pids(int fd, std::vector<int32_t> *pids)
{
	char buf[16384];
	const ssize_t n = fgetxattr(fd, kStatsAttribute, buf, sizeof(buf));
	if (n <= 0)
		return false;
	auto stats = region_stats_from_json(std::string_view(buf, static_cast<size_t>(n)));
	if (!stats)
		return false;
	*pids = std::move(stats->attachers);
	return true;
}

// The number of processes with a window of the region open at fd, -1 if
// unknown.
long attachers_of(int fd)
{
	std::vector<int32_t> pids;
	return attacher_pids(fd, &pids) ? static_cast<long>(pids.size()) : -1;
}

// Whether nothing is mapped in [start, start+len): a reservation that must
// not replace anything takes it (and is let go at once).
bool range_free(uint64_t start, uint64_t len)
{
	if (len == 0)
		return true;
	void *p = raw_mmap(reinterpret_cast<void *>(start), len, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED)
		return false;
	raw_munmap(p, len);
	return reinterpret_cast<uint64_t>(p) == start;
}

// Closes the region descriptor an adopted window held, unless the program
// has closed it meanwhile (closefrom) and the number is something else now.
void close_held(int fd, dev_t dev, ino_t ino)
{
	struct stat st {};
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
		close(fd);
}

} // namespace

const AdoptionSettings &AdoptionSettings::get()
{
	static const AdoptionSettings settings = [] {
		AdoptionSettings s;
		// Not for set-user-ID programs: their caller does not choose.
		if (const char *m = secure_getenv("MSHARE_RUN_MOUNT"))
			s.mount = m;
		s.min_size = parse_size(secure_getenv("MSHARE_RUN_MIN_SIZE"));
		if (const char *f = secure_getenv("MSHARE_RUN_FILES"))
			s.adopt_files = std::strcmp(f, "0") != 0;
		if (const char *v = secure_getenv("MSHARE_RUN_VERBOSE"))
			s.verbose = std::strcmp(v, "0") != 0;
		return s;
	}();
	return settings;
}

Adopter &Adopter::get()
{
	// Lives as long as the process. A fork while another thread holds
	// lock_ must not leave the child a lock nobody will release.
	static Adopter *adopter = [] {
		auto *a = new Adopter();
		pthread_atfork([] { Adopter::get().lock_.lock(); }, [] { Adopter::get().lock_.unlock(); },
			       [] { Adopter::get().lock_.unlock(); });
		return a;
	}();
	return *adopter;
}

int Adopter::mount_fd()
{
	std::lock_guard<std::mutex> guard(lock_);
	if (mount_fd_ >= 0)
		return mount_fd_;
	const std::string &configured = AdoptionSettings::get().mount;
	const std::string mount = configured.empty() ? default_mount() : configured;
	if (mount.empty()) {
		errno = ENODEV;
		return -1;
	}
	UniqueFd dir(open(mount.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (!dir)
		return -1;
	UniqueFd info(openat(dir.get(), MSHAREFS_INFO_NAME, O_RDONLY | O_CLOEXEC));
	char text[32] = {};
	if (!info || read(info.get(), text, sizeof(text) - 1) <= 0) {
		errno = ENODEV;
		return -1;
	}
	alignment_ = strtoull(text, nullptr, 10);
	if (!alignment_ || (alignment_ & (alignment_ - 1))) {
		errno = ENODEV;
		return -1;
	}
	mount_fd_ = dir.release();
	return mount_fd_;
}

uint64_t Adopter::alignment()
{
	return mount_fd() < 0 ? 0 : alignment_;
}

int Adopter::create_region(const std::string &name, uint64_t region_size, uint64_t map_size, uint32_t map_flags,
			   int object_fd, uint64_t object_offset, uint32_t prot, bool release)
{
	const int dir = mount_fd();
	if (dir < 0)
		return -1;
	UniqueFd fd(openat(dir, name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
	if (!fd)
		return -1;
	auto fail = [&](int err) {
		unlinkat(dir, name.c_str(), 0);
		errno = err;
		return -1;
	};
	if (ftruncate(fd.get(), static_cast<off_t>(region_size)) < 0)
		return fail(errno);
	mshare_create_v3 c{};
	c.region_offset = 0;
	c.size = map_size;
	c.offset = object_offset;
	c.prot = prot;
	c.flags = MAP_SHARED | MAP_FIXED | map_flags;
	c.fd = static_cast<uint32_t>(object_fd);
	if (ioctl(fd.get(), MSHAREFS_CREATE_MAPPING_V3, &c) < 0)
		return fail(errno);
	if (release) {
		mshare_owner o{-1, MSHAREFS_OWNER_RELEASE};
		if (ioctl(fd.get(), MSHAREFS_SET_OWNER, &o) < 0)
			return fail(errno);
	}
	return fd.release();
}

// Maps the window of region_fd: through the runtime when the mount serves it
// (a window it composes, or on datapath=kmod the kernel's), else (compat) the
// file itself at an aligned address.
void *Adopter::attach(int region_fd, void *addr, uint64_t region_size, size_t program_len, int prot, bool fixed,
		      const std::string &implicit_name)
{
	const uint64_t align = alignment();
	if (addr && reinterpret_cast<uint64_t>(addr) % align) {
		if (fixed) {
			errno = EINVAL;
			return MAP_FAILED;
		}
		addr = nullptr; // a hint the window cannot take
	}
	if (fixed && !range_free(reinterpret_cast<uint64_t>(addr) + round_up(program_len, kPage),
				 region_size - round_up(program_len, kPage))) {
		errno = EINVAL; // the window would replace more than the program asked for
		return MAP_FAILED;
	}
	const int flags = MAP_SHARED | (fixed ? MAP_FIXED : 0);
	bool handled = false;
	void *p = Runtime::get().map_window(addr, region_size, prot, flags, region_fd, 0, &handled);
	if (!handled) {
		// At the hint if it is free, else anywhere aligned.
		void *base = fixed ? addr : Runtime::reserve_aligned(reinterpret_cast<uint64_t>(addr), region_size, align);
		if (base == MAP_FAILED)
			return MAP_FAILED;
		p = raw_mmap(base, region_size, prot, MAP_SHARED | MAP_FIXED, region_fd, 0);
		if (p == MAP_FAILED && !fixed) {
			const int err = errno;
			raw_munmap(base, region_size);
			errno = err;
		}
	}
	if (p == MAP_FAILED)
		return p;
	Adopted a{region_size, program_len, (prot & PROT_WRITE) != 0, implicit_name, -1, 0, 0};
	if (!handled || !Runtime::get().touches_window(p, kPage)) { // the kernel's window
		struct stat st {};
		a.region_fd = fcntl(region_fd, F_DUPFD_CLOEXEC, 0);
		if (a.region_fd >= 0 && fstat(a.region_fd, &st) == 0) {
			a.region_dev = st.st_dev;
			a.region_ino = st.st_ino;
		}
	}
	std::lock_guard<std::mutex> guard(lock_);
	adopted_[reinterpret_cast<uint64_t>(p)] = a;
	return p;
}

void Adopter::note(const char *what, const std::string &name, size_t len)
{
	if (AdoptionSettings::get().verbose)
		fprintf(stderr, "mshare-run: pid %d: %s of %zu bytes in region %s\n", static_cast<int>(getpid()),
			what, len, name.c_str());
}

bool Adopter::adoptable(size_t len, int prot, int flags)
{
	const AdoptionSettings &s = AdoptionSettings::get();
	return !s.mount.empty() && len != 0 && len >= s.min_size && (flags & MAP_TYPE) == MAP_SHARED &&
	       !(flags & MAP_FIXED_NOREPLACE) && !(prot & ~(PROT_READ | PROT_WRITE)) && (prot & PROT_READ);
}

int Adopter::create_anonymous_region(const std::string &name, uint64_t len, bool huge, int huge_size_bits,
				     uint64_t *region_size)
{
	const uint64_t align = alignment();
	if (!align) {
		errno = ENODEV;
		return -1;
	}
	uint64_t unit = kPage;
	uint32_t map_flags = MAP_ANONYMOUS;
	if (huge) {
		const int shift = (huge_size_bits >> MAP_HUGE_SHIFT) & 0x3f;
		unit = shift ? 1ULL << shift : 2ULL << 20;
		map_flags |= MAP_HUGETLB | (huge_size_bits & (0x3f << MAP_HUGE_SHIFT));
	}
	const uint64_t map_size = round_up(len, adoption_unit(len, unit));
	*region_size = round_up(map_size, align);
	return create_region(name, *region_size, map_size, map_flags, -1, 0, PROT_READ | PROT_WRITE, true);
}

void *Adopter::map_anonymous(void *addr, size_t len, int prot, int flags, bool *handled)
{
	*handled = false;
	// MAP_FIXED replaces exactly len bytes: left to the plain call.
	if (!adoptable(len, prot, flags) || (flags & MAP_FIXED))
		return nullptr;
	char name[96];
	{
		std::lock_guard<std::mutex> guard(lock_);
		snprintf(name, sizeof(name), "anon-%d-%" PRIu64, static_cast<int>(getpid()), ++sequence_);
	}
	uint64_t region_size = 0;
	UniqueFd fd(create_anonymous_region(name, len, flags & MAP_HUGETLB, flags, &region_size));
	if (!fd)
		return nullptr; // the plain call decides (a huge page pool too small fails there too)
	void *p = attach(fd.get(), addr, region_size, len, prot, false, "");
	const int err = errno;
	unlinkat(mount_fd(), name, 0); // the windows hold it from now on
	if (p == MAP_FAILED) {
		errno = err;
		return nullptr;
	}
	*handled = true;
	note("shared anonymous memory", name, len);
	return p;
}

void *Adopter::map_shared_pt(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	auto fail = [](int err) {
		errno = err;
		return MAP_FAILED;
	};
	// Where no implicit region can serve: the plain shared mapping.
	auto plain = [&] { return raw_mmap(addr, len, prot, (flags & ~MAP_TYPE) | MAP_SHARED, fd, off); };
	const int type = flags & MAP_TYPE;
	if (type != (MAP_SHARED | MAP_SHARED_PT) && type != (MAP_SHARED_VALIDATE | MAP_SHARED_PT))
		return fail(EINVAL); // MAP_PRIVATE pages are not shared
	if ((flags & MAP_ANONYMOUS) || fd < 0 || len == 0 || off < 0 || off % static_cast<off_t>(kPage) ||
	    (prot & ~(PROT_READ | PROT_WRITE)) || (prot & PROT_READ) == 0)
		return fail(EINVAL);
	struct stat st {};
	struct statfs sfs {};
	if (fstat(fd, &st) < 0 || fstatfs(fd, &sfs) < 0)
		return fail(EBADF);
	if (!S_ISREG(st.st_mode))
		return fail(ENODEV);
	const uint64_t align = alignment();
	if (!align)
		return fail(ENODEV);
	struct stat mount_st {};
	if (fstat(mount_fd(), &mount_st) == 0 && mount_st.st_dev == st.st_dev)
		return fail(EINVAL); // a region file: msharefs objects do not nest
	const int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_PATH))
		return fail(EBADF);
	const int mode = fl & O_ACCMODE;
	if (mode == O_WRONLY || ((prot & PROT_WRITE) && mode != O_RDWR))
		return fail(EACCES);
	// As mmap refuses it: no shared mapping of an append-only file (chattr
	// +a) through a descriptor open for writing. And what the daemon allows
	// a region's creator (object_max_prot), so that a process that finds the
	// region made gets the same answer: no PROT_WRITE of a descriptor open
	// O_APPEND or of an immutable file. File systems without inode flags
	// (ENOTTY, EINVAL) have neither.
	int iflags = 0;
	if (ioctl(fd, FS_IOC_GETFLAGS, &iflags) < 0)
		iflags = 0;
	if ((mode == O_RDWR && (iflags & FS_APPEND_FL)) ||
	    ((prot & PROT_WRITE) && ((fl & O_APPEND) || (iflags & FS_IMMUTABLE_FL))))
		return fail(EACCES);
	const uint64_t unit = static_cast<unsigned long>(sfs.f_type) == HUGETLBFS_MAGIC
				      ? static_cast<uint64_t>(sfs.f_bsize)
				      : kPage;
	if (static_cast<uint64_t>(off) % unit)
		return fail(EINVAL);
	if ((flags & MAP_FIXED) && reinterpret_cast<uint64_t>(addr) % align)
		return fail(EINVAL);
	// A write-sealed memfd maps writable nowhere [EPERM], as mmap says.
	const int seals = fcntl(fd, F_GET_SEALS);
	if ((prot & PROT_WRITE) && seals > 0 && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)))
		return fail(EPERM);
	const uint64_t map_size = round_up(len, unit);
	const uint64_t region_size = round_up(map_size, align);
	// Every process that maps this range of this file with the same access
	// finds the region by this name; it is complete before it gets the name.
	// Readers and writers get regions of their own (the same file pages).
	const bool writer = prot & PROT_WRITE;
	char name[160];
	snprintf(name, sizeof(name), "pt-%" PRIx64 "-%" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%s",
		 static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(off),
		 map_size, writer ? "rw" : "r");
	const int dir = mount_fd();
	const uint32_t region_prot = writer ? PROT_READ | PROT_WRITE : PROT_READ;
	for (int attempt = 0; attempt < 8; attempt++) {
		UniqueFd region(openat(dir, name, (prot & PROT_WRITE ? O_RDWR : O_RDONLY) | O_CLOEXEC));
		if (region) {
			struct stat rst {};
			if (fstat(region.get(), &rst) < 0)
				return MAP_FAILED;
			// Only a region made by this user or by the file's owner
			// is trusted to map this file: anyone else's name is a
			// plain shared mapping for us.
			if (rst.st_uid != geteuid() && rst.st_uid != st.st_uid)
				return plain();
			if (static_cast<uint64_t>(rst.st_size) == region_size) {
				void *p = attach(region.get(), addr, region_size, len, prot, flags & MAP_FIXED, name);
				if (p != MAP_FAILED || errno != EINVAL)
					return p;
			}
			// A region of this name the mapping cannot use (its creator
			// died half-way, or it is orphaned): replace it.
			unlinkat(dir, name, 0);
			continue;
		}
		if (errno == EACCES) // another user's: a plain shared mapping for us
			return plain();
		if (errno != ENOENT)
			return MAP_FAILED;
		char building[200];
		{
			std::lock_guard<std::mutex> guard(lock_);
			snprintf(building, sizeof(building), ".%s.%d.%" PRIu64, name, static_cast<int>(getpid()),
				 ++sequence_);
		}
		UniqueFd made(create_region(building, region_size, map_size, 0, fd, static_cast<uint64_t>(off),
					    region_prot, true));
		if (!made && errno == EOPNOTSUPP) // the data path holds no file mappings
			return plain();
		if (!made)
			return MAP_FAILED;
		if (renameat2(dir, building, dir, name, RENAME_NOREPLACE) < 0) {
			unlinkat(dir, building, 0);
			if (errno == EEXIST)
				continue; // another process was first: use its region
			return MAP_FAILED;
		}
		void *p = attach(made.get(), addr, region_size, len, prot, flags & MAP_FIXED, name);
		if (p != MAP_FAILED) {
			note("file mapping", name, len);
		} else {
			// Not left behind holding the file, unless another
			// process has attached it meanwhile.
			const int err = errno;
			if (attachers_of(made.get()) == 0)
				unlinkat(dir, name, 0);
			errno = err;
		}
		return p;
	}
	return fail(EAGAIN);
}

void *Adopter::map_shared_file(void *addr, size_t len, int prot, int flags, int fd, off_t off, bool *handled)
{
	*handled = false;
	if (!adoptable(len, prot, flags) || !AdoptionSettings::get().adopt_files)
		return nullptr;
	struct statfs sfs {};
	struct stat st {};
	if (fstatfs(fd, &sfs) < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return nullptr;
	// shm_open files live on /dev/shm, memfds on the internal tmpfs (or
	// hugetlbfs for MFD_HUGETLB): shared memory, not data on a disk.
	if (static_cast<unsigned long>(sfs.f_type) != TMPFS_MAGIC &&
	    static_cast<unsigned long>(sfs.f_type) != HUGETLBFS_MAGIC)
		return nullptr;
	const uint64_t align = alignment();
	if (!align || ((flags & MAP_FIXED) && reinterpret_cast<uint64_t>(addr) % align))
		return nullptr;
	if (static_cast<uint64_t>(off) + len > static_cast<uint64_t>(st.st_size))
		return nullptr; // beyond the end: the plain call's SIGBUS rules apply
	void *p = map_shared_pt(addr, len, prot, (flags & ~MAP_TYPE) | MAP_SHARED | MAP_SHARED_PT, fd, off);
	if (p == MAP_FAILED)
		return nullptr;
	*handled = true;
	return p;
}

void *Adopter::map_region(int region_fd, void *addr, uint64_t region_size, size_t program_len, int prot, bool fixed)
{
	return attach(region_fd, addr, region_size, program_len, prot, fixed, "");
}

bool Adopter::within_program_range(const void *addr, size_t len, bool *writable)
{
	const uint64_t a = reinterpret_cast<uint64_t>(addr);
	std::lock_guard<std::mutex> guard(lock_);
	auto it = adopted_.upper_bound(a);
	if (it == adopted_.begin())
		return false;
	--it;
	*writable = it->second.writable;
	return a >= it->first && a + len >= a && a + len <= it->first + round_up(it->second.program_len, kPage);
}

int Adopter::unmap(void *addr, size_t len)
{
	Adopted a;
	{
		std::lock_guard<std::mutex> guard(lock_);
		auto it = adopted_.find(reinterpret_cast<uint64_t>(addr));
		if (it == adopted_.end()) {
			// A munmap over whole windows from below their start: they
			// go with it (the runtime's, or the kernel's mapping).
			const uint64_t a0 = reinterpret_cast<uint64_t>(addr);
			for (auto w = adopted_.lower_bound(a0); w != adopted_.end() && w->first < a0 + len;) {
				if (w->first + w->second.window_size > a0 + len)
					break; // a split: refused by the caller
				close_held(w->second.region_fd, w->second.region_dev, w->second.region_ino);
				w = adopted_.erase(w);
			}
			return 0;
		}
		a = it->second;
		if (len == 0 || round_up(len, kPage) < round_up(a.program_len, kPage))
			return 0; // a part of it: the runtime refuses the split
		adopted_.erase(it);
	}
	UniqueFd implicit;
	bool counted = false; // the daemon lists this process by its pid here
	long before = -1;
	if (!a.implicit_name.empty()) {
		implicit.reset(openat(mount_fd(), a.implicit_name.c_str(), O_RDONLY | O_CLOEXEC));
		std::vector<int32_t> pids;
		if (implicit && attacher_pids(implicit.get(), &pids)) {
			counted = std::find(pids.begin(), pids.end(), static_cast<int32_t>(getpid())) != pids.end();
			before = static_cast<long>(pids.size());
		}
	}
	int r = Runtime::get().unmap(addr, a.window_size);
	if (r == 0)
		r = raw_munmap(addr, a.window_size) == 0 ? 1 : -1;
	close_held(a.region_fd, a.region_dev, a.region_ino);
	if (implicit && !has_window_of(a.implicit_name)) {
		if (counted)
			release_implicit(implicit.get(), a.implicit_name);
		else if (before == 1)
			unlink_named(implicit.get(), a.implicit_name); // a daemon in another pid namespace
	}
	return r < 0 ? -1 : 1;
}

bool Adopter::has_window_of(const std::string &implicit_name)
{
	std::lock_guard<std::mutex> guard(lock_);
	for (const auto &[start, a] : adopted_)
		if (a.implicit_name == implicit_name)
			return true;
	return false;
}

// Unlinks `name` if it still names the region open at region.
void Adopter::unlink_named(int region, const std::string &name)
{
	struct stat held {}, named {};
	if (fstat(region, &held) == 0 && fstatat(mount_fd(), name.c_str(), &named, 0) == 0 &&
	    held.st_ino == named.st_ino && held.st_dev == named.st_dev)
		unlinkat(mount_fd(), name.c_str(), 0);
}

// After this process's last window of an implicit region is gone: if it was
// the last window anywhere, the name goes, so that the region (and its hold on
// the file) is freed. The daemon learns that a window went when its
// connection closes, after the munmap or exit, so the count is read once it
// no longer lists this process nor any process that has exited: of two
// processes that unmap at once, the one whose departure is counted last
// sees none left. Waits 2 s at most.
void Adopter::release_implicit(int region, const std::string &name)
{
	const int32_t self = static_cast<int32_t>(getpid());
	auto settled = [self](const std::vector<int32_t> &pids) {
		for (int32_t pid : pids)
			if (pid == self || (kill(pid, 0) < 0 && errno == ESRCH))
				return false;
		return true;
	};
	for (int waited_ms = 0; waited_ms < 2000; waited_ms += 2) {
		std::vector<int32_t> pids;
		if (!attacher_pids(region, &pids))
			return;
		if (settled(pids)) {
			if (pids.empty())
				unlink_named(region, name);
			return;
		}
		usleep(2000);
	}
}

} // namespace msharefs::runtime
