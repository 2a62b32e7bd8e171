/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kmod_test.h: what the guest test programs (kmod_selftest, kmod_users,
 * kmod_pressure) share: the CHECK line and its failure counter, /proc/meminfo
 * readers and the region ioctls. Each program is a separate static binary, so
 * everything here is static; a program defines _GNU_SOURCE before including
 * anything and prints its own final summary line.
 */
#ifndef KMOD_TEST_H
#define KMOD_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "msharefs_kmod.h"

/* Sizes; PAGE is the base page the module maps. */
#define GiB (1ULL << 30)
#define MiB (1ULL << 20)
#define KiB (1ULL << 10)
#define PAGE 4096ULL

/* Advice that older headers do not name (added in Linux 5.4). */
#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

/* Checks that failed so far; each program prints it in its last line. */
static int failures __attribute__((unused));

/* One test line: "ok - ..." or "not ok - ..." (counted in failures), flushed. */
#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (cond) {                                                     \
			printf("ok - " __VA_ARGS__);                            \
		} else {                                                        \
			failures++;                                             \
			printf("not ok - " __VA_ARGS__);                        \
		}                                                               \
		printf("\n");                                                   \
		fflush(stdout);                                                 \
	} while (0)

/*
 * Whether refresh_vmstat() reports a failed write on stderr (kmod_selftest
 * sets it). The write fails with EINVAL when some counter was negative; the
 * values are read anyway.
 */
static bool stat_refresh_perror;

/* Folds every CPU's pending vmstat deltas so /proc/meminfo is exact. */
static inline void refresh_vmstat(void)
{
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY);

	if (fd >= 0) {
		if (write(fd, "1", 1) < 0 && stat_refresh_perror)
			perror("stat_refresh");
		close(fd);
	}
}

/* The value of key in /proc/meminfo (kB for most keys), or -1. */
static inline long meminfo_kb(const char *key)
{
	char line[256];
	long v = -1;
	size_t n = strlen(key);
	FILE *f;

	refresh_vmstat();
	f = fopen("/proc/meminfo", "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && line[n] == ':')
			v = strtol(line + n + 1, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

/*
 * MemFree once it has stopped moving (up to 5 s): memory of processes that
 * earlier tests killed is returned after they are reaped, and must not count
 * as memory this test freed or failed to use.
 */
static inline long settled_memfree_kb(void)
{
	long last = meminfo_kb("MemFree"), now;

	for (int i = 0; i < 25; i++) {
		usleep(200000);
		now = meminfo_kb("MemFree");
		if (labs(now - last) < 2048)
			return now;
		last = now;
	}
	return last;
}

/*
 * Creates a region of size bytes through dev, an open descriptor of the
 * device, and closes dev: the region's descriptor, or -1 with the ioctl's
 * errno.
 */
static inline int region_create_with(int dev, uint64_t size)
{
	struct msharefs_kmod_create c = { .size = size };
	int fd = ioctl(dev, MSHAREFS_KMOD_CREATE, &c);
	int err = errno;

	close(dev);
	errno = err;
	return fd;
}

/* A range ioctl (MAP, UNMAP, PROTECT) on region fd: 0 or the errno. */
static inline int range_op(int fd, unsigned long cmd, uint64_t off, uint64_t size, uint32_t prot)
{
	struct msharefs_kmod_range r = { .offset = off, .size = size, .prot = prot };

	return ioctl(fd, cmd, &r) == 0 ? 0 : errno;
}

/* A window of size bytes of fd (a region or a memfd), MAP_SHARED with prot; NULL if mmap() failed. */
static inline char *window_prot(int fd, uint64_t size, int prot)
{
	void *p = mmap(NULL, size, prot, MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* A read-write window of size bytes of fd. */
static inline char *window(int fd, uint64_t size)
{
	return window_prot(fd, size, PROT_READ | PROT_WRITE);
}

/* The region's STATS (all zero if the ioctl failed). */
/*
 * A window of fd with prot 2 MiB past a free 1 GiB boundary (an offset
 * window, as FUSE places mmap(NULL)), or NULL.
 */
static inline char *offset_window_prot(int fd, uint64_t size, int prot)
{
	const uint64_t span = size + 2 * GiB;
	char *res = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *at, *w;

	if (res == MAP_FAILED)
		return NULL;
	at = (char *)(((uintptr_t)res + GiB - 1) & ~(uintptr_t)(GiB - 1)) + 2 * MiB;
	w = mmap(at, size, prot, MAP_SHARED | MAP_FIXED, fd, 0);
	munmap(res, at - res);
	munmap(at + size, res + span - (at + size));
	return w == MAP_FAILED ? NULL : w;
}

/* A read-write offset window of fd. */
static inline char *offset_window(int fd, uint64_t size)
{
	return offset_window_prot(fd, size, PROT_READ | PROT_WRITE);
}

static inline struct msharefs_kmod_stats region_stats(int fd)
{
	struct msharefs_kmod_stats st = { 0 };

	ioctl(fd, MSHAREFS_KMOD_STATS, &st);
	return st;
}

/* Regions /proc/msharefs_kmod lists (lines after its header), -1 if unreadable. */
static inline int count_regions(void)
{
	FILE *f = fopen("/proc/msharefs_kmod", "r");
	char line[256];
	int n = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n++;
	fclose(f);
	return n;
}

/* Sets shmem's huge page policy (the internal mount's and memfds'); old value. */
static inline int set_shmem_thp(const char *policy, char *old, size_t len)
{
	const char *path = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
	FILE *f = fopen(path, "r");
	char buf[128] = "", *open_br, *close_br;

	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	open_br = strchr(buf, '[');
	close_br = open_br ? strchr(open_br, ']') : NULL;
	if (old && open_br && close_br) {
		*close_br = 0;
		snprintf(old, len, "%s", open_br + 1);
	}
	f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(policy, f);
	return fclose(f);
}

/* A MFD_HUGETLB memfd of size bytes (2 MiB pages), or -1 with errno set. */
static inline int hugetlb_memfd(uint64_t size)
{
	int fd = memfd_create("kmod-test-hugetlb", MFD_HUGETLB | MFD_CLOEXEC), err;

	if (fd >= 0 && ftruncate(fd, (off_t)size)) {
		err = errno;
		close(fd);
		fd = -1;
		errno = err;
	}
	return fd;
}

#endif /* KMOD_TEST_H */
