// Every errno of the API (SPEC section 3) that the compat data path can
// produce, asked through the real mount at /sys/fs/mshare with real
// processes, plus the v3 sizing and mapping calls and a malformed-ioctl run.
#include <doctest/doctest.h>

#include "harness.hpp"

#include <linux/falloc.h>
#include <linux/msharefs.h>

#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <random>
#include <set>
#include <string>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace msharefs::test;

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

namespace {

constexpr uint64_t kStart = 2 * kTiB; // seed regions: 1 GiB at 2 TiB
constexpr uint64_t kSize = kGiB;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kV3Window = 4 * kTiB; // where v3 windows are attached
constexpr uint32_t kAnon = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;
constexpr uint32_t kRW = PROT_READ | PROT_WRITE;



int open_new(const std::string &name, int flags = O_RDWR)
{
	return open(path(name).c_str(), flags | O_CREAT | O_EXCL, 0600);
}

// An unsized region, open O_RDWR.
int new_region(const std::string &name)
{
	int fd = open_new(name);
	REQUIRE_MESSAGE(fd >= 0, "create " << name << ": " << strerror(errno));
	return fd;
}

// A region sized to [kStart, kStart + kSize) with no mappings.
int sized_region(const std::string &name)
{
	int fd = new_region(name);
	REQUIRE(set_size(fd, kStart, kSize) == 0);
	return fd;
}

int raw_ioctl(int fd, unsigned long cmd, const void *arg)
{
	return ioctl(fd, cmd, arg) == 0 ? 0 : errno;
}

int create_mapping_v3(int fd, uint64_t region_offset, uint64_t size, uint64_t offset, uint32_t prot,
		      uint32_t flags, int object_fd = -1)
{
	mshare_create_v3 c{};
	c.region_offset = region_offset;
	c.size = size;
	c.offset = offset;
	c.prot = prot;
	c.flags = flags;
	c.fd = static_cast<uint32_t>(object_fd);
	return raw_ioctl(fd, MSHAREFS_CREATE_MAPPING_V3, &c);
}

int unmap_v3(int fd, uint64_t region_offset, uint64_t size)
{
	mshare_unmap_v3 u{region_offset, size};
	return raw_ioctl(fd, MSHAREFS_UNMAP_V3, &u);
}

int lock_ioctl(int fd, unsigned long cmd) { return ioctl(fd, cmd, 0) == 0 ? 0 : errno; }

// A plain file in /tmp of `size` bytes whose byte i is pattern(i).
std::string make_data_file(const char *tag, size_t size)
{
	std::string name = std::string("/tmp/msharefs-errno-") + tag + "-" + std::to_string(getpid());
	int fd = open(name.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0);
	std::vector<char> data(size);
	for (size_t i = 0; i < size; i++)
		data[i] = static_cast<char>('a' + (i / kPage) % 26);
	REQUIRE(write(fd, data.data(), size) == static_cast<ssize_t>(size));
	close(fd);
	return name;
}

// The block count the daemon reports now (not the kernel's cached one).
long long fresh_blocks(const std::string &p)
{
	struct statx stx {};
	REQUIRE(statx(AT_FDCWD, p.c_str(), AT_STATX_FORCE_SYNC, STATX_BLOCKS, &stx) == 0);
	return static_cast<long long>(stx.stx_blocks);
}

} // namespace

TEST_CASE("ioctls on an unsized region fail with EINVAL")
{
	Daemon d;
	Fd fd(new_region("unsized"));
	mshare_info info{};
	CHECK(get_size(fd.get(), &info) == EINVAL);
	CHECK(create_mapping(fd.get(), kStart, kPage, 0, kRW, kAnon) == EINVAL);
	CHECK(unmap(fd.get(), kStart, kPage) == EINVAL);
	CHECK(create_mapping_v3(fd.get(), 0, kPage, 0, kRW, kAnon) == EINVAL);
	CHECK(protect(fd.get(), kStart, kPage, PROT_READ) == EINVAL);
	CHECK(lock_ioctl(fd.get(), MSHAREFS_LOCK) == EINVAL);
	CHECK(lock_ioctl(fd.get(), MSHAREFS_UNLOCK) == EINVAL);
	// None of that sized it.
	CHECK(get_size(fd.get(), &info) == EINVAL);
	CHECK(set_size(fd.get(), kStart, kSize) == 0);
	CHECK(get_size(fd.get(), &info) == 0);
	CHECK(info.start == kStart);
	CHECK(info.size == kSize);
}

TEST_CASE("unknown ioctl numbers fail with ENOTTY on regions, mshare_info and directories")
{
	Daemon d;
	Fd unsized(new_region("unsized"));
	Fd sized(sized_region("sized"));
	mshare_info info{kStart, kSize};
	char buf[64] = {};
	const unsigned long unknown[] = {
		_IOW('x', 9, mshare_info),
		_IOR('x', 9, mshare_info),
		_IOWR('x', 0x7f, mshare_info),
		_IO('x', 7),
		_IOW('x', 1, uint64_t),		 // SET_SIZE's number with the wrong size
		_IOR('x', 0, uint32_t),		 // GET_SIZE's number with the wrong size
		_IOR('x', 0, mshare_create),	 // GET_SIZE's number and direction, wrong size
		_IOW('y', 1, mshare_info),	 // another magic
		_IOW('m', 2, mshare_create),	 // another magic
		_IOR(0xAB, 0, mshare_info),	 // another magic
	};
	for (unsigned long cmd : unknown) {
		INFO("cmd = 0x" << std::hex << cmd);
		CHECK(raw_ioctl(unsized.get(), cmd, buf) == ENOTTY);
		CHECK(raw_ioctl(sized.get(), cmd, buf) == ENOTTY);
	}
	// The unknown calls changed nothing.
	mshare_info got{};
	CHECK(get_size(unsized.get(), &got) == EINVAL);
	CHECK(get_size(sized.get(), &got) == 0);
	CHECK(got.size == kSize);

	Fd info_fd(open(path(MSHAREFS_INFO_NAME).c_str(), O_RDONLY));
	REQUIRE(info_fd.get() >= 0);
	CHECK(raw_ioctl(info_fd.get(), MSHAREFS_GET_SIZE, &info) == ENOTTY);
	CHECK(raw_ioctl(info_fd.get(), MSHAREFS_SET_SIZE, &info) == ENOTTY);
	Fd dir(open(kMount, O_RDONLY | O_DIRECTORY));
	REQUIRE(dir.get() >= 0);
	CHECK(raw_ioctl(dir.get(), MSHAREFS_GET_SIZE, &info) == ENOTTY);
	CHECK(raw_ioctl(dir.get(), MSHAREFS_SET_SIZE, &info) == ENOTTY);
}

