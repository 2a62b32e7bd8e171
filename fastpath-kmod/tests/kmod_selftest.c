// SPDX-License-Identifier: GPL-2.0
/*
 * kmod_selftest: the module's own tests, run in a QEMU guest with
 * msharefs_kmod loaded (fastpath-kmod/qemu/run-guest.sh). Each check prints
 * "ok" or "not ok" with what it saw; the exit status is the number of
 * failures. Page-table memory is read from /proc/meminfo (PageTables) and
 * /proc/PID/status (VmPTE), faults from /proc/PID/stat.
 *
 *   kmod_selftest [--help] [--measure | --measure-16g | --stress]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msharefs_kmod.h"
#include "kmod_test.h"

static long minflt_of(pid_t pid)
{
	char path[64], buf[1024], *p;
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fgets(buf, sizeof(buf), f)) {
		p = strrchr(buf, ')');
		/* field 10 is minflt; p points at ") state ..." */
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %ld", &v) != 1)
			v = -1;
	}
	fclose(f);
	return v;
}

static int dev_fd(void)
{
	int fd = open(MSHAREFS_KMOD_DEVICE, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		perror(MSHAREFS_KMOD_DEVICE);
		exit(100);
	}
	return fd;
}

static int region_create(uint64_t size)
{
	return region_create_with(dev_fd(), size);
}

