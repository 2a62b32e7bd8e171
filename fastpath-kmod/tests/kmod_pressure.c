// SPDX-License-Identifier: GPL-2.0
/*
 * kmod_pressure: msharefs_kmod regions under memory pressure, swap to zram,
 * compaction and memory cgroups. Run as root in a QEMU guest with the module
 * and zram loaded (fastpath-kmod/qemu/run-guest.sh --kmod zram); the guest
 * should have 2 GiB and a few CPUs. Each check prints "ok" or "not ok" with
 * what it saw; the last line counts the failures and the exit status is 1
 * when there was any. Progress lines start with the scenario's name.
 *
 *   kmod_pressure [--help] [stress] [memcg] [pageout]
 *
 * Without a scenario all three run, in that order:
 *
 *   stress   The parent creates (hosts) a 1 GiB region, 256 MiB mapped
 *            read-write at 0 and 64 MiB of scratch at 512 MiB, and forks
 *            workers that each map a window of their own (half of them
 *            2 MiB but not 1 GiB aligned: offset windows): 4 writers that
 *            stamp every page of their 64 MiB slice and verify it in passes,
 *            a process that forks short-lived attachers (some SIGKILLed),
 *            one that PROTECTs, UNMAPs and MAPs the scratch area and
 *            madvise()s its window (DONTNEED, PAGEOUT, COLD), and an
 *            anonymous memory hog, while the parent compacts memory every
 *            200 ms. Checks: no lost write, swap was used, and after the
 *            teardown no region is left and MemFree is back within 3%.
 *   memcg    A region hosted by a process in one memory cgroup and written
 *            by a process in another is charged to the host's cgroup; with
 *            memory.max lowered it goes to swap and reads back intact.
 *   pageout  MADV_PAGEOUT through a window puts the region's pages in swap;
 *            another process reads them back intact.
 *
 * Swap is /dev/zram0 (1 GiB), set up here and swapped off at the end of each
 * scenario; its absence is a failure, not a skip.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msharefs_kmod.h"
#include "kmod_test.h"

#define ZRAM "/sys/block/zram0"
#define CGROOT "/sys/fs/cgroup"
#define GLOBAL_ALARM_S 700 /* the guest's --timeout is 800 s, boot included */

/* ---- the parent's watchdog: a hang becomes a failure, never a stuck guest ---- */

static pid_t kids[64];
static int nkids;
static const char *volatile phase = "start";

static void add_kid(pid_t pid)
{
	if (pid > 0 && nkids < (int)(sizeof(kids) / sizeof(kids[0])))
		kids[nkids++] = pid;
}

static void forget_kid(pid_t pid)
{
	for (int i = 0; i < nkids; i++)
		if (kids[i] == pid) {
			kids[i] = kids[--nkids];
			return;
		}
}

static void on_global_alarm(int sig)
{
	char buf[256];
	int n;

	(void)sig;
	for (int i = 0; i < nkids; i++)
		kill(kids[i], SIGKILL);
	n = snprintf(buf, sizeof(buf),
		     "not ok - kmod_pressure: still running after %d s (in %s): children killed, giving up\n"
		     "kmod_pressure: %d failures\n",
		     GLOBAL_ALARM_S, phase, failures + 1);
	if (write(STDOUT_FILENO, buf, (size_t)n) < 0)
		_exit(1);
	_exit(1);
}

/* In a child: own alarm (default action: killed by SIGALRM), dies with its parent. */
static void child_setup(unsigned int alarm_s)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGALRM, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	nkids = 0;
	alarm(alarm_s);
}

static pid_t fork_kid(unsigned int alarm_s)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		printf("not ok - fork: %s\n", strerror(errno));
		failures++;
	} else if (pid == 0) {
		child_setup(alarm_s);
	} else {
		add_kid(pid);
	}
	return pid;
}