TEST_CASE("bad argument pointers fail with EFAULT")
{
	Daemon d;
	Fd unsized(new_region("unsized"));
	Fd sized(sized_region("sized"));
	void *const bad = reinterpret_cast<void *>(8);
	CHECK(raw_ioctl(sized.get(), MSHAREFS_GET_SIZE, bad) == EFAULT);
	CHECK(raw_ioctl(sized.get(), MSHAREFS_GET_SIZE, nullptr) == EFAULT);
	CHECK(raw_ioctl(unsized.get(), MSHAREFS_SET_SIZE, bad) == EFAULT);
	CHECK(raw_ioctl(unsized.get(), MSHAREFS_SET_SIZE, nullptr) == EFAULT);
	CHECK(raw_ioctl(sized.get(), MSHAREFS_CREATE_MAPPING, bad) == EFAULT);
	CHECK(raw_ioctl(sized.get(), MSHAREFS_CREATE_MAPPING_V3, bad) == EFAULT);
	CHECK(raw_ioctl(sized.get(), MSHAREFS_UNMAP, bad) == EFAULT);
	CHECK(raw_ioctl(sized.get(), MSHAREFS_PROTECT, bad) == EFAULT);
	// A pointer into a page that is not mapped, past a valid one.
	void *page = mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(page != MAP_FAILED);
	munmap(static_cast<char *>(page) + kPage, kPage);
	void *straddling = static_cast<char *>(page) + kPage - 8; // 8 of 16 bytes readable
	CHECK(raw_ioctl(unsized.get(), MSHAREFS_SET_SIZE, straddling) == EFAULT);
	CHECK(raw_ioctl(sized.get(), MSHAREFS_GET_SIZE, straddling) == EFAULT);
	munmap(page, kPage);
	// A bad pointer sized nothing.
	mshare_info info{};
	CHECK(get_size(unsized.get(), &info) == EINVAL);
}

TEST_CASE("SET_SIZE rejects unaligned, empty, overflowing and too high windows with EINVAL")
{
	Daemon d;
	REQUIRE(d.alignment() == kGiB);
	Fd fd(new_region("r"));
	SUBCASE("unaligned start") { CHECK(set_size(fd.get(), kStart + kPage, kSize) == EINVAL); }
	SUBCASE("start aligned to a page only") { CHECK(set_size(fd.get(), kStart + kGiB / 2, kSize) == EINVAL); }
	SUBCASE("unaligned size") { CHECK(set_size(fd.get(), kStart, kSize + kPage) == EINVAL); }
	SUBCASE("size smaller than the alignment") { CHECK(set_size(fd.get(), kStart, kMiB) == EINVAL); }
	SUBCASE("zero size at an aligned start") { CHECK(set_size(fd.get(), kStart, 0) == EINVAL); }
	SUBCASE("zero size at zero") { CHECK(set_size(fd.get(), 0, 0) == EINVAL); }
	SUBCASE("start + size overflows") { CHECK(set_size(fd.get(), ~(kGiB - 1), 2 * kGiB) == EINVAL); }
	SUBCASE("huge size") { CHECK(set_size(fd.get(), 0, ~(kGiB - 1)) == EINVAL); }
	SUBCASE("ends beyond 128 TiB") { CHECK(set_size(fd.get(), 128 * kTiB - kGiB, 2 * kGiB) == EINVAL); }
	SUBCASE("starts at 128 TiB") { CHECK(set_size(fd.get(), 128 * kTiB, kGiB) == EINVAL); }
	// Whatever was refused left the region unsized, and it can still be sized.
	mshare_info info{};
	CHECK(get_size(fd.get(), &info) == EINVAL);
	CHECK(set_size(fd.get(), 128 * kTiB - kGiB, kGiB) == 0); // ends exactly at 128 TiB
	CHECK(get_size(fd.get(), &info) == 0);
	CHECK(info.start == 128 * kTiB - kGiB);
	CHECK(info.size == kGiB);
}

