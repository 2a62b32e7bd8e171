/* SPDX-License-Identifier: GPL-2.0 */
/*
 * MAP_SHARED_PT in a program that links libmshare (adopt_shared_pt), or in
 * the same program unmodified under mshare-run (adopt_shared_pt_preload):
 * mmap(MAP_SHARED | MAP_SHARED_PT) of a tmpfs file, a file on disk, a memfd
 * and, where there is a hugetlbfs ($ADOPT_HUGETLB_DIR), a hugetlbfs file and
 * an MFD_HUGETLB memfd maps the implicit region of the file range, shared
 * with an unrelated process doing the same and with a forked child; the
 * data is the file's, and outlives the file's name (a new file of that name
 * is a region of its own). Every call
 * MAP_SHARED_PT does not accept fails as documented, and the kernel itself
 * refuses the flag.
 */
#include "adopt_test.h"

#include <dlfcn.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <linux/msharefs.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <sys/syscall.h>

#define LEN (6 * MIB)

#ifdef ADOPT_PRELOAD
#define PROGRAM "adopt_shared_pt_preload"
#define RUNTIME "libmshare-preload.so" /* what mmap must be */
#else
#define PROGRAM "adopt_shared_pt"
#define RUNTIME "libmshare.so"
#endif

static char *map_pt(int fd, int prot)
{
	return mmap(NULL, LEN, prot, MAP_SHARED | MAP_SHARED_PT, fd, 0);
}

/*
 * Whether MAP_SHARED_PT of fd gives a plain MAP_SHARED mapping, no region:
 * on the module a caller's hugetlbfs file is mapped into a region for root
 * only (EOPNOTSUPP for others; README, datapath=kmod), and the runtime maps
 * the file itself instead.
 */
static int plain_expected(int fd)
{
	struct statfs sfs;

	return on_module() && geteuid() != 0 && fstatfs(fd, &sfs) == 0 && sfs.f_type == HUGETLBFS_MAGIC;
}

/* Whether pid's one window is of region, or, for region "" (a plain
 * mapping), whether it has none. */
static int window_of(pid_t pid, const char *region)
{
	return *region ? attached_only_to(pid, region) : regions_of(pid, NULL, 0) == 0;
}

static int attacher(const char *path, const char *region, unsigned seed)
{
	int fd = open(path, O_RDWR);
	char *p = fd < 0 ? MAP_FAILED : map_pt(fd, PROT_READ | PROT_WRITE);

	CHECK(p != MAP_FAILED, "MAP_SHARED_PT of %s in the unrelated process: %s", path, strerror(errno));
	if (p == MAP_FAILED)
		return 1;
	CHECK(filled(p, LEN, seed), "the unrelated process does not see the data");
	CHECK(window_of(getpid(), region), "the unrelated process has no window of region '%s'", region);
	strcpy(p + 64, "unrelated");
	CHECK(munmap(p, LEN) == 0, "munmap: %s", strerror(errno));
	return failures ? 1 : 0;
}

/* Maps path in an unrelated process, which checks it sees seed's data in
 * region and stores "unrelated" at 64. */
static int unrelated(const char *path, const char *region, unsigned seed)
{
	char s[16];

	snprintf(s, sizeof(s), "%u", seed);
	return run_unrelated((char *[]){"attach", (char *)path, (char *)region, s, NULL});
}

/* The name of the one region this process has a window of, or "". */
static void region_name(char *names, size_t len)
{
	if (regions_of(getpid(), names, len) != 1)
		names[0] = 0;
	names[strcspn(names, " ")] = 0;
}

/* A forked child reads the data through the inherited window, in the same
 * region, and its store is seen here. */
static void forked(const char *what, char *p, const char *region)
{
	int status;
	pid_t child = fork();

	if (child == 0) {
		failures = 0;
		CHECK(filled(p, LEN, 1), "%s: the child does not see the data", what);
		CHECK(window_of(getpid(), region), "%s: the child has no window of region '%s'", what, region);
		strcpy(p + 128, "child");
		_exit(failures ? 1 : 0);
	}
	CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "%s: the forked child failed", what);
	CHECK(strcmp(p + 128, "child") == 0, "%s: the child's store is not seen", what);
}