static const char *describe(int status)
{
	static char buf[96];

	if (WIFEXITED(status))
		snprintf(buf, sizeof(buf), "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
		snprintf(buf, sizeof(buf), "killed by SIGALRM: hung past its alarm");
	else if (WIFSIGNALED(status))
		snprintf(buf, sizeof(buf), "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, sizeof(buf), "status 0x%x", status);
	return buf;
}

static int reap(pid_t pid)
{
	int status = -1;

	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	forget_kid(pid);
	return status;
}

static bool exited_ok(int status)
{
	return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ---- helpers (the ones the other guest tests use too are in kmod_test.h) ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long swap_used_kb(void)
{
	return meminfo_kb("SwapTotal") - meminfo_kb("SwapFree");
}

/* Writes s to path; 0 or the errno. */
static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), err = 0;
	ssize_t len = (ssize_t)strlen(s);

	if (fd < 0)
		return errno;
	if (write(fd, s, (size_t)len) != len)
		err = errno ? errno : EIO;
	close(fd);
	return err;
}

/* The first number in path, or -1. */
static long read_long(const char *path)
{
	char buf[64];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	if (!strncmp(buf, "max", 3))
		return -2;
	return strtol(buf, NULL, 10);
}

/* The sum over CPUs of a line of /proc/interrupts ("CAL", "TLB"), or -1. */
static long interrupts(const char *name)
{
	FILE *f = fopen("/proc/interrupts", "r");
	char line[4096], *p, *end;
	size_t n = strlen(name);
	long sum = -1;

	while (f && fgets(line, sizeof(line), f)) {
		for (p = line; *p == ' '; p++)
			;
		if (strncmp(p, name, n) || p[n] != ':')
			continue;
		sum = 0;
		for (p += n + 1;; p = end) {
			long v = strtol(p, &end, 10);

			if (end == p)
				break;
			sum += v;
		}
	}
	if (f)
		fclose(f);
	return sum;
}

static void compact(void)
{
	int err = write_str("/proc/sys/vm/compact_memory", "1");

	if (err)
		printf("# compact_memory: %s\n", strerror(err));
}

static void drop_caches(void)
{
	sync();
	write_str("/proc/sys/vm/drop_caches", "3");
}

static int region_create(uint64_t size)
{
	int dev = open(MSHAREFS_KMOD_DEVICE, O_RDWR | O_CLOEXEC);

	if (dev < 0) {
		printf("# open %s: %s\n", MSHAREFS_KMOD_DEVICE, strerror(errno));
		return -1;
	}
	return region_create_with(dev, size);
}

/* Waits up to ms for /proc/msharefs_kmod to list no region; the count. */
static int wait_no_regions(int ms)
{
	int n = count_regions();

	for (int waited = 0; n != 0 && waited < ms; waited += 50) {
		usleep(50000);
		n = count_regions();
	}
	return n;
}

/* An offset pattern: three words of each page encode the page's offset. */
#define PAT 0x5a17c0de00000000ULL

static void pat_write(char *page, uint64_t off)
{
	volatile uint64_t *q = (volatile uint64_t *)page;

	q[0] = off ^ PAT;
	q[256] = ~off;
	q[511] = off + 1;
}

/* Checks the pattern of every page of [start, start + len) of w; mismatches. */
static long pat_check(const char *w, uint64_t start, uint64_t len, const char *who)
{
	long bad = 0;

	for (uint64_t off = start; off < start + len; off += PAGE) {
		const volatile uint64_t *q = (const volatile uint64_t *)(w + off);
		uint64_t a = q[0], b = q[256], c = q[511];

		if (a != (off ^ PAT) || b != ~off || c != off + 1) {
			if (bad < 5)
				printf("%s: page at offset 0x%llx: found %#llx %#llx %#llx, want %#llx %#llx %#llx\n", who,
				       (unsigned long long)off, (unsigned long long)a, (unsigned long long)b,
				       (unsigned long long)c, (unsigned long long)(off ^ PAT),
				       (unsigned long long)~off, (unsigned long long)(off + 1));
			bad++;
		}
	}
	return bad;
}

/* ---- swap on zram0 ---- */

static bool swap_on(const char *who)
{
	long total;
	int err;

	if (access(ZRAM, F_OK)) {
		CHECK(0, "%s: %s exists (zram loaded: run-guest.sh --kmod zram)", who, ZRAM);
		return false;
	}
	if (meminfo_kb("SwapTotal") > 0) {
		printf("# %s: swap is on already (SwapTotal %ld kB)\n", who, meminfo_kb("SwapTotal"));
		return true;
	}
	if (read_long(ZRAM "/disksize") <= 0 && (err = write_str(ZRAM "/disksize", "1G"))) {
		CHECK(0, "%s: write 1G to %s/disksize: %s", who, ZRAM, strerror(err));
		return false;
	}
	fflush(stdout);
	err = system("mkswap /dev/zram0 >/dev/null && swapon /dev/zram0");
	total = meminfo_kb("SwapTotal");
	CHECK(err == 0 && total > 0, "%s: swap on /dev/zram0 (mkswap + swapon status %d, SwapTotal %ld MiB)", who, err,
	      total / 1024);
	return err == 0 && total > 0;
}

static bool swap_off(const char *who)
{
	int err;

	fflush(stdout);
	err = system("swapoff /dev/zram0");
	CHECK(err == 0 && meminfo_kb("SwapTotal") == 0, "%s: swapoff /dev/zram0 (status %d)", who, err);
	return err == 0;
}

/* ================= 1. stress under memory pressure ================= */

#define ST_REGION GiB
#define ST_RW (256 * MiB)
#define ST_SCRATCH_OFF (512 * MiB)
#define ST_SCRATCH (64 * MiB)
#define ST_WRITERS 4
#define ST_SLICE (ST_RW / ST_WRITERS)
#define ST_PASSES 6
#define ST_MAGIC 0x6d73686172656673ULL /* "msharefs" */
#define HOG_CHUNK (64 * MiB)

struct ctrl {
	int stop;
	long done[ST_WRITERS]; /* passes each writer has written and verified */
	long lost;
	long hog_chunks, hog_bad;
	long churn_children, churn_killed, churn_bad, churn_scratch_segv;
	long madv_loops, madv_errors, madv_einval[3];
	long madv_us[4]; /* time spent in PROTECT, UNMAP + MAP, madvise of the slices, DONTNEED of scratch */
};

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define ADD(x, v) __atomic_add_fetch(&(x), (v), __ATOMIC_ACQ_REL)

/* Waits until the hog has filled n more chunks (or max_s passed, or stop). */
static void wait_pressure(struct ctrl *c, long n, double max_s)
{
	long start = LOAD(c->hog_chunks);
	double deadline = now_s() + max_s;

	while (!LOAD(c->stop) && LOAD(c->hog_chunks) < start + n && now_s() < deadline)
		usleep(50000);
}

static void stamp_write(char *page, uint64_t off, uint64_t gen)
{
	volatile uint64_t *s = (volatile uint64_t *)page;

	s[0] = ST_MAGIC;
	s[1] = off;
	s[2] = gen;
	s[3] = ST_MAGIC ^ off ^ gen;
}

static int writer_main(int fd, int id, struct ctrl *c)
{
	/* Odd writers use offset windows (PMD links), even ones PUD-aligned windows. */
	char *w = id % 2 ? offset_window(fd, ST_REGION) : window(fd, ST_REGION);
	uint64_t base = (uint64_t)id * ST_SLICE;
	long printed = 0;

	if (!w) {
		printf("pressure: writer %d: mmap of a window: %s\n", id, strerror(errno));
		return 2;
	}
	for (uint64_t gen = 1; gen <= ST_PASSES && !LOAD(c->stop); gen++) {
		long bad = 0;

		for (uint64_t off = base; off < base + ST_SLICE; off += PAGE)
			stamp_write(w + off, off, gen);
		/* Let the hog, PAGEOUT and compaction work on the slice, then verify it. */
		wait_pressure(c, 8, 30);
		for (uint64_t off = base; off < base + ST_SLICE; off += PAGE) {
			const volatile uint64_t *s = (const volatile uint64_t *)(w + off);
			uint64_t m = s[0], o = s[1], g = s[2], k = s[3];

			if (m == ST_MAGIC && o == off && g == gen && k == (ST_MAGIC ^ off ^ gen))
				continue;
			bad++;
			if (printed++ < 8)
				printf("pressure: writer %d pass %llu: LOST WRITE at offset 0x%llx: found magic %#llx "
				       "offset 0x%llx gen %llu check %#llx (read again: magic %#llx offset 0x%llx gen %llu)\n",
				       id, (unsigned long long)gen, (unsigned long long)off, (unsigned long long)m,
				       (unsigned long long)o, (unsigned long long)g, (unsigned long long)k,
				       (unsigned long long)s[0], (unsigned long long)s[1], (unsigned long long)s[2]);
		}
		if (bad)
			ADD(c->lost, bad);
		STORE(c->done[id], (long)gen);
	}
	return 0;
}

/* Verifies the stamp of the page at off as another process sees it; false if wrong. */
static bool stamp_seen_ok(const char *w, uint64_t off, struct ctrl *c, const char *who)
{
	long d = LOAD(c->done[off / ST_SLICE]);
	const volatile uint64_t *s = (const volatile uint64_t *)(w + off);
	uint64_t m, o, g;

	if (d < 1)
		return true; /* its first pass is still being written */
	m = s[0];
	o = s[1];
	g = s[2];
	/* A stamp only moves forward: at least the generation verified before this read. */
	if (m == ST_MAGIC && o == off && g >= (uint64_t)d && g <= ST_PASSES)
		return true;
	printf("pressure: %s: WRONG STAMP at offset 0x%llx: magic %#llx offset 0x%llx gen %llu "
	       "(writer had verified gen %ld)\n",
	       who, (unsigned long long)off, (unsigned long long)m, (unsigned long long)o, (unsigned long long)g, d);
	return false;
}

static sigjmp_buf segv_env;
static volatile sig_atomic_t in_scratch;

static void on_segv(int sig)
{
	if (in_scratch)
		siglongjmp(segv_env, 1);
	signal(sig, SIG_DFL); /* a fault outside the scratch area: die of it */
}

/* A short-lived attacher: reads stamps, maybe stores into the scratch area. */
static int churn_child(int fd, struct ctrl *c, uint32_t seed, bool forever)
{
	char *w = seed % 2 ? offset_window(fd, ST_REGION) : window(fd, ST_REGION);
	uint32_t r = seed * 2654435761u + 1;
	char who[48];

	if (!w) {
		printf("pressure: churn child: mmap of a window: %s\n", strerror(errno));
		return 2;
	}
	snprintf(who, sizeof(who), "churn child %u", seed);
	signal(SIGSEGV, on_segv);
	do {
		for (int k = 0; k < 16; k++) {
			r = r * 1103515245u + 12345u;
			if (!stamp_seen_ok(w, ((r >> 4) % (ST_RW / PAGE)) * PAGE, c, who))
				return 3;
		}
		if (forever || seed % 2 == 0) {
			/* The scratch area may be read-only or a hole right now: SIGSEGV is fine there. */
			in_scratch = 1;
			if (sigsetjmp(segv_env, 1) == 0) {
				for (int k = 0; k < 8; k++) {
					r = r * 1103515245u + 12345u;
					*(volatile uint64_t *)(w + ST_SCRATCH_OFF + ((r >> 4) % (ST_SCRATCH / PAGE)) * PAGE) =
						seed;
				}
			} else {
				ADD(c->churn_scratch_segv, 1);
			}
			in_scratch = 0;
		}
	} while (forever);
	return 0;
}

static int churn_main(int fd, struct ctrl *c)
{
	for (uint32_t i = 0; !LOAD(c->stop); i++) {
		bool killme = i % 3 == 2;
		int status;
		pid_t pid;

		fflush(stdout);
		pid = fork();
		if (pid == 0) {
			child_setup(60);
			_exit(churn_child(fd, c, i, killme));
		}
		if (pid < 0) {
			usleep(100000);
			continue;
		}
		if (killme) {
			usleep(20000 + (i * 7919u) % 60000);
			kill(pid, SIGKILL);
		}
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		ADD(c->churn_children, 1);
		if (killme && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
			ADD(c->churn_killed, 1);
		} else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			printf("pressure: churn child %u (%s): %s\n", i, killme ? "to be killed" : "short", describe(status));
			ADD(c->churn_bad, 1);
		}
	}
	return 0;
}