TEST_CASE("the SET_SIZE number after sizing is the v3 UNMAP: it removes a window-relative range")
{
	Daemon d;
	Fd fd(create_region("r", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(attach(fd.get()), kSize);
	REQUIRE(w.ok());
	const uint64_t off = 64 * kPage;
	memset(w.at(0), 'A', 128 * kPage);
	REQUIRE(!read_faults(w.at(off)));

	// Not valid as an unmap range: EINVAL, nothing removed, size unchanged.
	CHECK(set_size(fd.get(), kStart, kSize) == EINVAL); // a second sizing is an out-of-region unmap
	CHECK(set_size(fd.get(), 0, 0) == EINVAL);
	CHECK(set_size(fd.get(), kPage, kSize) == EINVAL);
	CHECK(set_size(fd.get(), 1, kPage) == EINVAL);
	CHECK(set_size(fd.get(), off, 100) == EINVAL);
	CHECK(set_size(fd.get(), kSize, kPage) == EINVAL);
	CHECK(!read_faults(w.at(off)));
	mshare_info info{};
	REQUIRE(get_size(fd.get(), &info) == 0);
	CHECK(info.start == kStart);
	CHECK(info.size == kSize);

	// Valid: [off, off + 4 pages) goes for every attacher.
	CHECK(set_size(fd.get(), off, 4 * kPage) == 0);
	CHECK(read_faults(w.at(off)));
	CHECK(read_faults(w.at(off + 3 * kPage)));
	CHECK(!read_faults(w.at(off - kPage)));
	CHECK(!read_faults(w.at(off + 4 * kPage)));
	CHECK(w.at(off - 1)[0] == 'A');
	CHECK(w.at(off + 4 * kPage)[0] == 'A');
	// The region keeps its size: it was not resized.
	REQUIRE(get_size(fd.get(), &info) == 0);
	CHECK(info.start == kStart);
	CHECK(info.size == kSize);
	// The same through the v3 name.
	CHECK(unmap_v3(fd.get(), 0, kPage) == 0);
	CHECK(read_faults(w.at(0)));
}

TEST_CASE("CREATE_MAPPING rejects bad flags, prot and ranges with EINVAL")
{
	Daemon d;
	Fd fd(sized_region("r"));
	SUBCASE("flags without MAP_FIXED")
	{
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, kRW, MAP_ANONYMOUS | MAP_SHARED) == EINVAL);
	}
	SUBCASE("flags without MAP_SHARED")
	{
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, kRW, MAP_ANONYMOUS | MAP_FIXED) == EINVAL);
	}
	SUBCASE("MAP_PRIVATE")
	{
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, kRW, MAP_ANONYMOUS | MAP_PRIVATE | MAP_FIXED) ==
		      EINVAL);
		const std::string file = make_data_file("private", 4 * kPage);
		Fd ffd(open(file.c_str(), O_RDWR));
		REQUIRE(ffd.get() >= 0);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, kRW, MAP_PRIVATE | MAP_FIXED, ffd.get()) == EINVAL);
		unlink(file.c_str());
		// MAP_SHARED_VALIDATE (MAP_SHARED|MAP_PRIVATE) is a shared type, and valid.
	}
	SUBCASE("unknown prot bits")
	{
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, kRW | 0x80, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, 0x10000000, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, 0xffffffff, kAnon) == EINVAL);
	}
	SUBCASE("address below the region")
	{
		CHECK(create_mapping(fd.get(), kStart - kPage, 2 * kPage, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), 0, kPage, 0, kRW, kAnon) == EINVAL);
	}
	SUBCASE("range outside or past the end of the region")
	{
		CHECK(create_mapping(fd.get(), kStart + kSize, kPage, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart + kSize - kPage, 2 * kPage, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart + 2 * kSize, kPage, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart, kSize + kPage, 0, kRW, kAnon) == EINVAL);
	}
	SUBCASE("addr + size overflows and huge sizes")
	{
		CHECK(create_mapping(fd.get(), kStart, UINT64_MAX, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart, UINT64_MAX - kPage + 1, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart + kPage, UINT64_MAX - kPage + 1, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), UINT64_MAX - kPage + 1, 2 * kPage, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart, kPage, UINT64_MAX - kPage + 1, kRW, kAnon) == EINVAL);
	}
	SUBCASE("zero size")
	{
		CHECK(create_mapping(fd.get(), kStart, 0, 0, kRW, kAnon) == EINVAL);
	}
	SUBCASE("misaligned address or offset")
	{
		CHECK(create_mapping(fd.get(), kStart + 1, kPage, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart + kPage / 2, kPage, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart, kPage, 1, kRW, kAnon) == EINVAL);
		const std::string file = make_data_file("misaligned", 4 * kPage);
		Fd ffd(open(file.c_str(), O_RDWR));
		REQUIRE(ffd.get() >= 0);
		CHECK(create_mapping(fd.get(), kStart, kPage, 100, kRW, MAP_SHARED | MAP_FIXED, ffd.get()) ==
		      EINVAL);
		CHECK(create_mapping(fd.get(), kStart + 100, kPage, 0, kRW, MAP_SHARED | MAP_FIXED, ffd.get()) ==
		      EINVAL);
		unlink(file.c_str());
	}
	SUBCASE("v3 ranges outside the region")
	{
		CHECK(create_mapping_v3(fd.get(), kSize, kPage, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping_v3(fd.get(), kSize - kPage, 2 * kPage, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping_v3(fd.get(), kStart, kPage, 0, kRW, kAnon) == EINVAL); // absolute, not relative
		CHECK(create_mapping_v3(fd.get(), kPage, UINT64_MAX - kPage + 1, 0, kRW, kAnon) == EINVAL);
		CHECK(create_mapping_v3(fd.get(), 1, kPage, 0, kRW, kAnon) == EINVAL);
	}
	// Nothing of that was mapped: the whole region is still free.
	CHECK(create_mapping(fd.get(), kStart, kSize, 0, kRW, kAnon) == 0);
}

TEST_CASE("CREATE_MAPPING rounds an unaligned size up to a page, like mmap")
{
	Daemon d;
	Fd fd(sized_region("r"));
	CHECK(create_mapping(fd.get(), kStart, kPage + 1, 0, kRW, kAnon) == 0);
	// The mapping covers two pages: the second is taken, the third is free.
	CHECK(create_mapping(fd.get(), kStart + kPage, kPage, 0, kRW, kAnon) == EEXIST);
	CHECK(create_mapping(fd.get(), kStart + 2 * kPage, kPage, 0, kRW, kAnon) == 0);
	CHECK(fresh_blocks(path("r")) == static_cast<long long>(3 * kPage / 512));
}

TEST_CASE("CREATE_MAPPING over an existing mapping fails with EEXIST")
{
	Daemon d;
	Fd fd(sized_region("r"));
	REQUIRE(create_mapping(fd.get(), kStart + 16 * kPage, 16 * kPage, 0, kRW, kAnon) == 0);
	CHECK(create_mapping(fd.get(), kStart + 16 * kPage, 16 * kPage, 0, kRW, kAnon) == EEXIST); // same
	CHECK(create_mapping(fd.get(), kStart + 8 * kPage, 9 * kPage, 0, kRW, kAnon) == EEXIST);   // head
	CHECK(create_mapping(fd.get(), kStart + 31 * kPage, 4 * kPage, 0, kRW, kAnon) == EEXIST);  // tail
	CHECK(create_mapping(fd.get(), kStart + 20 * kPage, kPage, 0, kRW, kAnon) == EEXIST);	    // inside
	CHECK(create_mapping(fd.get(), kStart, kSize, 0, kRW, kAnon) == EEXIST);		    // around
	CHECK(create_mapping_v3(fd.get(), 20 * kPage, kPage, 0, kRW, kAnon) == EEXIST);
	// Adjacent on both sides is fine.
	CHECK(create_mapping(fd.get(), kStart + 8 * kPage, 8 * kPage, 0, kRW, kAnon) == 0);
	CHECK(create_mapping(fd.get(), kStart + 32 * kPage, 8 * kPage, 0, kRW, kAnon) == 0);
	CHECK(fresh_blocks(path("r")) == static_cast<long long>(32 * kPage / 512));
}

TEST_CASE("CREATE_MAPPING of a caller's file: EBADF, EINVAL for msharefs files, ENODEV, EACCES")
{
	Daemon d;
	Fd fd(sized_region("r"));
	const uint32_t file_flags = MAP_SHARED | MAP_FIXED;
	const std::string file = make_data_file("objects", 16 * kPage);

	SUBCASE("a descriptor the caller does not have")
	{
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, PROT_READ, file_flags, 9999) == EBADF);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, PROT_READ, file_flags, -1) == EBADF);
		CHECK(create_mapping_v3(fd.get(), 0, kPage, 0, PROT_READ, file_flags, 9999) == EBADF);
		// A descriptor closed just before.
		int closed = open(file.c_str(), O_RDWR);
		REQUIRE(closed >= 0);
		close(closed);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, PROT_READ, file_flags, closed) == EBADF);
	}
	SUBCASE("another msharefs region cannot be nested")
	{
		Fd other(sized_region("other"));
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, PROT_READ, file_flags, other.get()) == EINVAL);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, PROT_READ, file_flags, fd.get()) == EINVAL);
		Fd info(open(path(MSHAREFS_INFO_NAME).c_str(), O_RDONLY));
		REQUIRE(info.get() >= 0);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, PROT_READ, file_flags, info.get()) == EINVAL);
	}
	SUBCASE("a directory is not a mappable object")
	{
		Fd dir(open("/tmp", O_RDONLY | O_DIRECTORY));
		REQUIRE(dir.get() >= 0);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, PROT_READ, file_flags, dir.get()) == ENODEV);
	}
	SUBCASE("the file's own access mode applies")
	{
		Fd ro(open(file.c_str(), O_RDONLY));
		REQUIRE(ro.get() >= 0);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, kRW, file_flags, ro.get()) == EACCES);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, PROT_WRITE, file_flags, ro.get()) == EACCES);
		Fd wo(open(file.c_str(), O_WRONLY));
		REQUIRE(wo.get() >= 0);
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, PROT_READ, file_flags, wo.get()) == EACCES);
		// Read-only is fine for PROT_READ.
		CHECK(create_mapping(fd.get(), kStart, kPage, 0, PROT_READ, file_flags, ro.get()) == 0);
	}
	unlink(file.c_str());
}