/* Runs fn(arg) in a child; returns its exit status, or 128+signal. */
static int in_child(int (*fn)(void *), void *arg)
{
	int status;
	pid_t pid = fork();

	if (pid == 0)
		_exit(fn(arg));
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int touch_read(void *p)
{
	return *(volatile char *)p == 0x7f ? 7 : 0;
}

static int touch_write(void *p)
{
	*(volatile char *)p = 1;
	return 0;
}

static void test_refusals(void)
{
	int fd = region_create(GiB);
	char *w;

	CHECK(fd >= 0, "create a 1 GiB region");
	CHECK(region_create(GiB + PAGE) < 0 && errno == EINVAL, "an unaligned size is EINVAL");
	CHECK(range_op(fd, MSHAREFS_KMOD_MAP, 0, 64 * MiB, PROT_READ | PROT_WRITE) == 0, "map 64 MiB");
	CHECK(range_op(fd, MSHAREFS_KMOD_MAP, 32 * MiB, 64 * MiB, PROT_READ) == EEXIST,
	      "an overlapping map is EEXIST");
	CHECK(range_op(fd, MSHAREFS_KMOD_MAP, GiB, PAGE, PROT_READ) == EINVAL, "a map past the end is EINVAL");
	CHECK(range_op(fd, MSHAREFS_KMOD_MAP, 100, PAGE, PROT_READ) == EINVAL, "a misaligned map is EINVAL");
	CHECK(mmap(NULL, GiB, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "MAP_PRIVATE of the window is EINVAL");
	CHECK(mmap(NULL, GiB / 2, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "a short window is EINVAL");
	w = window(fd, GiB);
	CHECK(w && ((uintptr_t)w % GiB) == 0, "the window is 1 GiB aligned (%p)", (void *)w);
	if (!w)
		return;
	strcpy(w, "hello");
	CHECK(mprotect(w, GiB, PROT_READ) == -1 && errno == EINVAL, "mprotect of the window is EINVAL");
	CHECK(munmap(w + 512 * MiB, PAGE) == -1 && errno == EINVAL, "a partial munmap is EINVAL");
	CHECK(mremap(w, GiB, 2 * GiB, MREMAP_MAYMOVE) == MAP_FAILED, "mremap to grow fails");
	CHECK(mremap(w, GiB, GiB / 2, 0) == MAP_FAILED && errno == EINVAL, "mremap to shrink is EINVAL");
	CHECK(in_child(touch_read, w + 128 * MiB) == 128 + SIGSEGV, "a hole faults with SIGSEGV");
	CHECK(strcmp(w, "hello") == 0, "the window still works after refusals");
	CHECK(munmap(w, GiB) == 0, "munmap of the whole window");
	close(fd);
}

static int read_hello(void *p)
{
	return strcmp(p, "from parent") == 0 ? 0 : 1;
}

static void test_sharing(void)
{
	int fd = region_create(2 * GiB);
	char *w, *again;
	int status;
	pid_t pid;

	range_op(fd, MSHAREFS_KMOD_MAP, 0, 2 * GiB, PROT_READ | PROT_WRITE);
	w = window(fd, 2 * GiB);
	CHECK(w != NULL, "attach a 2 GiB window");
	if (!w)
		return;
	strcpy(w + GiB + 5 * PAGE, "from parent");
	CHECK(in_child(read_hello, w + GiB + 5 * PAGE) == 0, "a forked child sees the parent's store");
	pid = fork();
	if (pid == 0) {
		strcpy(w + 3 * PAGE, "from child");
		_exit(0);
	}
	waitpid(pid, &status, 0);
	CHECK(strcmp(w + 3 * PAGE, "from child") == 0, "the parent sees the child's store");
	again = window(fd, 2 * GiB);
	CHECK(again && strcmp(again + GiB + 5 * PAGE, "from parent") == 0,
	      "a second window in the same process sees the same memory");
	if (again)
		munmap(again, 2 * GiB);

	/* UNMAP: every attacher faults there, the rest keeps its data. */
	CHECK(range_op(fd, MSHAREFS_KMOD_UNMAP, GiB, PAGE * 16, 0) == 0, "UNMAP 16 pages");
	CHECK(in_child(touch_read, w + GiB + 5 * PAGE) == 128 + SIGSEGV, "a child faults in the unmapped range");
	CHECK(in_child(touch_read, w + GiB + 16 * PAGE) == 0, "but not next to it");
	CHECK(strcmp(w + 3 * PAGE, "from child") == 0, "data outside the range stays");

	/* PROTECT: read-only for everyone at once, then back. */
	CHECK(range_op(fd, MSHAREFS_KMOD_PROTECT, 0, GiB, PROT_READ) == 0, "PROTECT 1 GiB read-only");
	CHECK(in_child(touch_write, w + 3 * PAGE) == 128 + SIGSEGV, "a store into it faults");
	CHECK(in_child(touch_read, w + 3 * PAGE) == 0, "a load from it works");
	CHECK(range_op(fd, MSHAREFS_KMOD_PROTECT, 0, GiB, PROT_READ | PROT_WRITE) == 0, "PROTECT back to read-write");
	CHECK(in_child(touch_write, w + 3 * PAGE) == 0, "a store works again");
	CHECK(range_op(fd, MSHAREFS_KMOD_PROTECT, GiB, PAGE, PROT_READ) == ENOMEM,
	      "PROTECT of a hole is ENOMEM");
	munmap(w, 2 * GiB);
	close(fd);
}

static int direct_io_into_window(void *p)
{
	int fd = open("/proc/self/status", O_RDONLY);
	ssize_t n = read(fd, p, 64);

	/* A copy through the kernel works or fails with EFAULT; nothing else. */
	return n > 0 || (n < 0 && errno == EFAULT) ? 0 : 1;
}

static void test_introspection(void)
{
	int fd = region_create(GiB);
	char path[64], buf[4096];
	struct iovec local, remote;
	char *w;
	int pfd;
	ssize_t n;

	range_op(fd, MSHAREFS_KMOD_MAP, 0, GiB, PROT_READ | PROT_WRITE);
	w = window(fd, GiB);
	if (!w)
		return;
	memset(w, 'x', 4 * PAGE);
	snprintf(path, sizeof(path), "/proc/%d/smaps", getpid());
	pfd = open(path, O_RDONLY);
	while ((n = read(pfd, buf, sizeof(buf))) > 0)
		;
	CHECK(n == 0, "/proc/PID/smaps is readable");
	close(pfd);
	pfd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t entry = 0;

	n = pread(pfd, &entry, 8, ((uintptr_t)w / PAGE) * 8);
	CHECK(n == 8 && (entry >> 63), "pagemap shows the page present");
	close(pfd);
	local.iov_base = buf;
	local.iov_len = 64;
	remote.iov_base = w;
	remote.iov_len = 64;
	n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	CHECK(n == 64 || (n < 0 && errno == EFAULT), "process_vm_readv works or fails with EFAULT (%zd)", n);
	CHECK(in_child(direct_io_into_window, w) == 0, "a read() into the window works or fails with EFAULT");
	munmap(w, GiB);
	close(fd);
}

/*
 * Starts n children that each attach (attach_fd >= 0: mmap of the region or
 * memfd) and read every page of size bytes, then wait. Returns the PageTables
 * growth in kB and the most minor faults one child took; the children are
 * killed on return. With attach_fd < 0 the children only fork and wait: the
 * cost of a process itself, subtracted from the others.
 */
static int set_writer(int fd, int32_t pid)
{
	return ioctl(fd, MSHAREFS_KMOD_SET_WRITER, &pid) == 0 ? 0 : errno;
}

/* attach_children() maps offset windows (2 MiB past a GiB), as FUSE places mmap(NULL). */
static bool attach_offset;

static long attach_children(int attach_fd, uint64_t size, int n, long *max_faults)
{
	pid_t *pids = calloc(n, sizeof(pid_t));
	long before = meminfo_kb("PageTables"), after;
	int pipefd[2], i;

	*max_faults = 0;
	if (!pids || pipe(pipefd))
		exit(101);
	for (i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			long f0 = minflt_of(getpid()), sum = 0, f;
			char *cw = attach_fd < 0 ? NULL
				   : attach_offset ? offset_window(attach_fd, size) : window(attach_fd, size);

			for (uint64_t off = 0; cw && off < size; off += PAGE)
				sum += cw[off];
			f = minflt_of(getpid()) - f0;
			if (write(pipefd[1], &f, sizeof(f)) != sizeof(f) ||
			    (attach_fd >= 0 && sum != (long)(size / PAGE)))
				_exit(2);
			pause();
			_exit(0);
		}
	}
	for (i = 0; i < n; i++) {
		long f = 0;

		if (read(pipefd[0], &f, sizeof(f)) != sizeof(f))
			f = 1L << 40; /* a child failed */
		if (f > *max_faults)
			*max_faults = f;
	}
	after = meminfo_kb("PageTables");
	for (i = 0; i < n; i++) {
		kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
	}
	close(pipefd[0]);
	close(pipefd[1]);
	free(pids);
	return after - before;
}

static void populate(int fd, uint64_t size)
{
	char *w = window(fd, size);

	for (uint64_t off = 0; w && off < size; off += PAGE)
		w[off] = 1;
	if (w)
		munmap(w, size);
}

/*
 * Page tables and faults per extra attacher: module vs plain shared memory
 * of the same backing (4K pages, shmem THP, or hugetlb: a MFD_HUGETLB memfd
 * in the region and as the baseline). Returns the module's kB.
 */
static double measure_backing(uint64_t size, int n, const char *backing)
{
	long faults, idle_faults, shm_faults, idle, kmod, shm;
	bool hugetlb = !strcmp(backing, "hugetlb");
	int fd = region_create(size), hfd = hugetlb ? hugetlb_memfd(size) : -1;
	struct msharefs_kmod_map_file m = { 0, size, 0, PROT_READ | PROT_WRITE, hfd };

	idle = attach_children(-1, 0, n, &idle_faults);
	if (hugetlb ? ioctl(fd, MSHAREFS_KMOD_MAP_FILE, &m) : range_op(fd, MSHAREFS_KMOD_MAP, 0, size, m.prot))
		exit(103);
	if (hfd >= 0)
		close(hfd); /* the region holds the file */
	populate(fd, size);
	kmod = attach_children(fd, size, n, &faults) - idle;
	close(fd);

	if (hugetlb) {
		/* the region's huge pages go back to the pool asynchronously */
		for (int i = 0; i < 1000 && meminfo_kb("HugePages_Free") < (long)(size >> 21); i++)
			usleep(10000);
		fd = hugetlb_memfd(size);
	} else {
		fd = memfd_create("baseline", 0);
	}
	if (fd < 0 || ftruncate(fd, (off_t)size))
		exit(102);
	populate(fd, size);
	shm = attach_children(fd, size, n, &shm_faults) - idle;
	close(fd);

	printf("measure: %llu GiB %s, %2d attachers | page tables per attacher: kmod %.1f kB, shm %.1f kB | "
	       "faults to read all: kmod %ld, shm %ld\n",
	       (unsigned long long)(size / GiB), backing, n, (double)kmod / n, (double)shm / n, faults,
	       shm_faults);
	/* An offset window has a PMD table of its own per GiB it spans. */
	const long per = attach_offset ? 4 * (long)(size / GiB + 1) + 4 : 4;

	CHECK(kmod <= per * n, "%llu GiB %s, %d attachers: <= %ld KiB of page tables per extra attacher (%.1f kB)",
	      (unsigned long long)(size / GiB), backing, n, per, (double)kmod / n);
	CHECK(faults <= 16, "%llu GiB %s, %d attachers: a new attacher reads every page with <= 16 faults (%ld)",
	      (unsigned long long)(size / GiB), backing, n, faults);
	return (double)kmod / n;
}

static double measure(uint64_t size, int n)
{
	return measure_backing(size, n, "4K");
}

/* The same through offset windows (an unmodified mmap(NULL) through FUSE). */
static void measure_offset(uint64_t size, int n)
{
	attach_offset = true;
	measure_backing(size, n, "4K-offset");
	attach_offset = false;
}

/* The same with the region's anonymous memory (and the memfd) on shmem THP. */
static void measure_thp(uint64_t size, int n)
{
	char old[32] = "never";

	if (set_shmem_thp("always", old, sizeof(old))) {
		printf("measure: shmem THP cannot be enabled here: skipped\n");
		return;
	}
	measure_backing(size, n, "THP");
	set_shmem_thp(old, NULL, 0);
}

/* The same with hugetlb memory (2 MiB pages) in the region and the memfd. */
static void measure_hugetlb(uint64_t size, int n)
{
	long pages = (long)(size >> 21), nr = meminfo_kb("HugePages_Total");
	char buf[32];
	int fd = open("/proc/sys/vm/nr_hugepages", O_WRONLY | O_CLOEXEC);

	snprintf(buf, sizeof(buf), "%ld\n", nr + pages);
	if (fd < 0 || write(fd, buf, strlen(buf)) < 0 || meminfo_kb("HugePages_Free") < pages) {
		printf("measure: %llu GiB hugetlb: a pool of %ld huge pages cannot be had here: skipped\n",
		       (unsigned long long)(size / GiB), pages);
	} else {
		measure_backing(size, n, "hugetlb");
	}
	/* at offset 0 again: a numeric sysctl ignores a write past it */
	snprintf(buf, sizeof(buf), "%ld\n", nr);
	if (fd >= 0 && pwrite(fd, buf, strlen(buf), 0) < 0)
		perror("nr_hugepages");
	if (fd >= 0)
		close(fd);
}

/* The seeds' case: 1,500 attachers of 1 GiB, scaled from n measured ones. */
static void measure_many(int n)
{
	double per = measure(GiB, n);
	double kmod_mib = per * 1500 / 1024;

	printf("measure: 1500 attachers of 1 GiB (scaled from %d): kmod %.1f MiB of page tables, shm %.1f MiB\n",
	       n, kmod_mib, 2052.0 * 1500 / 1024);
	CHECK(kmod_mib <= 8, "1,500 attachers of a populated 1 GiB need <= 8 MiB of page tables (%.1f MiB)",
	      kmod_mib);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/*
 * A populated region of size with n attachers that have each read every
 * page of their own window, waiting (paused) to be stopped by stop_readers().
 */
static int start_readers(uint64_t size, int n, pid_t *pids)
{
	int fd = region_create(size), pipefd[2], i;

	range_op(fd, MSHAREFS_KMOD_MAP, 0, size, PROT_READ | PROT_WRITE);
	populate(fd, size);
	if (pipe(pipefd))
		exit(103);
	for (i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			char *cw = window(fd, size);
			long sum = 0;

			for (uint64_t off = 0; cw && off < size; off += PAGE)
				sum += cw[off];
			if (write(pipefd[1], &sum, sizeof(sum)) != sizeof(sum))
				_exit(1);
			pause();
			_exit(0);
		}
	}
	for (i = 0; i < n; i++) {
		long sum;

		if (read(pipefd[0], &sum, sizeof(sum)) != sizeof(sum))
			exit(104);
	}
	close(pipefd[0]);
	close(pipefd[1]);
	return fd;
}

static void stop_readers(int fd, int n, pid_t *pids)
{
	for (int i = 0; i < n; i++) {
		kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
	}
	close(fd);
}

/* The baseline: a memfd of size mapped shared, every page touched. */
static char *populated_memfd(uint64_t size, int *fd)
{
	char *p;

	*fd = memfd_create("baseline", 0);
	if (ftruncate(*fd, (off_t)size))
		exit(105);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
	if (p == MAP_FAILED)
		exit(105);
	for (uint64_t off = 0; off < size; off += PAGE)
		p[off] = 1;
	return p;
}

/*
 * PROTECT of a populated region with n attachers (each has read every page),
 * read-only and back, against one process's mprotect() of a populated memfd
 * mapping of the same size. Returns the module's time in ms.
 */
static double protect_latency(uint64_t size, int n)
{
	pid_t *pids = calloc(n, sizeof(pid_t));
	double t0, kmod, plain;
	int fd;
	char *p;

	if (!pids)
		exit(103);
	fd = start_readers(size, n, pids);
	t0 = now_ms();
	range_op(fd, MSHAREFS_KMOD_PROTECT, 0, size, PROT_READ);
	range_op(fd, MSHAREFS_KMOD_PROTECT, 0, size, PROT_READ | PROT_WRITE);
	kmod = (now_ms() - t0) / 2;
	stop_readers(fd, n, pids);
	free(pids);

	p = populated_memfd(size, &fd);
	t0 = now_ms();
	mprotect(p, size, PROT_READ);
	mprotect(p, size, PROT_READ | PROT_WRITE);
	plain = (now_ms() - t0) / 2;
	munmap(p, size);
	close(fd);
	printf("measure: PROTECT %llu GiB with %2d attachers: kmod %.2f ms (once, for all) | "
	       "one process's mprotect: %.2f ms (each process pays it)\n",
	       (unsigned long long)(size / GiB), n, kmod, plain);
	return kmod;
}

/*
 * The LOCK/UNLOCK handoff of a populated region between two attachers that
 * have read all of it: SET_WRITER (one PUD entry per GiB and window), against
 * an mprotect() handoff (the old holder write-protects its mapping, the new
 * one unprotects its own) and a munmap()/mmap() handoff of a memfd.
 */
static void handoff_latency(uint64_t size)
{
	int fd, i, rounds = 10;
	pid_t pids[2];
	double t0, kmod, mprot, remap;
	char *p;

	fd = start_readers(size, 2, pids);
	t0 = now_ms();
	for (i = 0; i < rounds; i++)
		set_writer(fd, pids[i % 2]);
	kmod = (now_ms() - t0) / rounds;
	set_writer(fd, -1);
	stop_readers(fd, 2, pids);

	p = populated_memfd(size, &fd);
	t0 = now_ms();
	for (i = 0; i < rounds; i++) {
		mprotect(p, size, PROT_READ);
		mprotect(p, size, PROT_READ | PROT_WRITE);
	}
	mprot = (now_ms() - t0) / rounds;
	t0 = now_ms();
	for (i = 0; i < rounds; i++) {
		munmap(p, size);
		p = mmap(p, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	}
	remap = (now_ms() - t0) / rounds;
	munmap(p, size);
	close(fd);
	printf("measure: HANDOFF %llu GiB: kmod %.3f ms | mprotect %.3f ms | munmap+mmap %.3f ms\n",
	       (unsigned long long)(size / GiB), kmod, mprot, remap);
}

/* Waits (up to 10 s) until the module's worker has freed every region. */
static void wait_no_regions(void)
{
	for (int i = 0; i < 200 && count_regions() > 0; i++)
		usleep(50000);
}

static void test_teardown(void)
{
	long before, after;
	int fd;

	wait_no_regions();
	before = settled_memfree_kb();
	fd = region_create(GiB);
	char *w;

	range_op(fd, MSHAREFS_KMOD_MAP, 0, 256 * MiB, PROT_READ | PROT_WRITE);
	w = window(fd, GiB);
	for (uint64_t off = 0; w && off < 256 * MiB; off += PAGE)
		w[off] = 1;
	CHECK(meminfo_kb("MemFree") < before - 200 * 1024, "256 MiB populated");
	munmap(w, GiB);
	close(fd);
	/* Freed pages may sit on per-cpu lists a while before MemFree shows them. */
	for (int i = 0; i < 50; i++) {
		after = meminfo_kb("MemFree");
		if (labs(after - before) <= before / 100)
			break;
		int c = open("/proc/sys/vm/compact_memory", O_WRONLY);

		if (c >= 0) {
			if (write(c, "1", 1) < 0)
				perror("compact_memory");
			close(c);
		}
		usleep(200000);
	}
	CHECK(labs(after - before) <= before / 100, "MemFree back within 1%% after teardown (%ld -> %ld kB)", before,
	      after);
}

/* Regions made unsized and sized later, reopened by path, then sealed. */
static void test_unsized_reopen_seal(void)
{
	int fd = region_create(0), again;
	uint64_t size = GiB;
	char path[64], *w1, *w2;

	CHECK(fd >= 0, "create an unsized region");
	CHECK(mmap(NULL, GiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "an unsized region cannot be mapped (EINVAL)");
	CHECK(range_op(fd, MSHAREFS_KMOD_MAP, 0, PAGE, PROT_READ) == EINVAL, "nor given mappings");
	CHECK(ioctl(fd, MSHAREFS_KMOD_SET_SIZE, &size) == 0, "SET_SIZE 1 GiB");
	CHECK(ioctl(fd, MSHAREFS_KMOD_SET_SIZE, &size) == -1 && errno == EBUSY, "a second SET_SIZE is EBUSY");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	again = open(path, O_RDWR);
	CHECK(again >= 0, "the region file can be opened again by path");
	CHECK(range_op(again, MSHAREFS_KMOD_MAP, 0, MiB, PROT_READ | PROT_WRITE) == 0, "map through the reopened file");
	w1 = window(fd, GiB);
	w2 = window(again, GiB);
	CHECK(w1 && w2, "both files map a window");
	if (w1 && w2) {
		strcpy(w2 + PAGE, "through the reopened file");
		CHECK(strcmp(w1 + PAGE, "through the reopened file") == 0, "both windows share the memory");
	}
	CHECK(ioctl(fd, MSHAREFS_KMOD_SEAL) == 0, "SEAL");
	CHECK(mmap(NULL, GiB, PROT_READ, MAP_SHARED, again, 0) == MAP_FAILED && errno == EINVAL,
	      "a sealed region refuses new windows (EINVAL)");
	CHECK(w1 && strcmp(w1 + PAGE, "through the reopened file") == 0, "existing windows keep working");
	if (w1)
		munmap(w1, GiB);
	if (w2)
		munmap(w2, GiB);
	close(again);
	close(fd);
}

/* The LOCK/UNLOCK handoff: only the writer's windows store. */
static void test_handoff(void)
{
	int fd = region_create(GiB), go[2], done[2], status;
	char *w, c = 0;
	pid_t writer;

	range_op(fd, MSHAREFS_KMOD_MAP, 0, 64 * MiB, PROT_READ | PROT_WRITE);
	w = window(fd, GiB);
	CHECK(w != NULL, "handoff: attach a window");
	if (!w)
		return;
	strcpy(w, "before the handoff");
	CHECK(pipe(go) == 0 && pipe(done) == 0, "handoff: pipes");
	writer = fork();
	if (writer == 0) {
		char *mine = window(fd, GiB);

		if (!mine || strcmp(mine, "before the handoff"))
			_exit(1);
		if (write(done[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(2);
		strcpy(mine + PAGE, "from the writer");	/* dies here if not the writer */
		_exit(0);
	}
	CHECK(read(done[0], &c, 1) == 1, "handoff: the writer attached and read");
	CHECK(set_writer(fd, writer) == 0, "SET_WRITER of the writer's pid");
	CHECK(in_child(touch_write, w + 2 * PAGE) == 128 + SIGSEGV,
	      "a store through another process's window faults (SIGSEGV)");
	CHECK(in_child(touch_read, w) == 0, "a load through it works");
	CHECK(write(go[1], "g", 1) == 1, "handoff: tell the writer to store");
	waitpid(writer, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writer's store works (status %d)", status);
	CHECK(strcmp(w + PAGE, "from the writer") == 0, "and every window sees it");
	CHECK(set_writer(fd, getpid()) == 0, "SET_WRITER hands the region to this process");
	strcpy(w + 3 * PAGE, "from the new writer");	/* would kill the test if refused */
	CHECK(strcmp(w + 3 * PAGE, "from the new writer") == 0, "whose linked window stores at once");
	CHECK(set_writer(fd, 0) == 0 && in_child(touch_write, w + 4 * PAGE) == 128 + SIGSEGV,
	      "SET_WRITER 0: nobody stores");
	CHECK(set_writer(fd, -1) == 0 && in_child(touch_write, w + 4 * PAGE) == 0,
	      "SET_WRITER -1: every window stores again");
	CHECK(set_writer(fd, -2) == EINVAL, "SET_WRITER -2 is EINVAL");
	CHECK(set_writer(fd, 999999) == ESRCH, "SET_WRITER of no process is ESRCH");
	CHECK(strcmp(w, "before the handoff") == 0, "no data was lost on the way");
	munmap(w, GiB);
	close(go[0]);
	close(go[1]);
	close(done[0]);
	close(done[1]);
	close(fd);
}

/* The findings of the first module's review, each reproduced. */

/* The region count once the module's worker has freed what was let go. */
static int settled_regions(void)
{
	int n = count_regions(), i;

	for (i = 0; i < 40; i++) {
		usleep(50000);
		if (count_regions() == n)
			break;
		n = count_regions();
	}
	return n;
}

static void test_review_findings(void)
{
	struct rlimit old, low;
	char path[64], *w;
	int fd, opath, again, before, dev, i, used[64], nused = 0;
	pid_t pid;
	int status;

	/* CREATE at the descriptor limit: EMFILE, nothing leaked or freed twice. */
	before = settled_regions();
	getrlimit(RLIMIT_NOFILE, &old);
	dev = open(MSHAREFS_KMOD_DEVICE, O_RDWR);
	while (nused < 64) {
		int d = dup(0);

		if (d < 0)
			break;
		used[nused++] = d;
	}
	/* Every descriptor below the limit is taken now. */
	low = old;
	low.rlim_cur = (rlim_t)used[nused - 1] + 1;
	setrlimit(RLIMIT_NOFILE, &low);
	{
		struct msharefs_kmod_create c = { .size = GiB };

		CHECK(dev >= 0 && ioctl(dev, MSHAREFS_KMOD_CREATE, &c) == -1 && errno == EMFILE,
		      "CREATE at the descriptor limit is EMFILE");
	}
	setrlimit(RLIMIT_NOFILE, &old);
	for (i = 0; i < nused; i++)
		close(used[i]);
	if (dev >= 0)
		close(dev);
	CHECK(settled_regions() == before, "and leaves no region behind (%d, was %d)", count_regions(), before);

	/* An O_PATH descriptor keeps the region: reopened after every other file closed. */
	fd = region_create(GiB);
	range_op(fd, MSHAREFS_KMOD_MAP, 0, MiB, PROT_READ | PROT_WRITE);
	w = window(fd, GiB);
	if (w)
		strcpy(w, "kept by O_PATH");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	opath = open(path, O_PATH);
	if (w)
		munmap(w, GiB);
	close(fd);
	usleep(100000);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", opath);
	again = open(path, O_RDWR);
	w = again >= 0 ? window(again, GiB) : NULL;
	CHECK(w && strcmp(w, "kept by O_PATH") == 0, "a reopen through an O_PATH descriptor finds the region intact");
	if (w)
		munmap(w, GiB);
	if (again >= 0)
		close(again);
	close(opath);

	/* The host exits: windows keep the region's memory and data. */
	{
		int sv[2];
		char *shared;

		shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
		pid = fork();
		if (pid == 0) {
			int r = region_create(GiB);
			char *hw;
			union {
				struct cmsghdr h;
				char buf[CMSG_SPACE(sizeof(int))];
			} u;
			struct iovec iov = { .iov_base = "r", .iov_len = 1 };
			struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
					      .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };

			range_op(r, MSHAREFS_KMOD_MAP, 0, MiB, PROT_READ | PROT_WRITE);
			hw = window(r, GiB);
			strcpy(hw, "written by the host");
			munmap(hw, GiB);
			u.h.cmsg_level = SOL_SOCKET;
			u.h.cmsg_type = SCM_RIGHTS;
			u.h.cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(&u.h), &r, sizeof(int));
			sendmsg(sv[0], &msg, 0);
			_exit(0);
		}
		{
			union {
				struct cmsghdr h;
				char buf[CMSG_SPACE(sizeof(int))];
			} u;
			char c;
			struct iovec iov = { .iov_base = &c, .iov_len = 1 };
			struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
					      .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
			int r = -1;

			if (recvmsg(sv[1], &msg, 0) == 1)
				memcpy(&r, CMSG_DATA(&u.h), sizeof(int));
			waitpid(pid, &status, 0);
			w = r >= 0 ? window(r, GiB) : NULL;
			CHECK(w && strcmp(w, "written by the host") == 0,
			      "after the host process exited, a new window shows its data");
			if (w) {
				strcpy(w + PAGE, "after the host");
				CHECK(strcmp(w + PAGE, "after the host") == 0, "and takes new stores");
				munmap(w, GiB);
			}
			if (r >= 0)
				close(r);
		}
		close(sv[0]);
		close(sv[1]);
		munmap(shared, PAGE);
	}

	/* Root only: the device and /proc/msharefs_kmod. */
	pid = fork();
	if (pid == 0) {
		if (setgid(65534) || setuid(65534))
			_exit(3);
		if (open(MSHAREFS_KMOD_DEVICE, O_RDWR) >= 0 || errno != EACCES)
			_exit(1);
		if (open("/proc/msharefs_kmod", O_RDONLY) >= 0 || errno != EACCES)
			_exit(2);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "uid 65534 can open neither the device nor /proc/msharefs_kmod (status %d)", status);
}

static uint64_t windows_of(int fd)
{
	return region_stats(fd).windows;
}

static void test_module_lifetime(void)
{
	int fd = region_create(GiB);
	int status;

	status = system("rmmod msharefs_kmod 2>/dev/null");
	CHECK(status != 0, "rmmod is refused while a region exists");
	close(fd);
}

static void test_killed_attachers(void)
{
	int fd = region_create(GiB), i;
	pid_t pids[4];

	range_op(fd, MSHAREFS_KMOD_MAP, 0, GiB, PROT_READ | PROT_WRITE);
	for (i = 0; i < 4; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			char *w = window(fd, GiB);

			for (uint64_t off = 0;; off = (off + 7 * PAGE) % GiB)
				w[off]++;
		}
	}
	/* They attach as soon as they run (which takes a while on a loaded host). */
	for (i = 0; i < 200 && windows_of(fd) < 4; i++)
		usleep(50000);
	usleep(300000);
	CHECK(windows_of(fd) == 4, "4 attachers are attached (%llu)", (unsigned long long)windows_of(fd));
	for (i = 0; i < 4; i++) {
		kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
	}
	CHECK(windows_of(fd) == 0, "kill -9 of every attacher detaches them all");
	close(fd);
}

/*
 * procs processes each do cycles of attach, write + check a stamp, UNMAP and
 * re-MAP their own 1 MiB slot, PROTECT it read-only and back, detach.
 */
static void test_stress(int procs, int cycles)
{
	int fd = region_create(GiB), i, bad = 0, status;
	pid_t *pids = calloc(procs, sizeof(pid_t));

	for (i = 0; i < procs; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			uint64_t slot = (uint64_t)i * 2 * MiB;

			for (int c = 0; c < cycles; c++) {
				char *w;

				if (range_op(fd, MSHAREFS_KMOD_MAP, slot, MiB, PROT_READ | PROT_WRITE))
					_exit(1);
				w = window(fd, GiB);
				if (!w)
					_exit(2);
				for (uint64_t off = 0; off < MiB; off += PAGE)
					((volatile int *)(w + slot + off))[0] = c;
				if (range_op(fd, MSHAREFS_KMOD_PROTECT, slot, MiB, PROT_READ))
					_exit(3);
				for (uint64_t off = 0; off < MiB; off += PAGE)
					if (((volatile int *)(w + slot + off))[0] != c)
						_exit(4);
				if (range_op(fd, MSHAREFS_KMOD_UNMAP, slot, MiB, 0) || munmap(w, GiB))
					_exit(5);
			}
			_exit(0);
		}
	}
	for (i = 0; i < procs; i++) {
		waitpid(pids[i], &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			bad++;
	}
	CHECK(bad == 0, "stress: %d processes x %d attach/write/PROTECT/UNMAP/detach cycles", procs, cycles);
	CHECK(windows_of(fd) == 0, "stress: no window left attached");
	close(fd);
	free(pids);
}

int main(int argc, char **argv)
{
	stat_refresh_perror = true; /* a failed stat_refresh write says so on stderr */
	if (argc > 1 && !strcmp(argv[1], "--help")) {
		printf("usage: %s [--measure | --measure-16g | --stress]\n"
		       "Runs the msharefs_kmod tests (needs the module loaded); --measure adds the\n"
		       "page-table, fault and PROTECT figures, --measure-16g only the page-table and\n"
		       "fault figures of a 16 GiB region (a guest of 18 GiB), --stress only the\n"
		       "stress test (32 processes, 10,016 cycles).\n",
		       argv[0]);
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "--measure-16g")) {
		setvbuf(stdout, NULL, _IOLBF, 0);
		measure(16 * GiB, 1);
		measure(16 * GiB, 8);
		measure_thp(16 * GiB, 8);
		measure_hugetlb(16 * GiB, 8);
		printf("kmod_selftest: %d failures\n", failures);
		return failures;
	}
	if (argc > 1 && !strcmp(argv[1], "--stress")) {
		setvbuf(stdout, NULL, _IOLBF, 0);
		test_stress(32, 313);
		test_teardown();
		printf("kmod_selftest: %d failures\n", failures);
		return failures;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	test_refusals();
	test_sharing();
	test_introspection();
	test_unsized_reopen_seal();
	test_review_findings();
	test_handoff();
	test_killed_attachers();
	test_module_lifetime();
	test_teardown();
	test_stress(8, 100);
	measure(GiB, 1);
	measure(GiB, 8);
	if (argc > 1 && !strcmp(argv[1], "--measure")) {
		measure(GiB, 32);
		measure(4 * GiB, 1);
		measure(4 * GiB, 8);
		measure(4 * GiB, 32);
		measure_offset(GiB, 8);
		measure_offset(4 * GiB, 8);
		measure_thp(GiB, 8);
		measure_thp(4 * GiB, 8);
		measure_hugetlb(GiB, 8);
		measure_hugetlb(4 * GiB, 8);
		measure_many(128);
		handoff_latency(GiB);
		double one = protect_latency(GiB, 1);

		protect_latency(GiB, 8);
		protect_latency(GiB, 32);
		double many = protect_latency(GiB, 256);

		/* Guest times are TCG times: only the shape is checked. */
		CHECK(many <= 3 * one + 2, "PROTECT is flat in the number of attachers (%.2f ms for 1, %.2f for 256)",
		      one, many);
	}
	printf("kmod_selftest: %d failures\n", failures);
	return failures;
}