static void madv_error(struct ctrl *c, const char *what, int err)
{
	if (ADD(c->madv_errors, 1) <= 8)
		printf("pressure: madvise process: %s: %s\n", what, strerror(err));
}

/* PROTECT, UNMAP + MAP of the scratch area; DONTNEED, PAGEOUT, COLD on its window. */
/* Adds the time since *t to the category's total; an operation over 2 s is reported. */
static void timed(struct ctrl *c, int cat, double *t, const char *what, uint64_t loop)
{
	double now = now_s();

	ADD(c->madv_us[cat], (long)((now - *t) * 1e6));
	if (now - *t > 2.0)
		printf("pressure: madvise process: %s took %.1f s (loop %llu)\n", what, now - *t,
		       (unsigned long long)loop);
	*t = now;
}

static int madv_main(int fd, struct ctrl *c)
{
	char *w = window(fd, ST_REGION);
	static const int advice[3] = { MADV_DONTNEED, MADV_PAGEOUT, MADV_COLD };
	static const char *const names[3] = { "MADV_DONTNEED", "MADV_PAGEOUT", "MADV_COLD" };
	double t;
	int err;

	if (!w) {
		printf("pressure: madvise process: mmap of a window: %s\n", strerror(errno));
		return 2;
	}
	for (uint64_t i = 0; !LOAD(c->stop); i++) {
		uint64_t piece = ST_SCRATCH_OFF + (i % (ST_SCRATCH / (2 * MiB))) * 2 * MiB;

		t = now_s();
		if ((err = range_op(fd, MSHAREFS_KMOD_PROTECT, ST_SCRATCH_OFF, ST_SCRATCH, PROT_READ)))
			madv_error(c, "PROTECT scratch read-only", err);
		timed(c, 0, &t, "PROTECT scratch read-only", i);
		(void)*(volatile char *)(w + piece + PAGE);
		timed(c, 0, &t, "a read of read-only scratch", i);
		if ((err = range_op(fd, MSHAREFS_KMOD_PROTECT, ST_SCRATCH_OFF, ST_SCRATCH, PROT_READ | PROT_WRITE)))
			madv_error(c, "PROTECT scratch read-write", err);
		timed(c, 0, &t, "PROTECT scratch read-write", i);
		if ((err = range_op(fd, MSHAREFS_KMOD_UNMAP, piece, 2 * MiB, 0)))
			madv_error(c, "UNMAP 2 MiB of scratch", err);
		timed(c, 1, &t, "UNMAP 2 MiB of scratch", i);
		if ((err = range_op(fd, MSHAREFS_KMOD_MAP, piece, 2 * MiB, PROT_READ | PROT_WRITE)))
			madv_error(c, "MAP 2 MiB of scratch", err);
		timed(c, 1, &t, "MAP 2 MiB of scratch", i);
		*(volatile uint64_t *)(w + piece) = i;
		timed(c, 1, &t, "a store into the remapped piece", i);

		for (int a = 0; a < 3; a++) {
			/* An 8 MiB range of the writers' slices. */
			uint64_t off = ((i * (2 * a + 3) + (uint64_t)a * 11) % (ST_RW / (8 * MiB))) * 8 * MiB;

			if (!stamp_seen_ok(w, off, c, "madvise process")) /* a read: relinks the window there */
				ADD(c->lost, 1);
			timed(c, 2, &t, "a read of a stamp", i);
			if (madvise(w + off, 8 * MiB, advice[a])) {
				if (errno == EINVAL)
					ADD(c->madv_einval[a], 1);
				else
					madv_error(c, names[a], errno);
			}
			timed(c, 2, &t, names[a], i);
		}
		if (madvise(w + ST_SCRATCH_OFF, ST_SCRATCH, MADV_DONTNEED) && errno != EINVAL)
			madv_error(c, "MADV_DONTNEED of scratch", errno);
		timed(c, 3, &t, "MADV_DONTNEED of scratch", i);
		ADD(c->madv_loops, 1);
		usleep(10000);
	}
	return 0;
}