TEST_CASE("MAP_HUGETLB anonymous mappings round up to the huge page size and need aligned addresses")
{
	Daemon d;
	Fd fd(sized_region("r"));
	const uint32_t huge = kAnon | MAP_HUGETLB | MAP_HUGE_2MB;
	const uint64_t addr = kStart + 2 * kMiB;
	CHECK(create_mapping(fd.get(), kStart + kPage, kPage, 0, kRW, huge) == EINVAL);
	CHECK(create_mapping(fd.get(), kStart + kMiB, kPage, 0, kRW, huge) == EINVAL);
	REQUIRE(create_mapping(fd.get(), addr, kPage, 0, kRW, huge) == 0);
	// The 4 KiB request took the whole 2 MiB huge page.
	CHECK(create_mapping(fd.get(), addr + kPage, kPage, 0, kRW, kAnon) == EEXIST);
	CHECK(create_mapping(fd.get(), addr + 2 * kMiB - kPage, kPage, 0, kRW, kAnon) == EEXIST);
	CHECK(fresh_blocks(path("r")) == static_cast<long long>(2 * kMiB / 512));
	CHECK(create_mapping(fd.get(), addr + 2 * kMiB, kPage, 0, kRW, kAnon) == 0);
	CHECK(create_mapping(fd.get(), addr - kPage, kPage, 0, kRW, kAnon) == 0);
	Window w(attach(fd.get()), kSize);
	REQUIRE(w.ok());
	strcpy(w.at(addr - kStart + kPage), "in the huge page");
	// The huge mapping cannot be split off its huge page boundary, and the
	// refused UNMAP leaves it whole.
	CHECK(unmap(fd.get(), addr, kPage) == EINVAL);
	CHECK(!read_faults(w.at(addr - kStart)));
	CHECK(strcmp(w.at(addr - kStart + kPage), "in the huge page") == 0);
	CHECK(unmap(fd.get(), addr, 2 * kMiB) == 0);
	CHECK(create_mapping(fd.get(), addr + kPage, kPage, 0, kRW, kAnon) == 0);
}

