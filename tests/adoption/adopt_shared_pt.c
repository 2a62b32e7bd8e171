/* SPDX-License-Identifier: GPL-2.0 */
/*
 * MAP_SHARED_PT in a program that links libmshare: mmap(MAP_SHARED |
 * MAP_SHARED_PT) of a tmpfs file and of a file on disk maps the implicit
 * region of the file range, shared with an unrelated process doing the same;
 * the data is the file's. Every call MAP_SHARED_PT does not accept fails as
 * documented, and the kernel itself refuses the flag.
 */
#include "adopt_test.h"

#include <linux/msharefs.h>
#include <sys/syscall.h>

#define LEN (6 * MIB)

static int attacher(const char *path)
{
	int fd = open(path, O_RDWR);
	char *p = fd < 0 ? MAP_FAILED
			 : mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_SHARED_PT, fd, 0);

	CHECK(p != MAP_FAILED, "MAP_SHARED_PT in the unrelated process: %s", strerror(errno));
	if (p == MAP_FAILED)
		return 1;
	CHECK(filled(p, LEN, 1), "the unrelated process does not see the data");
	CHECK(regions_of(getpid(), NULL, 0) == 1, "the unrelated process has no window of the region");
	strcpy(p + 64, "unrelated");
	CHECK(munmap(p, LEN) == 0, "munmap: %s", strerror(errno));
	return failures ? 1 : 0;
}

static void one_file(const char *path)
{
	const uint64_t align = test_alignment();
	char names[1024], buf[16] = "";
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600), rofd;
	char *p;

	CHECK(fd >= 0 && ftruncate(fd, LEN) == 0, "%s: %s", path, strerror(errno));
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_SHARED_PT, fd, 0);
	CHECK(p != MAP_FAILED, "MAP_SHARED_PT of %s: %s", path, strerror(errno));
	if (p == MAP_FAILED)
		return;
	CHECK((uintptr_t)p % align == 0, "the window is not aligned");
	CHECK(regions_of(getpid(), names, sizeof(names)) == 1 && strncmp(names, "pt-", 3) == 0,
	      "%s: not one implicit region: '%s'", path, names);
	fill(p, LEN, 1);
	CHECK(run_unrelated((char *[]){"attach", (char *)path, NULL}) == 0, "%s: the unrelated process failed", path);
	CHECK(strcmp(p + 64, "unrelated") == 0, "%s: the unrelated process's store is not seen", path);
	CHECK(pread(fd, buf, 9, 64) == 9 && memcmp(buf, "unrelated", 9) == 0, "%s: the file lacks the data", path);

	/* What MAP_SHARED_PT does not accept. */
	CHECK(mmap(NULL, LEN, PROT_READ, MAP_PRIVATE | MAP_SHARED_PT, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "MAP_PRIVATE | MAP_SHARED_PT was not refused with EINVAL");
	CHECK(mmap(NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT, fd, 100) == MAP_FAILED && errno == EINVAL,
	      "an unaligned offset was not refused with EINVAL");
	CHECK(mmap(NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT | MAP_ANONYMOUS, -1, 0) == MAP_FAILED &&
		      errno == EINVAL,
	      "MAP_ANONYMOUS | MAP_SHARED_PT was not refused with EINVAL");
	CHECK(mmap((void *)(uintptr_t)(align + 4096), LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT | MAP_FIXED, fd,
		   0) == MAP_FAILED && errno == EINVAL,
	      "MAP_FIXED at an unaligned address was not refused with EINVAL");
	CHECK(mmap(NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT, 1000, 0) == MAP_FAILED && errno == EBADF,
	      "a bad descriptor did not fail EBADF");
	rofd = open(path, O_RDONLY);
	CHECK(mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_SHARED_PT, rofd, 0) == MAP_FAILED &&
		      errno == EACCES,
	      "a read-only descriptor was mapped writable");
	close(rofd);
	CHECK(munmap(p, LEN) == 0 && regions_of(getpid(), NULL, 0) == 0, "munmap");
	names[strcspn(names, " ")] = 0;
	CHECK(!region_listed(names), "%s: implicit region %s is held after its last window", path, names);
	close(fd);
	unlink(path);
}

int main(int argc, char **argv)
{
	char path[4096], region[4096];
	int fd;

	if (argc == 3 && strcmp(argv[1], "attach") == 0)
		return attacher(argv[2]);

	/* Without the runtime the kernel refuses the flag: EINVAL. */
	fd = memfd_create("plain", MFD_CLOEXEC);
	CHECK(fd >= 0 && ftruncate(fd, LEN) == 0, "memfd");
	CHECK(syscall(SYS_mmap, NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT, fd, 0) == -EINVAL ||
		      errno == EINVAL,
	      "the kernel did not refuse MAP_SHARED_PT with EINVAL");
	close(fd);

	snprintf(path, sizeof(path), "/dev/shm/adopt-pt-%d", (int)getpid());
	one_file(path);
	snprintf(path, sizeof(path), "%s/adopt-pt-%d", getenv("ADOPT_DISK_DIR") ? getenv("ADOPT_DISK_DIR") : ".",
		 (int)getpid());
	one_file(path);

	/* A region file cannot be mapped MAP_SHARED_PT: objects do not nest. */
	snprintf(region, sizeof(region), "%s/adopt-pt-region-%d", test_mount(), (int)getpid());
	fd = open(region, O_RDWR | O_CREAT | O_EXCL, 0600);
	CHECK(fd >= 0 && ftruncate(fd, (off_t)test_alignment()) == 0, "a region: %s", strerror(errno));
	CHECK(mmap(NULL, LEN, PROT_READ, MAP_SHARED | MAP_SHARED_PT, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "a region file was mapped MAP_SHARED_PT");
	close(fd);
	unlink(region);
	return test_result("adopt_shared_pt");
}