/* A file of LEN bytes at path, made anew. */
static int new_file(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);

	CHECK(fd >= 0 && ftruncate(fd, LEN) == 0, "%s: %s", path, strerror(errno));
	return fd;
}

/* Whether every page of p is zero where fill() stores, and at 64. */
static int zeroed(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i += 4096)
		if (p[i] || p[i + 64])
			return 0;
	return 1;
}

/* The name of this process's region other than old, if it has exactly two
 * windows and one is of old; else "". */
static void other_region(const char *old, char *name, size_t len)
{
	char names[1024], *a, *b;

	name[0] = 0;
	if (regions_of(getpid(), names, sizeof(names)) != 2)
		return;
	a = strtok(names, " ");
	b = strtok(NULL, " ");
	if (a && b && strcmp(a, old) == 0)
		snprintf(name, len, "%s", b);
	else if (a && b && strcmp(b, old) == 0)
		snprintf(name, len, "%s", a);
}

/*
 * unlink (and close) of the file at path while p maps it, in region old:
 * the mapping keeps the data; a new file at the same path is a region of
 * its own, empty, whose data is the new file's. *made gets its name.
 */
static void unlinked(const char *path, int fd, char *p, const char *old, int plain, char *made, size_t len)
{
	char buf[16] = "";
	int fd2;
	char *q;

	made[0] = 0;
	CHECK(unlink(path) == 0 && close(fd) == 0, "unlink %s: %s", path, strerror(errno));
	CHECK(filled(p, LEN, 1) && strcmp(p + 64, "unrelated") == 0, "%s: the data is gone after unlink", path);
	strcpy(p + 64, "unlinked");
	fd2 = new_file(path);
	q = fd2 < 0 ? MAP_FAILED : map_pt(fd2, PROT_READ | PROT_WRITE);
	CHECK(q != MAP_FAILED, "MAP_SHARED_PT of the new %s: %s", path, strerror(errno));
	if (q != MAP_FAILED) {
		if (plain) {
			CHECK(regions_of(getpid(), NULL, 0) == 0, "%s: a region of a hugetlbfs file on the module", path);
		} else {
			other_region(old, made, len);
			CHECK(strncmp(made, "pt-", 3) == 0 && strcmp(made, old) != 0,
			      "%s: not attached to %s and a region of the new file: '%s'", path, old, made);
		}
		CHECK(zeroed(q, LEN), "%s: the new file's region is not empty", path);
		fill(q, LEN, 4);
		CHECK(filled(p, LEN, 1) && strcmp(p + 64, "unlinked") == 0,
		      "%s: a store into the new file reached the unlinked one", path);
		strcpy(q + 64, "new file");
		CHECK(pread(fd2, buf, 8, 64) == 8 && memcmp(buf, "new file", 8) == 0,
		      "%s: the new file lacks its region's data", path);
		CHECK(munmap(q, LEN) == 0, "%s: munmap of the new file: %s", path, strerror(errno));
	}
	close(fd2);
	unlink(path);
}

/*
 * The file fd of LEN bytes, which another process opens as path: its
 * implicit region, shared, and every call MAP_SHARED_PT refuses; then, if
 * unlink_it, unlinked(). Closes fd.
 */