TEST_CASE("UNMAP outside the region, misaligned or empty fails with EINVAL; a hole unmaps fine")
{
	Daemon d;
	Fd fd(create_region("r", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(attach(fd.get()), kSize);
	REQUIRE(w.ok());
	w.at(8 * kPage)[0] = 'x';
	CHECK(unmap(fd.get(), kStart - kPage, 2 * kPage) == EINVAL);
	CHECK(unmap(fd.get(), 0, kPage) == EINVAL);
	CHECK(unmap(fd.get(), kStart + kSize, kPage) == EINVAL);
	CHECK(unmap(fd.get(), kStart + kSize - kPage, 2 * kPage) == EINVAL);
	CHECK(unmap(fd.get(), kStart, kSize + kPage) == EINVAL);
	CHECK(unmap(fd.get(), kStart + kPage, UINT64_MAX - kPage + 1) == EINVAL);
	CHECK(unmap(fd.get(), kStart + 1, kPage) == EINVAL);
	CHECK(unmap(fd.get(), kStart, 100) == EINVAL);
	CHECK(unmap(fd.get(), kStart, kPage + 1) == EINVAL);
	CHECK(unmap(fd.get(), kStart, 0) == EINVAL);
	CHECK(unmap_v3(fd.get(), kSize, kPage) == EINVAL);
	CHECK(unmap_v3(fd.get(), 0, 0) == EINVAL);
	// Nothing was removed.
	CHECK(!read_faults(w.at(0)));
	CHECK(w.at(8 * kPage)[0] == 'x');

	CHECK(unmap(fd.get(), kStart, 4 * kPage) == 0);
	CHECK(read_faults(w.at(0)));
	CHECK(unmap(fd.get(), kStart, 4 * kPage) == 0); // now a hole
	CHECK(unmap(fd.get(), kStart + kPage, kPage) == 0);
	CHECK(w.at(8 * kPage)[0] == 'x');
	// A sized region without any mapping is all hole.
	Fd empty(sized_region("empty"));
	CHECK(unmap(empty.get(), kStart, kSize) == 0);
}

TEST_CASE("mutating ioctls on a region opened O_RDONLY fail with EBADF")
{
	Daemon d;
	{
		Fd rw(new_region("unsized"));
		Fd ro(open(path("unsized").c_str(), O_RDONLY));
		REQUIRE(ro.get() >= 0);
		CHECK(set_size(ro.get(), kStart, kSize) == EBADF);
		mshare_info info{};
		CHECK(get_size(rw.get(), &info) == EINVAL); // still unsized
	}
	Fd rw(create_region("r", kStart, kSize));
	REQUIRE(rw.get() >= 0);
	REQUIRE(unmap(rw.get(), kStart + kSize - kPage, kPage) == 0);
	Fd ro(open(path("r").c_str(), O_RDONLY));
	REQUIRE(ro.get() >= 0);
	mshare_info info{};
	CHECK(get_size(ro.get(), &info) == 0);
	CHECK(info.start == kStart);
	CHECK(create_mapping(ro.get(), kStart + kSize - kPage, kPage, 0, kRW, kAnon) == EBADF);
	CHECK(create_mapping_v3(ro.get(), kSize - kPage, kPage, 0, kRW, kAnon) == EBADF);
	CHECK(unmap(ro.get(), kStart, kPage) == EBADF);
	CHECK(unmap_v3(ro.get(), 0, kPage) == EBADF);
	CHECK(protect(ro.get(), kStart, kPage, PROT_READ) == EBADF);
	CHECK(lock_ioctl(ro.get(), MSHAREFS_LOCK) == EBADF);
	CHECK(lock_ioctl(ro.get(), MSHAREFS_UNLOCK) == EBADF);
	// Nothing changed: the last page is still free and the first mapped.
	CHECK(create_mapping(rw.get(), kStart + kSize - kPage, kPage, 0, kRW, kAnon) == 0);
	CHECK(create_mapping(rw.get(), kStart, kPage, 0, kRW, kAnon) == EEXIST);
}

TEST_CASE("PROTECT, LOCK and UNLOCK: EINVAL when invalid, EOPNOTSUPP where not served")
{
	Daemon d;
	Fd unsized(new_region("unsized"));
	CHECK(protect(unsized.get(), kStart, kPage, PROT_READ) == EINVAL);
	CHECK(lock_ioctl(unsized.get(), MSHAREFS_LOCK) == EINVAL);
	CHECK(lock_ioctl(unsized.get(), MSHAREFS_UNLOCK) == EINVAL);

	Fd fd(create_region("r", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	// The module and the uffd runtime change protections for every attacher.
	const int protect_answer = exact_semantics() ? 0 : EOPNOTSUPP;
	const int lock_answer = exact_semantics() ? 0 : EOPNOTSUPP;
	CHECK(protect(fd.get(), kStart, kPage, PROT_READ) == protect_answer);
	CHECK(protect(fd.get(), kStart, kSize, PROT_NONE) == protect_answer);
	CHECK(lock_ioctl(fd.get(), MSHAREFS_LOCK) == lock_answer);
	CHECK(lock_ioctl(fd.get(), MSHAREFS_UNLOCK) == lock_answer);
	// Bad ranges and prot bits are refused before that.
	CHECK(protect(fd.get(), kStart - kPage, kPage, PROT_READ) == EINVAL);
	CHECK(protect(fd.get(), kStart + kSize, kPage, PROT_READ) == EINVAL);
	CHECK(protect(fd.get(), kStart, kSize + kPage, PROT_READ) == EINVAL);
	CHECK(protect(fd.get(), kStart, 0, PROT_READ) == EINVAL);
	CHECK(protect(fd.get(), kStart + 1, kPage, PROT_READ) == EINVAL);
	CHECK(protect(fd.get(), kStart, 100, PROT_READ) == EINVAL);
	CHECK(protect(fd.get(), kStart, kPage, 0x80) == EINVAL);
	CHECK(protect(fd.get(), kStart, kPage, PROT_READ | 0x1000) == EINVAL);
	if (exact_semantics()) {
		// Every attacher sees the change when PROTECT returns.
		CHECK(protect(fd.get(), kStart, kSize, PROT_READ | PROT_WRITE) == 0);
		Window w(attach(fd.get()), kSize);
		REQUIRE(w.ok());
		strcpy(w.at(kPage), "before");
		CHECK(protect(fd.get(), kStart, 2 * kPage, PROT_READ) == 0);
		CHECK(write_faults(w.at(kPage)));
		CHECK(!read_faults(w.at(kPage)));
		CHECK(!write_faults(w.at(2 * kPage)));
		CHECK(protect(fd.get(), kStart, kPage, PROT_NONE) == 0);
		CHECK(read_faults(w.at(0)));
		CHECK(protect(fd.get(), kStart, 2 * kPage, PROT_READ | PROT_WRITE) == 0);
		CHECK(strcmp(w.at(kPage), "before") == 0);
		CHECK(!write_faults(w.at(kPage)));
	}
}

TEST_CASE("v3 sizing with ftruncate: aligned and once only, read back with stat and GET_SIZE")
{
	Daemon d;
	Fd fd(new_region("r"));
	CHECK((ftruncate(fd.get(), static_cast<off_t>(kGiB + kPage)) == 0 ? 0 : errno) == EINVAL);
	CHECK((ftruncate(fd.get(), static_cast<off_t>(kGiB / 2)) == 0 ? 0 : errno) == EINVAL);
	CHECK((ftruncate(fd.get(), static_cast<off_t>(128 * kTiB + kGiB)) == 0 ? 0 : errno) == EINVAL);
	mshare_info info{};
	CHECK(get_size(fd.get(), &info) == EINVAL);

	REQUIRE(ftruncate(fd.get(), static_cast<off_t>(2 * kGiB)) == 0);
	struct stat st {};
	REQUIRE(fstat(fd.get(), &st) == 0);
	CHECK(static_cast<uint64_t>(st.st_size) == 2 * kGiB);
	REQUIRE(stat(path("r").c_str(), &st) == 0);
	CHECK(static_cast<uint64_t>(st.st_size) == 2 * kGiB);
	REQUIRE(get_size(fd.get(), &info) == 0);
	CHECK(info.start == 0);
	CHECK(info.size == 2 * kGiB);

	// Once only, whatever the new size.
	CHECK((ftruncate(fd.get(), static_cast<off_t>(4 * kGiB)) == 0 ? 0 : errno) == EINVAL);
	CHECK((ftruncate(fd.get(), static_cast<off_t>(kGiB)) == 0 ? 0 : errno) == EINVAL);
	CHECK((ftruncate(fd.get(), static_cast<off_t>(2 * kGiB)) == 0 ? 0 : errno) == EINVAL);
	CHECK((ftruncate(fd.get(), 0) == 0 ? 0 : errno) == EINVAL);
	CHECK((fallocate(fd.get(), 0, 0, static_cast<off_t>(kGiB)) == 0 ? 0 : errno) == EINVAL);
	REQUIRE(fstat(fd.get(), &st) == 0);
	CHECK(static_cast<uint64_t>(st.st_size) == 2 * kGiB);
	REQUIRE(get_size(fd.get(), &info) == 0);
	CHECK(info.size == 2 * kGiB);
}

TEST_CASE("v3 sizing with fallocate: mode 0 at offset 0 only; PUNCH_HOLE frees a sized range")
{
	Daemon d;
	Fd fd(new_region("r"));
	auto falloc = [&](int mode, uint64_t off, uint64_t len) {
		return fallocate(fd.get(), mode, static_cast<off_t>(off), static_cast<off_t>(len)) == 0 ? 0 : errno;
	};
	CHECK(falloc(FALLOC_FL_KEEP_SIZE, 0, kGiB) == EOPNOTSUPP);
	// The module keeps region memory itself: no hole punching there.
	const int punch_refused = on_kmod() ? EOPNOTSUPP : EINVAL;
	CHECK(falloc(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, kGiB) == punch_refused); // not sized

	CHECK(falloc(FALLOC_FL_ZERO_RANGE, 0, kGiB) == EOPNOTSUPP);
	CHECK(falloc(0, kGiB, kGiB) == EINVAL);
	CHECK(falloc(0, kPage, kGiB) == EINVAL);
	CHECK(falloc(0, 0, kGiB + kPage) == EINVAL);
	mshare_info info{};
	CHECK(get_size(fd.get(), &info) == EINVAL);

	REQUIRE(falloc(0, 0, kGiB) == 0);
	struct stat st {};
	REQUIRE(fstat(fd.get(), &st) == 0);
	CHECK(static_cast<uint64_t>(st.st_size) == kGiB);
	REQUIRE(get_size(fd.get(), &info) == 0);
	CHECK(info.start == 0);
	CHECK(info.size == kGiB);
	CHECK(falloc(0, 0, 2 * kGiB) == EINVAL);
	CHECK(falloc(0, 0, kGiB) == EINVAL);
	// Frees memory (mshare_advise MADV_DONTNEED); a hole frees nothing.
	CHECK(falloc(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, kPage) == (on_kmod() ? EOPNOTSUPP : 0));
	CHECK(falloc(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 * kGiB) == punch_refused);
	CHECK(falloc(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8, kPage) == punch_refused);
	CHECK((ftruncate(fd.get(), static_cast<off_t>(2 * kGiB)) == 0 ? 0 : errno) == EINVAL);
	REQUIRE(fstat(fd.get(), &st) == 0);
	CHECK(static_cast<uint64_t>(st.st_size) == kGiB);
}

TEST_CASE("v3 CREATE_MAPPING and UNMAP with window-relative offsets, shared with a forked child")
{
	Daemon d;
	Fd fd(new_region("v3"));
	REQUIRE(ftruncate(fd.get(), static_cast<off_t>(kGiB)) == 0);
	const uint64_t anon_off = 2 * kMiB;
	const uint64_t file_off = 64 * kMiB;
	REQUIRE(create_mapping_v3(fd.get(), anon_off, 4 * kMiB, 0, kRW, kAnon) == 0);
	const std::string file = make_data_file("v3", 16 * kPage);
	{
		Fd ffd(open(file.c_str(), O_RDWR));
		REQUIRE(ffd.get() >= 0);
		// File pages 4..11 at file_off; the caller's fd may be closed afterwards.
		REQUIRE(create_mapping_v3(fd.get(), file_off, 8 * kPage, 4 * kPage, kRW, MAP_SHARED | MAP_FIXED,
					  ffd.get()) == 0);
	}
	Window w(mmap(reinterpret_cast<void *>(kV3Window), kGiB, kRW, MAP_SHARED | MAP_FIXED_NOREPLACE, fd.get(), 0),
		 kGiB);
	REQUIRE(w.ok());
	REQUIRE(w.addr() == reinterpret_cast<void *>(kV3Window));

	// The file mapping shows the file from its offset.
	CHECK(w.at(file_off)[0] == 'e');
	CHECK(w.at(file_off + 7 * kPage)[0] == 'l');
	// Data written by the parent is seen by a child, and the child's by the parent.
	strcpy(w.at(anon_off + 12345), "written by the parent");
	ChildResult r = run_in_child([&] {
		if (strcmp(w.at(anon_off + 12345), "written by the parent") != 0)
			return 1;
		if (w.at(file_off + kPage)[0] != 'f')
			return 2;
		strcpy(w.at(anon_off + 3 * kMiB), "written by the child");
		return 0;
	});
	CHECK(r.exit_code == 0);
	CHECK(strcmp(w.at(anon_off + 3 * kMiB), "written by the child") == 0);
	// The offsets are window-relative: below anon_off is a hole.
	CHECK(read_faults(w.at(0)));
	CHECK(read_faults(w.at(anon_off - kPage)));
	CHECK(read_faults(w.at(anon_off + 4 * kMiB)));

	// UNMAP_V3 of the second half of the anonymous mapping.
	CHECK(unmap_v3(fd.get(), anon_off + 2 * kMiB, 2 * kMiB) == 0);
	CHECK(read_faults(w.at(anon_off + 3 * kMiB)));
	CHECK(!read_faults(w.at(anon_off + 12345)));
	CHECK(strcmp(w.at(anon_off + 12345), "written by the parent") == 0);
	// And of the file mapping.
	CHECK(unmap_v3(fd.get(), file_off, 8 * kPage) == 0);
	CHECK(read_faults(w.at(file_off)));
	// A new mapping in the freed range starts empty.
	CHECK(create_mapping_v3(fd.get(), anon_off + 2 * kMiB, 2 * kMiB, 0, kRW, kAnon) == 0);
	CHECK(!read_faults(w.at(anon_off + 3 * kMiB)));
	CHECK(w.at(anon_off + 3 * kMiB)[0] == 0);
	unlink(file.c_str());
}

TEST_CASE("mmap of a region opened O_RDONLY with PROT_WRITE and MAP_SHARED fails with EACCES")
{
	Daemon d;
	Fd rw(create_region("r", kStart, kSize));
	REQUIRE(rw.get() >= 0);
	Fd ro(open(path("r").c_str(), O_RDONLY));
	REQUIRE(ro.get() >= 0);
	void *p = mmap(reinterpret_cast<void *>(kStart), kSize, kRW, MAP_SHARED | MAP_FIXED_NOREPLACE, ro.get(), 0);
	CHECK(p == MAP_FAILED);
	CHECK(errno == EACCES);
	if (p != MAP_FAILED)
		munmap(p, kSize);
	// Read-only is fine.
	Window w(attach(ro.get(), PROT_READ), kSize);
	CHECK(w.ok());
}

TEST_CASE("malformed ioctls with random numbers and arguments leave the daemon serving")
{
	Daemon d;
	const pid_t daemon_pid = d.pid();
	const char *seed_env = getenv("MSHAREFS_FUZZ_SEED");
	const uint64_t seed = seed_env ? std::strtoull(seed_env, nullptr, 0) : 0x6d73686172656673ULL;
	INFO("seed = " << seed << " (set MSHAREFS_FUZZ_SEED to repeat another)");
	std::mt19937_64 rng(seed);
	auto pick = [&](uint64_t n) { return n ? rng() % n : 0; };

	const std::string file = make_data_file("fuzz", 16 * kPage);
	Fd data_rw(open(file.c_str(), O_RDWR));
	Fd data_ro(open(file.c_str(), O_RDONLY));
	Fd info_fd(open(path(MSHAREFS_INFO_NAME).c_str(), O_RDONLY));
	Fd dir_fd(open(kMount, O_RDONLY | O_DIRECTORY));
	Fd tmp_dir(open("/tmp", O_RDONLY | O_DIRECTORY));
	REQUIRE(data_rw.get() >= 0);
	REQUIRE(data_ro.get() >= 0);
	REQUIRE(info_fd.get() >= 0);
	REQUIRE(dir_fd.get() >= 0);

	// Magics the VFS answers itself ('T', 'X', 'f', 0x94, 0x15, 0) are left
	// out: those are not the daemon's to answer.
	const unsigned magics[] = {'x', 'x', 'x', 'x', 'x', 'y', 'm', 'q', 'Z', 0xAB, 0xC3, 0x7e};
	const unsigned long known[] = {MSHAREFS_GET_SIZE, MSHAREFS_SET_SIZE, MSHAREFS_CREATE_MAPPING,
				       MSHAREFS_UNMAP, MSHAREFS_CREATE_MAPPING_V3, MSHAREFS_PROTECT,
				       MSHAREFS_LOCK, MSHAREFS_UNLOCK};
	const std::set<int> sensible = {0,     EINVAL, ENOTTY, EFAULT,	   EBADF,  EEXIST,
					EACCES, ENODEV, ENOENT, EOPNOTSUPP, ENOMEM, EPERM};

	std::vector<char> buf(1 << 15);
	std::map<int, int> errors;
	std::vector<std::string> odd;
	const auto t0 = std::chrono::steady_clock::now();
	constexpr int kRounds = 8;
	constexpr int kPerRound = 750;
	for (int round = 0; round < kRounds; round++) {
		// Fresh targets each round: unsized, seed-sized (mapped), v3-sized,
		// a read-only open of a sized one.
		const std::string base = "fuzz" + std::to_string(round);
		Fd unsized(new_region(base + "-unsized"));
		Fd seed_sized(create_region(base + "-seed", kStart, kSize));
		REQUIRE(seed_sized.get() >= 0);
		Fd v3(new_region(base + "-v3"));
		REQUIRE(ftruncate(v3.get(), static_cast<off_t>(kGiB)) == 0);
		Fd ro(open(path(base + "-seed").c_str(), O_RDONLY));
		REQUIRE(ro.get() >= 0);
		const int targets[] = {unsized.get(), seed_sized.get(), v3.get(), ro.get(), seed_sized.get(),
				       v3.get(),      info_fd.get(),	dir_fd.get()};
		const int object_fds[] = {-1,		9999,	       data_rw.get(), data_ro.get(),
					  tmp_dir.get(), seed_sized.get(), info_fd.get(), 0,
					  1,		2,	       static_cast<int>(rng() % 64)};
		auto u64 = [&]() -> uint64_t {
			switch (pick(9)) {
			case 0: return rng();
			case 1: return 0;
			case 2: return UINT64_MAX - pick(2) * (kPage - 1);
			case 3: return kStart + pick(64) * kPage;
			case 4: return pick(512) * kPage;
			case 5: return pick(2) ? kSize : kStart;
			case 6: return pick(4) * 2 * kMiB;
			case 7: return kStart + kSize - pick(4) * kPage;
			default: return pick(1ULL << 20);
			}
		};
		auto u32 = [&]() -> uint32_t {
			switch (pick(5)) {
			case 0: return static_cast<uint32_t>(rng());
			case 1: return static_cast<uint32_t>(pick(8));
			case 2: return static_cast<uint32_t>(MAP_SHARED | MAP_FIXED | (pick(2) ? MAP_ANONYMOUS : 0) |
							     (pick(4) == 0 ? MAP_HUGETLB : 0));
			case 3: return static_cast<uint32_t>(object_fds[pick(std::size(object_fds))]);
			default: return 0;
			}
		};
		for (int i = 0; i < kPerRound; i++) {
			unsigned long cmd;
			if (pick(3) == 0) {
				cmd = known[pick(std::size(known))];
			} else {
				const unsigned magic = magics[pick(std::size(magics))];
				const unsigned nr = magic == 'x' ? static_cast<unsigned>(pick(12))
								 : static_cast<unsigned>(pick(256));
				const unsigned sizes[] = {0, 4, 8, 16, 24, 32, 40, 48, 64,
							  static_cast<unsigned>(pick(1u << 14))};
				const unsigned size = sizes[pick(std::size(sizes))];
				cmd = _IOC(static_cast<unsigned>(pick(4)), magic, nr, size);
			}
			// Argument bytes: random, or fields drawn from interesting values.
			if (pick(3) == 0) {
				for (size_t k = 0; k < 256; k += 8) {
					uint64_t v = rng();
					memcpy(buf.data() + k, &v, 8);
				}
			} else {
				uint64_t a = u64(), b = u64(), c = u64();
				uint32_t p = u32(), f = u32(), o = u32();
				memcpy(buf.data(), &a, 8);
				memcpy(buf.data() + 8, &b, 8);
				memcpy(buf.data() + 16, &c, 8);
				memcpy(buf.data() + 24, &p, 4);
				memcpy(buf.data() + 28, &f, 4);
				memcpy(buf.data() + 32, &o, 4);
			}
			void *arg = buf.data();
			switch (pick(12)) {
			case 0: arg = nullptr; break;
			case 1: arg = reinterpret_cast<void *>(8); break;
			case 2: arg = reinterpret_cast<void *>(0xffffffffffff0000ULL); break; // kernel space
			default: break;
			}
			const int target = targets[pick(std::size(targets))];
			const int err = ioctl(target, cmd, arg) == 0 ? 0 : errno;
			errors[err]++;
			if (!sensible.count(err) && odd.size() < 20) {
				char line[128];
				snprintf(line, sizeof(line), "fd %d cmd 0x%lx -> %s", target, cmd, strerror(err));
				odd.emplace_back(line);
			}
		}
		// Every target is still a working file of this mount.
		mshare_info info{};
		CHECK(get_size(ro.get(), &info) == 0);
		CHECK(info.size == kSize);
		REQUIRE(alive(daemon_pid));
	}
	const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	std::string summary;
	for (auto [err, n] : errors)
		summary += std::string(err ? strerror(err) : "success") + ": " + std::to_string(n) + "\n";
	INFO("results:\n" << summary);
	std::string odd_text;
	for (const auto &o : odd)
		odd_text += o + "\n";
	INFO("unexpected errnos:\n" << odd_text);
	CHECK(odd.empty());
	CHECK(errors[ENOTTY] > 0);
	CHECK(errors[EINVAL] > 0);
	CHECK(seconds < 40);

	// The daemon is alive (not even a zombie) and the mount answers.
	CHECK(alive(daemon_pid));
	struct stat st {};
	CHECK(stat(path(MSHAREFS_INFO_NAME).c_str(), &st) == 0);
	CHECK(d.alignment() == kGiB);

	// A normal round trip still works.
	Fd fd(create_region("after-fuzz", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(attach(fd.get()), kSize);
	REQUIRE(w.ok());
	strcpy(w.at(kMiB), "still serving");
	ChildResult r = run_in_child([&] {
		Fd again(open(path("after-fuzz").c_str(), O_RDWR));
		if (again.get() < 0)
			return 1;
		mshare_info info{};
		if (get_size(again.get(), &info) != 0 || info.start != kStart || info.size != kSize)
			return 2;
		return strcmp(w.at(kMiB), "still serving") == 0 ? 0 : 3;
	});
	CHECK(r.exit_code == 0);
	CHECK(unlink(path("after-fuzz").c_str()) == 0);
	unlink(file.c_str());
}