static int hog_main(struct ctrl *c, uint64_t total)
{
	int n = (int)(total / HOG_CHUNK);
	char **chunks = calloc((size_t)n, sizeof(char *));
	uint64_t *gens = calloc((size_t)n, sizeof(uint64_t));

	write_str("/proc/self/oom_score_adj", "1000");
	if (!chunks || !gens)
		return 2;
	for (uint64_t i = 0; !LOAD(c->stop); i++) {
		int k = (int)(i % (uint64_t)n);
		char *p;

		if (chunks[k]) {
			/* Check a few of its pages (swap-ins), then give it back. */
			for (uint64_t off = 0; off < HOG_CHUNK; off += HOG_CHUNK / 64)
				if (*(volatile uint64_t *)(chunks[k] + off) != (gens[k] << 32 | off / PAGE))
					ADD(c->hog_bad, 1);
			munmap(chunks[k], HOG_CHUNK);
			chunks[k] = NULL;
		}
		p = mmap(NULL, HOG_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			usleep(100000);
			continue;
		}
		for (uint64_t off = 0; off < HOG_CHUNK; off += PAGE)
			*(volatile uint64_t *)(p + off) = i << 32 | off / PAGE;
		chunks[k] = p;
		gens[k] = i;
		ADD(c->hog_chunks, 1);
		usleep(20000);
	}
	return 0;
}

enum { W0, CHURN = ST_WRITERS, MADV, HOG, NWORKERS };
static const char *worker_name(int i)
{
	static char buf[16];

	if (i < ST_WRITERS) {
		snprintf(buf, sizeof(buf), "writer %d", i);
		return buf;
	}
	return i == CHURN ? "churn" : i == MADV ? "madvise" : "hog";
}