static void one_file(const char *what, int fd, const char *path, int unlink_it)
{
	const uint64_t align = test_alignment();
	const int plain = plain_expected(fd);
	char names[1024], made[300] = "", buf[16] = "";
	struct statfs sfs;
	uint64_t unit;
	int rofd;
	char *p;

	CHECK(fstatfs(fd, &sfs) == 0, "%s: fstatfs: %s", what, strerror(errno));
	unit = sfs.f_type == HUGETLBFS_MAGIC ? (uint64_t)sfs.f_bsize : 4096;
	p = map_pt(fd, PROT_READ | PROT_WRITE);
	CHECK(p != MAP_FAILED, "MAP_SHARED_PT of %s: %s", what, strerror(errno));
	if (p == MAP_FAILED) {
		close(fd);
		return;
	}
	region_name(names, sizeof(names));
	if (plain) {
		CHECK(regions_of(getpid(), NULL, 0) == 0, "%s: uid %d got a region of a hugetlbfs file on the module",
		      what, (int)geteuid());
	} else {
		CHECK((uintptr_t)p % align == 0, "%s: the window is not aligned", what);
		CHECK(strncmp(names, "pt-", 3) == 0, "%s: not one implicit region: '%s'", what, names);
	}
	fill(p, LEN, 1);
	CHECK(unrelated(path, names, 1) == 0, "%s: the unrelated process failed", what);
	CHECK(strcmp(p + 64, "unrelated") == 0, "%s: the unrelated process's store is not seen", what);
	forked(what, p, names);
	CHECK(pread(fd, buf, 9, 64) == 9 && memcmp(buf, "unrelated", 9) == 0, "%s: the file lacks the data", what);
	CHECK(pread(fd, buf, 5, 128) == 5 && memcmp(buf, "child", 5) == 0, "%s: the file lacks the child's data",
	      what);

	/* What MAP_SHARED_PT does not accept. */
	CHECK(mmap(NULL, LEN, PROT_READ, MAP_PRIVATE | MAP_SHARED_PT, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "MAP_PRIVATE | MAP_SHARED_PT was not refused with EINVAL");
	CHECK(mmap(NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT, fd, 100) == MAP_FAILED && errno == EINVAL,
	      "an unaligned offset was not refused with EINVAL");
	if (unit > 4096)
		CHECK(mmap(NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT, fd, 4096) == MAP_FAILED &&
			      errno == EINVAL,
		      "%s: an offset not a multiple of the huge page size was not refused with EINVAL", what);
	CHECK(mmap(NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT | MAP_ANONYMOUS, -1, 0) == MAP_FAILED &&
		      errno == EINVAL,
	      "MAP_ANONYMOUS | MAP_SHARED_PT was not refused with EINVAL");
	CHECK(mmap((void *)(uintptr_t)(align + 4096), LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT | MAP_FIXED, fd,
		   0) == MAP_FAILED && errno == EINVAL,
	      "MAP_FIXED at an unaligned address was not refused with EINVAL");
	CHECK(mmap(NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT, 1000, 0) == MAP_FAILED && errno == EBADF,
	      "a bad descriptor did not fail EBADF");
	rofd = open(path, O_RDONLY);
	CHECK(map_pt(rofd, PROT_READ | PROT_WRITE) == MAP_FAILED && errno == EACCES,
	      "%s: a read-only descriptor was mapped writable", what);
	close(rofd);

	/* An append-only file (chattr +a; root only, where the file system has
	 * the flag): no shared mapping through a descriptor open for writing,
	 * as mmap refuses it, though p holds the region; read-only still maps. */
	{
		int iflags = 0;

		if (ioctl(fd, FS_IOC_GETFLAGS, &iflags) == 0 &&
		    ioctl(fd, FS_IOC_SETFLAGS, &(int){iflags | FS_APPEND_FL}) == 0) {
			char *q;

			CHECK(map_pt(fd, PROT_READ | PROT_WRITE) == MAP_FAILED && errno == EACCES,
			      "%s: an append-only file was mapped writable", what);
			CHECK(map_pt(fd, PROT_READ) == MAP_FAILED && errno == EACCES,
			      "%s: an append-only file was mapped through a writable descriptor", what);
			rofd = open(path, O_RDONLY);
			q = map_pt(rofd, PROT_READ);
			CHECK(q != MAP_FAILED, "%s: append-only, read-only: %s", what, strerror(errno));
			if (q != MAP_FAILED)
				munmap(q, LEN);
			close(rofd);
			ioctl(fd, FS_IOC_SETFLAGS, &iflags);
		}
	}

	if (unlink_it)
		unlinked(path, fd, p, names, plain, made, sizeof(made));
	else
		close(fd);
	CHECK(munmap(p, LEN) == 0, "%s: munmap: %s", what, strerror(errno));
	strncat(names, " ", sizeof(names) - strlen(names) - 1);
	strncat(names, made, sizeof(names) - strlen(names) - 1);
	CHECK(gone(getpid(), names), "%s: a window, or implicit region %s, is left after the last munmap", what,
	      names);
}

static void file_in(const char *dir)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/adopt-pt-%d", dir, (int)getpid());
	fd = new_file(path);
	if (fd >= 0)
		one_file(path, fd, path, 1);
}

