/* SPDX-License-Identifier: GPL-2.0 */
/*
 * memfds under mshare-run: a memfd mapped MAP_SHARED above the threshold is
 * a window of its implicit region, shared with an unrelated process that
 * opens it through /proc/PID/fd; seals are honoured as mmap honours them.
 */
#include "adopt_test.h"

#define LEN (70 * MIB)

static int attacher(const char *path)
{
	int fd = open(path, O_RDWR);
	char *p;

	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	if (fd < 0)
		return 1;
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED && filled(p, LEN, 9), "the unrelated process's mapping: %s", strerror(errno));
	CHECK(regions_of(getpid(), NULL, 0) == 1, "the unrelated process has no window of the region");
	if (p != MAP_FAILED)
		strcpy(p + 64, "unrelated");
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	char path[64];
	char *p;
	int fd, sealed;

	if (argc == 3 && strcmp(argv[1], "attach") == 0)
		return attacher(argv[2]);
	fd = memfd_create("adopt-memfd", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	CHECK(fd >= 0 && ftruncate(fd, LEN) == 0, "memfd: %s", strerror(errno));
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED && regions_of(getpid(), NULL, 0) == 1, "the memfd was not adopted: %s",
	      strerror(errno));
	if (p == MAP_FAILED)
		return test_result("adopt_memfd");
	fill(p, LEN, 9);
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), fd);
	CHECK(run_unrelated((char *[]){"attach", path, NULL}) == 0, "the unrelated process failed");
	CHECK(strcmp(p + 64, "unrelated") == 0, "the unrelated process's store is not seen");
	CHECK(munmap(p, LEN) == 0 && regions_of(getpid(), NULL, 0) == 0, "munmap");

	/* A write-sealed memfd: mmap PROT_WRITE fails EPERM, as without
	 * mshare-run; PROT_READ works. */
	sealed = memfd_create("adopt-sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	CHECK(sealed >= 0 && ftruncate(sealed, LEN) == 0 && fcntl(sealed, F_ADD_SEALS, F_SEAL_WRITE) == 0,
	      "sealing: %s", strerror(errno));
	CHECK(mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, sealed, 0) == MAP_FAILED && errno == EPERM,
	      "a write-sealed memfd was mapped writable (errno %d)", errno);
	p = mmap(NULL, LEN, PROT_READ, MAP_SHARED, sealed, 0);
	CHECK(p != MAP_FAILED && p[0] == 0, "a read-only mapping of a sealed memfd: %s", strerror(errno));
	if (p != MAP_FAILED) {
		CHECK(store_faults(p), "a store into a sealed memfd does not fault");
		munmap(p, LEN);
	}
	return test_result("adopt_memfd");
}