static void test_stress(void)
{
	struct ctrl *c = mmap(NULL, sizeof(struct ctrl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[NWORKERS];
	int status[NWORKERS], fd, err, left, regions;
	bool writers_ok = true;
	long before, after, avail, peak_swap = 0, last_done = -1, min_done, cal0, tlb0;
	uint64_t min_resident = UINT64_MAX, max_resident = 0;
	uint64_t hog_total;
	double t0, last_print, deadline;
	struct msharefs_kmod_stats st;

	phase = "stress: setup";
	printf("# stress: a 1 GiB region, 256 MiB read-write + 64 MiB scratch, %d writers x %d passes, "
	       "churn, madvise, hog, compaction\n",
	       ST_WRITERS, ST_PASSES);
	if (c == MAP_FAILED || !swap_on("stress"))
		return;
	drop_caches();
	before = settled_memfree_kb();
	avail = meminfo_kb("MemAvailable");
	/* All that is available less 96 MiB, plus the region's 320 MiB: ~ 224 MiB too much. */
	hog_total = avail > 0 ? ((uint64_t)avail * 1024 - 96 * MiB) / HOG_CHUNK * HOG_CHUNK : 1152 * MiB;
	if (hog_total < 4 * HOG_CHUNK)
		hog_total = 4 * HOG_CHUNK;
	printf("# stress: MemFree %ld MiB, MemAvailable %ld MiB before the region; the hog cycles %llu MiB\n",
	       before / 1024, avail / 1024, (unsigned long long)(hog_total / MiB));

	fd = region_create(ST_REGION);
	CHECK(fd >= 0, "stress: the parent creates (hosts) a 1 GiB region");
	if (fd < 0) {
		swap_off("stress");
		return;
	}
	err = range_op(fd, MSHAREFS_KMOD_MAP, 0, ST_RW, PROT_READ | PROT_WRITE);
	CHECK(err == 0, "stress: MAP 256 MiB read-write at 0 (%s)", strerror(err));
	err = range_op(fd, MSHAREFS_KMOD_MAP, ST_SCRATCH_OFF, ST_SCRATCH, PROT_READ | PROT_WRITE);
	CHECK(err == 0, "stress: MAP 64 MiB of scratch at 512 MiB (%s)", strerror(err));
	t0 = now_s();
	range_op(fd, MSHAREFS_KMOD_PROTECT, ST_SCRATCH_OFF, ST_SCRATCH, PROT_READ);
	range_op(fd, MSHAREFS_KMOD_PROTECT, ST_SCRATCH_OFF, ST_SCRATCH, PROT_READ | PROT_WRITE);
	printf("# stress: PROTECT of the (empty) scratch area read-only and back, no load: %.0f ms\n",
	       (now_s() - t0) * 1e3);

	phase = "stress: workers running";
	t0 = last_print = now_s();
	cal0 = interrupts("CAL");
	tlb0 = interrupts("TLB");
	for (int i = 0; i < NWORKERS; i++) {
		pids[i] = fork_kid(i == HOG ? 500 : 450);
		status[i] = -1;
		if (pids[i] == 0) {
			int rc = i < ST_WRITERS ? writer_main(fd, i, c)
				 : i == CHURN	? churn_main(fd, c)
				 : i == MADV	? madv_main(fd, c)
						: hog_main(c, hog_total);
			fflush(stdout);
			_exit(rc);
		}
	}

	/* Compact every 200 ms and sample swap until the writers are done. */
	for (left = ST_WRITERS; left > 0;) {
		long used, k;
		pid_t pid;
		int s;

		compact();
		used = swap_used_kb();
		if (used > peak_swap)
			peak_swap = used;
		while ((pid = waitpid(-1, &s, WNOHANG)) > 0) {
			forget_kid(pid);
			for (int i = 0; i < NWORKERS; i++)
				if (pids[i] == pid) {
					status[i] = s;
					pids[i] = 0;
					if (i < ST_WRITERS)
						left--;
					else
						printf("pressure: the %s process ended early: %s\n", worker_name(i),
						       describe(s));
				}
		}
		min_done = ST_PASSES;
		for (k = 0; k < ST_WRITERS; k++)
			if (LOAD(c->done[k]) < min_done)
				min_done = LOAD(c->done[k]);
		st = region_stats(fd);
		if (st.resident_pages > max_resident)
			max_resident = st.resident_pages;
		if (min_done >= 1 && st.resident_pages < min_resident)
			min_resident = st.resident_pages;
		if (min_done != last_done || now_s() - last_print > 15) {
			printf("pressure: pass %ld/%d after %.0f s, swap used %ld MiB (peak %ld), region resident %llu MiB, "
			       "hog %ld chunks, churn %ld children (%ld killed), madvise %ld loops\n",
			       min_done, ST_PASSES, now_s() - t0, used / 1024, peak_swap / 1024,
			       (unsigned long long)(st.resident_pages * PAGE / MiB), LOAD(c->hog_chunks),
			       LOAD(c->churn_children), LOAD(c->churn_killed), LOAD(c->madv_loops));
			fflush(stdout);
			last_done = min_done;
			last_print = now_s();
		}
		if (left > 0)
			usleep(200000);
	}

	/*
	 * Stop the others: the flag (they finish their current step: a PAGEOUT
	 * of 8 MiB has taken 40 s of TCG time with 4 vCPUs busy), then
	 * SIGTERM, then SIGKILL; the hog is killed at once.
	 */
	phase = "stress: stopping";
	STORE(c->stop, 1);
	if (pids[HOG] > 0)
		kill(pids[HOG], SIGKILL);
	deadline = now_s() + 90;
	for (int i = ST_WRITERS; i < NWORKERS; i++) {
		while (pids[i] > 0 && now_s() < deadline) {
			int s;

			if (waitpid(pids[i], &s, WNOHANG) == pids[i]) {
				forget_kid(pids[i]);
				status[i] = s;
				pids[i] = 0;
			} else {
				usleep(50000);
			}
		}
		if (pids[i] > 0) {
			kill(pids[i], SIGTERM);
			usleep(200000);
			kill(pids[i], SIGKILL);
			status[i] = reap(pids[i]);
			if (i != HOG)
				printf("pressure: the %s process did not stop within 90 s: killed\n", worker_name(i));
			pids[i] = 0;
		}
	}
	printf("pressure: all stopped after %.0f s; %ld function-call and %ld TLB-shootdown IPIs meanwhile; region "
	       "resident at most %llu MiB, at least %llu MiB once the slices were written\n",
	       now_s() - t0, interrupts("CAL") - cal0, interrupts("TLB") - tlb0,
	       (unsigned long long)(max_resident * PAGE / MiB),
	       (unsigned long long)(min_resident == UINT64_MAX ? 0 : min_resident * PAGE / MiB));

	for (int i = 0; i < ST_WRITERS; i++)
		if (!exited_ok(status[i])) {
			writers_ok = false;
			printf("pressure: writer %d: %s\n", i, describe(status[i]));
		}
	CHECK(writers_ok, "stress: %d writers each wrote and verified %d passes over 64 MiB", ST_WRITERS, ST_PASSES);
	CHECK(LOAD(c->lost) == 0, "stress: no lost write (%ld pages found wrong)", LOAD(c->lost));
	CHECK(LOAD(c->churn_bad) == 0 && LOAD(c->churn_children) >= 3,
	      "stress: %ld short-lived attachers (%ld SIGKILLed mid-loop, %ld refused scratch stores) read good "
	      "stamps, %ld did not",
	      LOAD(c->churn_children), LOAD(c->churn_killed), LOAD(c->churn_scratch_segv), LOAD(c->churn_bad));
	CHECK(exited_ok(status[CHURN]), "stress: the churn process stopped cleanly (%s)", describe(status[CHURN]));
	CHECK(LOAD(c->madv_errors) == 0 && LOAD(c->madv_loops) > 0 && exited_ok(status[MADV]),
	      "stress: %ld loops of PROTECT, UNMAP + MAP and madvise without an error (%ld errors, %s; EINVAL from "
	      "DONTNEED %ld, PAGEOUT %ld, COLD %ld)",
	      LOAD(c->madv_loops), LOAD(c->madv_errors), describe(status[MADV]), LOAD(c->madv_einval[0]),
	      LOAD(c->madv_einval[1]), LOAD(c->madv_einval[2]));
	CHECK(LOAD(c->hog_chunks) > 0 && LOAD(c->hog_bad) == 0 && WIFSIGNALED(status[HOG]) &&
		      WTERMSIG(status[HOG]) == SIGKILL,
	      "stress: the hog filled %ld chunks of 64 MiB (%ld bad words read back) until killed (%s)",
	      LOAD(c->hog_chunks), LOAD(c->hog_bad), describe(status[HOG]));
	CHECK(peak_swap > 0, "stress: swap was used during the run (peak SwapTotal-SwapFree %ld MiB)",
	      peak_swap / 1024);

	printf("# stress: the madvise process spent %.1f s in PROTECT, %.1f s in UNMAP + MAP, %.1f s in madvise "
	       "of the slices, %.1f s in MADV_DONTNEED of scratch\n",
	       LOAD(c->madv_us[0]) / 1e6, LOAD(c->madv_us[1]) / 1e6, LOAD(c->madv_us[2]) / 1e6,
	       LOAD(c->madv_us[3]) / 1e6);
	st = region_stats(fd);
	printf("# stress: region stats: %llu resident pages, %llu table pages, %llu windows, %llu faults\n",
	       (unsigned long long)st.resident_pages, (unsigned long long)st.table_pages,
	       (unsigned long long)st.windows, (unsigned long long)st.faults);
	CHECK(st.windows == 0, "stress: no window left attached (%llu)", (unsigned long long)st.windows);

	phase = "stress: teardown";
	close(fd);
	regions = wait_no_regions(2000);
	CHECK(regions == 0, "stress: /proc/msharefs_kmod lists no region 2 s after the close (%d)", regions);
	drop_caches();
	swap_off("stress");
	drop_caches();
	after = settled_memfree_kb();
	for (int i = 0; i < 25 && labs(after - before) > before * 3 / 100; i++) {
		compact();
		usleep(200000);
		after = meminfo_kb("MemFree");
	}
	CHECK(labs(after - before) <= before * 3 / 100,
	      "stress: MemFree back within 3%% after the teardown (%ld -> %ld MiB)", before / 1024, after / 1024);
	munmap(c, sizeof(*c));
}

/* ================= 2. memory cgroup charging ================= */

static int send_fd(int sock, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct iovec iov = { .iov_base = "r", .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };

	memset(&u, 0, sizeof(u));
	u.h.cmsg_level = SOL_SOCKET;
	u.h.cmsg_type = SCM_RIGHTS;
	u.h.cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(&u.h), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	char ch;
	struct iovec iov = { .iov_base = &ch, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	int fd = -1;

	if (recvmsg(sock, &msg, 0) == 1 && CMSG_FIRSTHDR(&msg) && CMSG_FIRSTHDR(&msg)->cmsg_type == SCM_RIGHTS)
		memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
	return fd;
}

static int join_cgroup(const char *name)
{
	char path[128], pid[32];

	snprintf(path, sizeof(path), CGROOT "/%s/cgroup.procs", name);
	snprintf(pid, sizeof(pid), "%d", getpid());
	return write_str(path, pid);
}

static long cg_long(const char *name, const char *file)
{
	char path[160];

	snprintf(path, sizeof(path), CGROOT "/%s/%s", name, file);
	return read_long(path);
}

static int cg_write(const char *name, const char *file, const char *value)
{
	char path[160];

	snprintf(path, sizeof(path), CGROOT "/%s/%s", name, file);
	return write_str(path, value);
}

static bool cgroup_setup(void)
{
	char buf[256] = "";
	FILE *f;
	bool mounted = false;
	int err;

	f = fopen("/proc/mounts", "r");
	while (f && fgets(buf, sizeof(buf), f))
		if (strstr(buf, " " CGROOT " cgroup2 "))
			mounted = true;
	if (f)
		fclose(f);
	if (!mounted) {
		mkdir(CGROOT, 0755);
		err = mount("none", CGROOT, "cgroup2", 0, NULL) ? errno : 0;
		CHECK(err == 0, "memcg: mount -t cgroup2 none " CGROOT " (%s)", strerror(err));
		if (err)
			return false;
	}
	err = write_str(CGROOT "/cgroup.subtree_control", "+memory");
	CHECK(err == 0, "memcg: +memory in " CGROOT "/cgroup.subtree_control (%s)", strerror(err));
	if (err)
		return false;
	for (int i = 0; i < 2; i++) {
		const char *name = i ? CGROOT "/attacher" : CGROOT "/owner";

		err = mkdir(name, 0755) && errno != EEXIST ? errno : 0;
		CHECK(err == 0, "memcg: mkdir %s (%s)", name, strerror(err));
		if (err)
			return false;
	}
	err = access(CGROOT "/owner/memory.max", F_OK) ? errno : 0;
	CHECK(err == 0, "memcg: the memory controller's files are there (owner/memory.max: %s)", strerror(err));
	return err == 0;
}

#define CG_MAPPED (128 * MiB)

static void test_memcg(void)
{
	int sv[2], quit[2], fd, err, st;
	long own0, att0, own1, att1, own2 = -1, swap0, swapc, swapfree0, bad;
	pid_t host, pid;
	double t;

	phase = "memcg: setup";
	printf("# memcg: a region hosted in cgroup owner, written from cgroup attacher\n");
	if (!cgroup_setup() || !swap_on("memcg"))
		return;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(quit)) {
		CHECK(0, "memcg: socketpair and pipe (%s)", strerror(errno));
		return;
	}
	host = fork_kid(400);
	if (host == 0) {
		int r, e;
		char ch;

		close(sv[1]);
		close(quit[1]);
		if ((e = join_cgroup("owner"))) {
			printf("memcg: host: join owner: %s\n", strerror(e));
			_exit(2);
		}
		r = region_create(GiB);
		if (r < 0 || range_op(r, MSHAREFS_KMOD_MAP, 0, CG_MAPPED, PROT_READ | PROT_WRITE)) {
			printf("memcg: host: CREATE + MAP 128 MiB: %s\n", strerror(errno));
			_exit(3);
		}
		if (send_fd(sv[0], r))
			_exit(4);
		close(r);
		/* The host's mm keeps the region's memory: stay until told. */
		if (read(quit[0], &ch, 1) < 0)
			_exit(5);
		_exit(0);
	}
	close(sv[0]);
	close(quit[0]);
	fd = recv_fd(sv[1]);
	close(sv[1]);
	CHECK(fd >= 0, "memcg: a host child in cgroup owner created a region and passed its descriptor");
	if (fd < 0)
		goto out;
	own0 = cg_long("owner", "memory.current");
	att0 = cg_long("attacher", "memory.current");

	phase = "memcg: attacher writes";
	t = now_s();
	pid = fork_kid(300);
	if (pid == 0) {
		char *w;

		if (join_cgroup("attacher") || !(w = window(fd, GiB)))
			_exit(2);
		for (uint64_t off = 0; off < CG_MAPPED; off += PAGE)
			pat_write(w + off, off);
		_exit(0);
	}
	st = reap(pid);
	CHECK(exited_ok(st), "memcg: an attacher in cgroup attacher wrote every page of 128 MiB (%s, %.0f s)",
	      describe(st), now_s() - t);
	own1 = cg_long("owner", "memory.current");
	att1 = cg_long("attacher", "memory.current");
	printf("# memcg: memory.current: owner %ld -> %ld KiB, attacher %ld -> %ld KiB\n", own0 / 1024, own1 / 1024,
	       att0 / 1024, att1 / 1024);
	CHECK(own0 >= 0 && own1 - own0 >= (long)(100 * MiB),
	      "memcg: the host's cgroup (owner) is charged: memory.current grew by %ld MiB (>= 100)",
	      (own1 - own0) / (long)MiB);
	CHECK(att0 >= 0 && att1 - att0 < (long)(16 * MiB),
	      "memcg: the writer's cgroup (attacher) is not: memory.current grew by %ld KiB (< 16 MiB)",
	      (att1 - att0) / 1024);

	phase = "memcg: memory.max 32M";
	swapfree0 = meminfo_kb("SwapFree");
	swap0 = cg_long("owner", "memory.swap.current");
	t = now_s();
	err = cg_write("owner", "memory.max", "32M");
	CHECK(err == 0, "memcg: owner's memory.max set to 32M (%s, the write took %.1f s)", strerror(err), now_s() - t);
	for (int i = 0; i < 50; i++) {
		own2 = cg_long("owner", "memory.current");
		if (own2 >= 0 && own2 <= (long)(40 * MiB))
			break;
		usleep(200000);
	}
	CHECK(own2 >= 0 && own2 <= (long)(40 * MiB), "memcg: owner's memory.current went down to %ld MiB (<= 40)",
	      own2 / (long)MiB);
	swapc = cg_long("owner", "memory.swap.current");
	if (swap0 >= 0 && swapc >= 0) {
		CHECK(swapc >= (long)(64 * MiB), "memcg: owner's memory.swap.current is %ld MiB (>= 64): pushed to swap",
		      swapc / (long)MiB);
	} else {
		long dropped = swapfree0 - meminfo_kb("SwapFree");

		CHECK(dropped >= 64 * 1024, "memcg: SwapFree dropped by %ld MiB (>= 64; no memory.swap.current)",
		      dropped / 1024);
	}

	phase = "memcg: reader";
	t = now_s();
	pid = fork_kid(300);
	if (pid == 0) {
		char *w;

		if (join_cgroup("attacher") || !(w = window(fd, GiB)))
			_exit(2);
		bad = pat_check(w, 0, CG_MAPPED, "memcg: reader");
		_exit(bad ? 3 : 0);
	}
	st = reap(pid);
	CHECK(exited_ok(st),
	      "memcg: another attacher reads all 128 MiB back intact from swap under owner's 32M limit (%s, %.0f s; "
	      "owner now %ld MiB)",
	      describe(st), now_s() - t, cg_long("owner", "memory.current") / (long)MiB);
	err = cg_write("owner", "memory.max", "max");
	CHECK(err == 0, "memcg: owner's memory.max back to max (%s)", strerror(err));
	close(fd);

out:
	phase = "memcg: cleanup";
	if (write(quit[1], "q", 1) < 0)
		kill(host, SIGKILL);
	close(quit[1]);
	st = reap(host);
	CHECK(exited_ok(st), "memcg: the host child exits when told (%s)", describe(st));
	err = wait_no_regions(2000);
	CHECK(err == 0, "memcg: no region left (%d)", err);
	for (int i = 0; i < 2; i++) {
		const char *name = i ? CGROOT "/attacher" : CGROOT "/owner";
		int tries = 0;

		while (rmdir(name) && errno == EBUSY && tries++ < 20)
			usleep(100000);
	}
	swap_off("memcg");
}

/* ================= 3. MADV_PAGEOUT through a window ================= */

#define PO_MAPPED (64 * MiB)

static void test_pageout(void)
{
	int fd, err, st;
	long free0, free1 = 0, dropped = 0, cal0;
	double t;
	pid_t pid;

	phase = "pageout: setup";
	printf("# pageout: MADV_PAGEOUT of 64 MiB through another process's window\n");
	if (!swap_on("pageout"))
		return;
	fd = region_create(GiB);
	err = fd < 0 ? errno : range_op(fd, MSHAREFS_KMOD_MAP, 0, PO_MAPPED, PROT_READ | PROT_WRITE);
	CHECK(fd >= 0 && err == 0, "pageout: CREATE a 1 GiB region, MAP 64 MiB read-write (%s)", strerror(err));
	if (fd < 0 || err)
		goto out;

	pid = fork_kid(200);
	if (pid == 0) {
		char *w = window(fd, GiB);

		if (!w)
			_exit(2);
		for (uint64_t off = 0; off < PO_MAPPED; off += PAGE)
			pat_write(w + off, off);
		_exit(0);
	}
	st = reap(pid);
	CHECK(exited_ok(st), "pageout: a child fills 64 MiB through its window (%s)", describe(st));

	phase = "pageout: MADV_PAGEOUT";
	free0 = meminfo_kb("SwapFree");
	cal0 = interrupts("CAL");
	t = now_s();
	pid = fork_kid(200);
	if (pid == 0) {
		char *w = window(fd, GiB);
		long sum = 0;

		if (!w)
			_exit(2);
		/* Reads link the window to the region's tables; then page it all out. */
		for (uint64_t off = 0; off < PO_MAPPED; off += PAGE)
			sum += *(volatile char *)(w + off);
		if (madvise(w, PO_MAPPED, MADV_PAGEOUT)) {
			printf("pageout: madvise(MADV_PAGEOUT) of the window: %s\n", strerror(errno));
			_exit(3);
		}
		_exit(sum == -1 ? 4 : 0);
	}
	st = reap(pid);
	CHECK(exited_ok(st), "pageout: another process's madvise(window, 64 MiB, MADV_PAGEOUT) returns 0 (%s)",
	      describe(st));
	printf("# pageout: read + MADV_PAGEOUT of 64 MiB took %.1f s, %ld function-call IPIs\n", now_s() - t,
	       interrupts("CAL") - cal0);
	for (int i = 0; i < 25; i++) {
		free1 = meminfo_kb("SwapFree");
		dropped = free0 - free1;
		if (dropped >= 32 * 1024)
			break;
		usleep(200000);
	}
	CHECK(dropped >= 32 * 1024, "pageout: SwapFree dropped by %ld MiB (>= 32): the region's pages went to swap",
	      dropped / 1024);

	phase = "pageout: read back";
	pid = fork_kid(200);
	if (pid == 0) {
		char *w = window(fd, GiB);

		if (!w)
			_exit(2);
		_exit(pat_check(w, 0, PO_MAPPED, "pageout: reader") ? 3 : 0);
	}
	st = reap(pid);
	CHECK(exited_ok(st), "pageout: a third process reads all 64 MiB back intact (%s; SwapFree now %ld MiB)",
	      describe(st), meminfo_kb("SwapFree") / 1024);
	close(fd);
	err = wait_no_regions(2000);
	CHECK(err == 0, "pageout: no region left (%d)", err);
out:
	swap_off("pageout");
}

int main(int argc, char **argv)
{
	bool run[3] = { false, false, false }, any = false;
	static const char *const names[3] = { "stress", "memcg", "pageout" };

	for (int i = 1; i < argc; i++) {
		int k;

		if (!strcmp(argv[i], "--help")) {
			printf("usage: %s [stress] [memcg] [pageout]\n"
			       "Runs msharefs_kmod regions under memory pressure, swap to /dev/zram0, compaction\n"
			       "and memory cgroups (as root, in a guest with the module and zram loaded); without\n"
			       "an argument all three scenarios run.\n",
			       argv[0]);
			return 0;
		}
		for (k = 0; k < 3 && strcmp(argv[i], names[k]); k++)
			;
		if (k == 3) {
			fprintf(stderr, "%s: unknown argument '%s' (try --help)\n", argv[0], argv[i]);
			return 2;
		}
		run[k] = any = true;
	}
	if (!any)
		run[0] = run[1] = run[2] = true;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, on_global_alarm);
	alarm(GLOBAL_ALARM_S);
	write_str("/proc/self/oom_score_adj", "-1000");
	if (access(MSHAREFS_KMOD_DEVICE, F_OK)) {
		CHECK(0, "%s exists (the module is loaded)", MSHAREFS_KMOD_DEVICE);
	} else {
		double t;

		if (run[0]) {
			t = now_s();
			test_stress();
			printf("# stress: %.0f s\n", now_s() - t);
		}
		if (run[1]) {
			t = now_s();
			test_memcg();
			printf("# memcg: %.0f s\n", now_s() - t);
		}
		if (run[2]) {
			t = now_s();
			test_pageout();
			printf("# pageout: %.0f s\n", now_s() - t);
		}
	}
	alarm(0);
	printf("kmod_pressure: %d failures\n", failures);
	return failures ? 1 : 0;
}