static void memfd(const char *what, unsigned flags)
{
	char path[64];
	int fd = memfd_create(what, MFD_CLOEXEC | flags);

	CHECK(fd >= 0 && ftruncate(fd, LEN) == 0, "%s: %s", what, strerror(errno));
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), fd);
	if (fd >= 0)
		one_file(what, fd, path, 0);
}

/* mmap is the runtime's (libmshare's, or the preload's) in this program. */
static void runtime_is(const char *runtime)
{
	Dl_info info = {0};

	CHECK(dladdr((void *)mmap, &info) && info.dli_fname && strstr(info.dli_fname, runtime),
	      "mmap is %s's, not %s's", info.dli_fname ? info.dli_fname : "nobody", runtime);
}

int main(int argc, char **argv)
{
	const char *huge = getenv("ADOPT_HUGETLB_DIR");
	const char *disk = getenv("ADOPT_DISK_DIR");
	char region[4096];
	int fd;

	if (argc == 5 && strcmp(argv[1], "attach") == 0)
		return attacher(argv[2], argv[3], (unsigned)atoi(argv[4]));

	/* Without the runtime the kernel refuses the flag: EINVAL. */
	fd = memfd_create("plain", MFD_CLOEXEC);
	CHECK(fd >= 0 && ftruncate(fd, LEN) == 0, "memfd");
	CHECK(syscall(SYS_mmap, NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT, fd, 0) == -EINVAL ||
		      errno == EINVAL,
	      "the kernel did not refuse MAP_SHARED_PT with EINVAL");
	if (argc == 2 && strcmp(argv[1], "without-runtime") == 0) {
		/* The unmodified program, run without mshare-run: its mmap is
		 * libc's, and fails the same way. */
		runtime_is("libc.so");
		CHECK(map_pt(fd, PROT_READ) == MAP_FAILED && errno == EINVAL,
		      "MAP_SHARED_PT without the runtime did not fail EINVAL");
		return test_result(PROGRAM " without the runtime");
	}
	close(fd);
	runtime_is(RUNTIME);

	file_in("/dev/shm");
	file_in(disk ? disk : ".");
	memfd("adopt-pt-memfd", 0);
	/* A hugetlbfs file holds 3 huge pages; unlinked() maps two. */
	if (huge && *huge && unreserved_huge_pages() < 16)
		printf("%s: fewer than 16 free huge pages, hugetlbfs files not checked\n", PROGRAM);
	else if (huge && *huge) {
		file_in(huge);
		memfd("adopt-pt-memfd-hugetlb", MFD_HUGETLB);
	}

	/* A region file cannot be mapped MAP_SHARED_PT: objects do not nest. */
	snprintf(region, sizeof(region), "%s/adopt-pt-region-%d", test_mount(), (int)getpid());
	fd = open(region, O_RDWR | O_CREAT | O_EXCL, 0600);
	CHECK(fd >= 0 && ftruncate(fd, (off_t)test_alignment()) == 0, "a region: %s", strerror(errno));
	CHECK(mmap(NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "a region file was mapped MAP_SHARED_PT");
	close(fd);
	unlink(region);
	return test_result(PROGRAM);
}
