// SPDX-License-Identifier: GPL-2.0
/*
 * kmod_users: the kernel's other users of memory, on msharefs_kmod windows.
 * Run as root in a QEMU guest with msharefs_kmod loaded
 * (fastpath-kmod/qemu/run-guest.sh). Every check is a behaviour an ordinary
 * MAP_SHARED shmem mapping has: process-shared futexes, /proc/PID/mem,
 * process_vm_readv/writev, vmsplice, O_DIRECT, io_uring fixed buffers, the
 * protection of read-only windows, addresses, refusals that keep the window
 * working, madvise and fork inheritance. Each check prints "ok" or "not ok"
 * with what it saw; the last line counts the failures and the exit status is
 * 1 when there was any.
 *
 * Each item uses a 1 GiB region with its first 64 MiB mapped read-write;
 * "another process" is a forked child that maps its own window of the region
 * (not the mapping it inherited) unless the check says "inherited".
 *
 *   kmod_users [--help] [--memfd]
 *
 * --memfd runs the same checks on a 1 GiB memfd mapped MAP_SHARED instead of
 * a module window (a sanity check of the test itself, on any machine); the
 * window-only checks (alignment, refusals of mremap/munmap/mprotect) are
 * skipped there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/magic.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msharefs_kmod.h"
#include "kmod_test.h"

#define REGION_SIZE GiB /* each item's region; every window maps all of it */
#define MAPPED_SIZE (64 * MiB) /* mapped read-write at offset 0 of each region */

/* Whether the running kernel is at least major.minor. */
static int kernel_at_least(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	if (uname(&u) || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return 1;
	return ma > major || (ma == major && mi >= minor);
}

static bool memfd_mode; /* --memfd: a memfd instead of a module region */

#define SKIP(...)                                                               \
	do {                                                                    \
		printf("ok - # SKIP " __VA_ARGS__);                             \
		printf("\n");                                                   \
		fflush(stdout);                                                 \
	} while (0)

/* ---- helpers (the ones the other guest tests use too are in kmod_test.h) ---- */

static int dev_fd(void)
{
	int fd = open(MSHAREFS_KMOD_DEVICE, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		perror(MSHAREFS_KMOD_DEVICE);
		printf("not ok - open %s: %s\n", MSHAREFS_KMOD_DEVICE, strerror(errno));
		printf("kmod_users: %d failures\n", failures + 1);
		exit(1);
	}
	return fd;
}

static int region_create(uint64_t size)
{
	return region_create_with(dev_fd(), size);
}

/* A new 1 GiB region with MAPPED_SIZE mapped read-write, or a memfd. */
static int region_new(void)
{
	int fd, err;

	if (memfd_mode) {
		fd = memfd_create("kmod_users", MFD_CLOEXEC);
		if (fd >= 0 && ftruncate(fd, (off_t)REGION_SIZE)) {
			err = errno;
			close(fd);
			errno = err;
			return -1;
		}
		return fd;
	}
	fd = region_create(REGION_SIZE);
	if (fd < 0)
		return -1;
	err = range_op(fd, MSHAREFS_KMOD_MAP, 0, MAPPED_SIZE, PROT_READ | PROT_WRITE);
	if (err) {
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

struct region {
	int fd;
	char *w; /* the parent's own read-write window */
};

static bool region_setup(struct region *r, const char *item)
{
	r->w = NULL;
	r->fd = region_new();
	if (r->fd >= 0)
		r->w = window(r->fd, REGION_SIZE);
	if (!r->w) {
		CHECK(0, "%s: create and attach a region (%s)", item, strerror(errno));
		if (r->fd >= 0)
			close(r->fd);
		return false;
	}
	return true;
}

static void region_teardown(struct region *r)
{
	munmap(r->w, REGION_SIZE);
	close(r->fd);
}

/*
 * The watchdog of an item: a module that hangs the parent (a fault that never
 * resolves, a futex that never wakes) makes that item fail after its
 * timeout and the next item runs; the item's children are killed.
 */
static sigjmp_buf item_env;
static char item_message[128]; /* written by the watchdog, made before */
static pid_t item_children[16];
static int item_nchildren;

static void item_timeout(int sig)
{
	(void)sig;
	if (write(STDOUT_FILENO, item_message, strlen(item_message)) < 0) {
		/* nothing better to do */
	}
	for (int i = 0; i < item_nchildren; i++)
		kill(item_children[i], SIGKILL);
	siglongjmp(item_env, 1);
}

static const char *only_item; /* --only NAME */

static void run_item(const char *name, void (*fn)(void), unsigned int timeout_s)
{
	struct sigaction sa = { .sa_handler = item_timeout }; /* no SA_RESTART: waits end */

	if (only_item && strcmp(name, only_item))
		return;

	snprintf(item_message, sizeof(item_message), "not ok - %s: timed out (hung for %u s), its children killed\n",
		 name, timeout_s);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	item_nchildren = 0;
	if (sigsetjmp(item_env, 1) == 0) {
		alarm(timeout_s);
		fn();
	} else {
		failures++;
		fflush(stdout);
		signal(SIGSEGV, SIG_DFL); /* in case it hung inside probe() */
		signal(SIGBUS, SIG_DFL);
	}
	alarm(0);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		; /* children of an item that timed out */
}

/* Children: fork with stdout flushed; a child's status, or 128+signal. */
static pid_t fork_child(unsigned int alarm_s)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		signal(SIGALRM, SIG_DFL); /* not the parent's watchdog */
		alarm(alarm_s);		  /* a hang becomes a failure (status 128+SIGALRM) */
	} else if (item_nchildren < (int)(sizeof(item_children) / sizeof(item_children[0]))) {
		item_children[item_nchildren++] = pid;
	}
	return pid;
}

static int status_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int reap(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return status_code(status);
}

/* Deterministic bytes: index i of a buffer filled with seed. */
static uint8_t pat(uint32_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)seed + 1) * 0xBF58476D1CE4E5B9ULL;

	x ^= x >> 31;
	x *= 0x94D049BB133111EBULL;
	x ^= x >> 29;
	return (uint8_t)x;
}

static void fill(void *p, size_t len, uint32_t seed)
{
	uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		b[i] = pat(seed, i);
}

/* The first index that is not the pattern, or -1. */
static long mismatch(const void *p, size_t len, uint32_t seed)
{
	const volatile uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i] != pat(seed, i))
			return (long)i;
	return -1;
}

static bool matches(const void *p, size_t len, uint32_t seed)
{
	return mismatch(p, len, seed) < 0;
}

/* Another process, with its own PROT_READ window, sees the pattern at off. */
static int seen_by_child_of(int fd, uint64_t region_size, uint64_t off, size_t len, uint32_t seed)
{
	pid_t pid = fork_child(20);

	if (pid == 0) {
		char *cw = window_prot(fd, region_size, PROT_READ);

		if (!cw)
			_exit(2);
		_exit(matches(cw + off, len, seed) ? 0 : 4);
	}
	return reap(pid);
}

static int seen_by_child(int fd, uint64_t off, size_t len, uint32_t seed)
{
	return seen_by_child_of(fd, REGION_SIZE, off, len, seed);
}

/* A child stores into p (its own window of fd at off when fd >= 0, else the inherited p). */
static int store_in_child(int fd, uint64_t off, char *inherited)
{
	pid_t pid = fork_child(20);

	if (pid == 0) {
		char *p = inherited;

		if (fd >= 0) {
			char *cw = window_prot(fd, REGION_SIZE, PROT_READ);

			if (!cw)
				_exit(2);
			p = cw + off;
		}
		*(volatile char *)p = (char)~*(volatile char *)p;
		_exit(0);
	}
	return reap(pid);
}

/* Loads and stores that report SIGSEGV/SIGBUS instead of dying. */
static sigjmp_buf probe_env;

static void probe_handler(int sig)
{
	siglongjmp(probe_env, sig);
}

/* Returns 0, or the signal the access raised. */
static int probe(volatile char *p, bool store, char value, char *loaded)
{
	struct sigaction sa = { .sa_handler = probe_handler }, old_segv, old_bus;
	volatile int sig;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	sig = sigsetjmp(probe_env, 1);
	if (sig == 0) {
		if (store)
			*p = value;
		else
			*loaded = *p;
	}
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	return sig;
}

/* Every page of [p, p+len) loads without a signal and holds the pattern. */
static bool probe_matches(char *p, size_t len, uint32_t seed)
{
	char c;

	for (size_t off = 0; off < len; off += PAGE)
		if (probe(p + off, false, 0, &c))
			return false;
	if (len && probe(p + len - 1, false, 0, &c))
		return false;
	return matches(p, len, seed);
}

/*
 * After a refused change: the old window still shows the pattern at off, a
 * store into it works and reaches the region (a child's own window sees it).
 * Returns NULL or what went wrong.
 */
static const char *window_still_works(int fd, char *w, uint64_t off, size_t len, uint32_t seed)
{
	static char why[96];
	char c = 0;
	int st;

	if (!probe_matches(w + off, len, seed))
		return "the old data is not there (or a load faults)";
	if (probe(w + off + len, true, 0x5a, NULL))
		return "a store faults";
	if (probe(w + off + len, false, 0, &c) || c != 0x5a)
		return "a stored byte does not read back";
	pid_t pid = fork_child(20);

	if (pid == 0) {
		char *cw = window_prot(fd, REGION_SIZE, PROT_READ);

		_exit(!cw ? 2 : cw[off + len] == 0x5a ? 0 : 4);
	}
	st = reap(pid);
	if (st) {
		snprintf(why, sizeof(why), "another window does not see the store (child status %d)", st);
		return why;
	}
	w[off + len] = 0;
	return NULL;
}

/* A 1 GiB aligned address with 1 GiB free there (nothing is mapped after). */
static char *free_aligned_address(void)
{
	void *res = mmap(NULL, 3 * GiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uintptr_t a;

	if (res == MAP_FAILED)
		return NULL;
	a = ((uintptr_t)res + GiB - 1) & ~(uintptr_t)(GiB - 1);
	munmap(res, 3 * GiB);
	return (char *)a;
}

static bool is_mapped(void *p)
{
	return msync((void *)((uintptr_t)p & ~(PAGE - 1)), PAGE, MS_ASYNC) == 0 || errno != ENOMEM;
}

/* Waits (up to 10 s) until *flag == value. */
static bool wait_flag(volatile int *flag, int value)
{
	for (int i = 0; i < 10000; i++) {
		if (__atomic_load_n(flag, __ATOMIC_SEQ_CST) == value)
			return true;
		usleep(1000);
	}
	return false;
}

/* Has pid exited? (WNOHANG; when it has, its status goes to *st.) */
static bool child_exited(pid_t pid, int *st)
{
	int status;

	if (waitpid(pid, &status, WNOHANG) == pid) {
		*st = status_code(status);
		return true;
	}
	return false;
}

/* ---- 1. process-shared futexes ---- */

static void test_futexes(void)
{
	struct region r;
	int st, st2, early = 0;
	bool blocked;
	pid_t pid, pid2;

	if (!region_setup(&r, "futex"))
		return;

	/* (a) a semaphore */
	sem_t *sem = (sem_t *)(r.w + 0x1000);
	volatile int *state = (volatile int *)(r.w + 0x2000);

	CHECK(sem_init(sem, 1, 0) == 0, "futex: sem_init(pshared=1) in the window");
	pid = fork_child(20);
	if (pid == 0) {
		char *cw = window(r.fd, REGION_SIZE);

		if (!cw)
			_exit(2);
		__atomic_store_n((int *)(cw + 0x2000), 1, __ATOMIC_SEQ_CST);
		if (sem_wait((sem_t *)(cw + 0x1000)))
			_exit(3);
		__atomic_store_n((int *)(cw + 0x2000), 2, __ATOMIC_SEQ_CST);
		_exit(0);
	}
	blocked = wait_flag(state, 1);
	usleep(100000);
	blocked = blocked && !child_exited(pid, &early) && *state == 1;
	sem_post(sem);
	st = early ? early : reap(pid);
	CHECK(blocked, "futex: a child blocks in sem_wait on a pshared semaphore in its own window%s",
	      early ? " (it exited instead)" : "");
	CHECK(st == 0 && *state == 2, "futex: the parent's sem_post wakes it (child status %d, state %d)", st,
	      *state);

	/* (b) a mutex, 2 processes x 20000 increments */
	pthread_mutex_t *mtx = (pthread_mutex_t *)(r.w + 0x3000);
	volatile long *counter = (volatile long *)(r.w + 0x4000);
	pthread_mutexattr_t ma;

	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	CHECK(pthread_mutex_init(mtx, &ma) == 0, "futex: a PTHREAD_PROCESS_SHARED mutex in the window");
	*counter = 0;
	pid_t kids[2];

	for (int k = 0; k < 2; k++) {
		kids[k] = fork_child(40); /* 40000 contended lock/unlock under TCG */
		if (kids[k] == 0) {
			char *cw = window(r.fd, REGION_SIZE);

			if (!cw)
				_exit(2);
			pthread_mutex_t *cm = (pthread_mutex_t *)(cw + 0x3000);
			volatile long *cc = (volatile long *)(cw + 0x4000);

			for (int i = 0; i < 20000; i++) {
				if (pthread_mutex_lock(cm))
					_exit(3);
				long v = *cc; /* not atomic: only the mutex keeps it right */

				if ((i & 63) == 0)
					sched_yield(); /* hold it a while: contention, futex waits */
				*cc = v + 1;
				if (pthread_mutex_unlock(cm))
					_exit(4);
			}
			_exit(0);
		}
	}
	st = reap(kids[0]);
	st2 = reap(kids[1]);
	CHECK(st == 0 && st2 == 0 && *counter == 40000,
	      "futex: 2 processes x 20000 lock/increment/unlock with a pshared mutex: %ld (child status %d, %d)",
	      *counter, st, st2);

	/* (c) a condition variable: the waiter in a child, the signaller here */
	struct cv {
		pthread_mutex_t m;
		pthread_cond_t c;
		int waiting, go, value;
	} *cv = (struct cv *)(r.w + 0x5000);
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
	pthread_mutex_init(&cv->m, &ma);
	CHECK(pthread_cond_init(&cv->c, &ca) == 0, "futex: a PTHREAD_PROCESS_SHARED condition variable in the window");
	cv->waiting = cv->go = cv->value = 0;
	early = 0;
	pid2 = fork_child(20);
	if (pid2 == 0) {
		char *cw = window(r.fd, REGION_SIZE);

		if (!cw)
			_exit(2);
		struct cv *c = (struct cv *)(cw + 0x5000);

		if (pthread_mutex_lock(&c->m))
			_exit(3);
		__atomic_store_n(&c->waiting, 1, __ATOMIC_SEQ_CST);
		while (!c->go)
			if (pthread_cond_wait(&c->c, &c->m))
				_exit(5);
		int v = c->value;

		pthread_mutex_unlock(&c->m);
		_exit(v == 4242 ? 0 : 6);
	}
	blocked = wait_flag(&cv->waiting, 1);
	usleep(100000);
	blocked = blocked && !child_exited(pid2, &early);
	/* The child set waiting under the mutex: holding it now, it is in pthread_cond_wait. */
	pthread_mutex_lock(&cv->m);
	cv->value = 4242;
	cv->go = 1;
	pthread_cond_signal(&cv->c);
	pthread_mutex_unlock(&cv->m);
	st = early ? early : reap(pid2);
	CHECK(blocked, "futex: a child waits in pthread_cond_wait in its own window%s",
	      early ? " (it exited instead)" : "");
	CHECK(st == 0, "futex: pthread_cond_signal in the parent wakes it and it reads the value (child status %d)",
	      st);
	pthread_condattr_destroy(&ca);
	pthread_mutexattr_destroy(&ma);
	region_teardown(&r);
}

/* ---- 2. /proc/PID/mem ---- */

static void test_proc_mem(void)
{
	struct region r;
	const uint64_t roff = MiB + 100, woff = 4 * MiB + 7;
	const size_t len = 200 * KiB;
	pid_t parent = getpid(), pid;
	int st;

	if (!region_setup(&r, "/proc/PID/mem"))
		return;
	fill(r.w + roff, len, 2);
	memset(r.w + woff, 0, len);
	pid = fork_child(20);
	if (pid == 0) {
		char path[64], *buf = malloc(len);
		int fd;

		snprintf(path, sizeof(path), "/proc/%d/mem", parent);
		fd = open(path, O_RDONLY);
		if (fd < 0 || !buf)
			_exit(2);
		if (pread(fd, buf, len, (off_t)(uintptr_t)(r.w + roff)) != (ssize_t)len)
			_exit(3);
		_exit(matches(buf, len, 2) ? 0 : 4);
	}
	st = reap(pid);
	CHECK(st == 0, "/proc/PID/mem: a child's pread at the parent's window address returns its bytes (status %d)",
	      st);

	pid = fork_child(20);
	if (pid == 0) {
		char path[64], *buf = malloc(len);
		int fd;

		snprintf(path, sizeof(path), "/proc/%d/mem", parent);
		fd = open(path, O_RDWR);
		if (fd < 0 || !buf)
			_exit(2);
		fill(buf, len, 3);
		_exit(pwrite(fd, buf, len, (off_t)(uintptr_t)(r.w + woff)) == (ssize_t)len ? 0 : 3);
	}
	st = reap(pid);
	CHECK(st == 0 && matches(r.w + woff, len, 3),
	      "/proc/PID/mem: a child's pwrite into the parent's read-write window is seen by the parent (status %d)",
	      st);
	st = seen_by_child(r.fd, woff, len, 3);
	CHECK(st == 0, "/proc/PID/mem: and by another process's window (status %d)", st);
	region_teardown(&r);
}

/* ---- 3. process_vm_readv / process_vm_writev ---- */

static void test_process_vm(void)
{
	struct region r;
	const uint64_t roff = 2 * MiB + 333, woff = 5 * MiB + 5;
	const size_t len = 300 * KiB;
	pid_t parent = getpid(), pid;
	int st;

	if (!region_setup(&r, "process_vm"))
		return;
	fill(r.w + roff, len, 4);
	memset(r.w + woff, 0, len);
	pid = fork_child(20);
	if (pid == 0) {
		char *buf = malloc(len);
		struct iovec local = { buf, len }, remote = { r.w + roff, len };

		if (!buf)
			_exit(2);
		memset(buf, 0, len);
		if (process_vm_readv(parent, &local, 1, &remote, 1, 0) != (ssize_t)len)
			_exit(3);
		_exit(matches(buf, len, 4) ? 0 : 4);
	}
	st = reap(pid);
	CHECK(st == 0, "process_vm_readv: a child reads the full length of the parent's window, same bytes (status %d)",
	      st);

	pid = fork_child(20);
	if (pid == 0) {
		char *buf = malloc(len);
		struct iovec local = { buf, len }, remote = { r.w + woff, len };

		if (!buf)
			_exit(2);
		fill(buf, len, 5);
		_exit(process_vm_writev(parent, &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : 3);
	}
	st = reap(pid);
	CHECK(st == 0 && matches(r.w + woff, len, 5),
	      "process_vm_writev: a child's write into the parent's window is seen by the parent (status %d)", st);
	st = seen_by_child(r.fd, woff, len, 5);
	CHECK(st == 0, "process_vm_writev: and by another process's window (status %d)", st);
	region_teardown(&r);
}

/* ---- 4. vmsplice ---- */

static ssize_t read_full(int fd, char *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = read(fd, buf + done, len - done);

		if (n <= 0)
			return done ? (ssize_t)done : n;
		done += n;
	}
	return (ssize_t)done;
}

static void test_vmsplice(void)
{
	struct region r;
	const uint64_t off = 6 * MiB;
	const size_t len = 32 * KiB;
	char *buf = malloc(len);
	int p[2];
	ssize_t n, got;

	if (!buf || !region_setup(&r, "vmsplice")) {
		free(buf);
		return;
	}
	fill(r.w + off, len, 6);
	if (pipe(p)) {
		CHECK(0, "vmsplice: pipe (%s)", strerror(errno));
		region_teardown(&r);
		free(buf);
		return;
	}
	struct iovec iov = { r.w + off, len };

	n = vmsplice(p[1], &iov, 1, 0);
	memset(buf, 0, len);
	got = n > 0 ? read_full(p[0], buf, n) : -1;
	CHECK(n == (ssize_t)len && got == n && matches(buf, len, 6),
	      "vmsplice: window pages spliced into a pipe read back with the same bytes (%zd spliced, %zd read)", n,
	      got);

	/* The pipe holds the window's own pages, not copies: a later store shows. */
	n = vmsplice(p[1], &iov, 1, 0);
	r.w[off + 5000] = (char)(0xffu ^ pat(6, 5000));
	got = n > 0 ? read_full(p[0], buf, n) : -1;
	uint8_t marker = (uint8_t)(0xffu ^ pat(6, 5000));
	bool marked = (uint8_t)buf[5000] == marker;

	buf[5000] = (char)pat(6, 5000);
	CHECK(n == (ssize_t)len && got == n && marked && matches(buf, len, 6),
	      "vmsplice: the pipe references the window's pages (a store after vmsplice is read from the pipe)");
	r.w[off + 5000] = (char)pat(6, 5000);
	close(p[0]);
	close(p[1]);
	free(buf);
	region_teardown(&r);
}

/* ---- 5. O_DIRECT ---- */

static const char *fs_name(const char *dir)
{
	struct statfs s;

	if (statfs(dir, &s))
		return "?";
	switch ((unsigned long)s.f_type) {
	case TMPFS_MAGIC:
		return "tmpfs";
	case RAMFS_MAGIC:
		return "ramfs";
	case EXT4_SUPER_MAGIC:
		return "ext2/3/4";
	case 0x58465342:
		return "xfs";
	case 0x9123683e:
		return "btrfs";
	case 0x794c7630:
		return "overlayfs";
	default:
		return "other";
	}
}

/*
 * A 1 MiB file of pattern seed in the first of /tmp, / where O_DIRECT opens;
 * returns its O_DIRECT descriptor (path in path), or -1 (EINVAL everywhere:
 * no file system here does O_DIRECT).
 */
static int odirect_file(uint32_t seed, char *path, size_t pathlen, const char **where)
{
	static const char *dirs[] = { "/tmp", "/" };
	char *buf = malloc(MiB);

	if (!buf)
		return -1;
	fill(buf, MiB, seed);
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		int fd;

		snprintf(path, pathlen, "%s/kmod_users.odirect.%d", strcmp(dirs[i], "/") ? dirs[i] : "", getpid());
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			continue;
		if (write(fd, buf, MiB) != (ssize_t)MiB || fsync(fd)) {
			close(fd);
			unlink(path);
			continue;
		}
		close(fd);
		fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
		if (fd >= 0) {
			*where = dirs[i];
			free(buf);
			return fd;
		}
		unlink(path);
	}
	free(buf);
	return -1;
}

static void test_odirect(void)
{
	struct region r;
	const uint64_t off = 8 * MiB;
	char path[128];
	const char *where = NULL;
	ssize_t n;
	int fd, st;

	if (!region_setup(&r, "O_DIRECT"))
		return;
	fd = odirect_file(7, path, sizeof(path), &where);
	if (fd < 0) {
		SKIP("O_DIRECT unsupported by the guest's filesystems (/tmp: %s, /: %s)", fs_name("/tmp"),
		     fs_name("/"));
		region_teardown(&r);
		return;
	}
	memset(r.w + off, 0xee, MiB);
	n = pread(fd, r.w + off, MiB, 0);
	CHECK(n == (ssize_t)MiB && matches(r.w + off, MiB, 7),
	      "O_DIRECT: a 1 MiB read from a file on %s (%s%s) into the window has the file's bytes (%zd: %s)", where,
	      fs_name(where), strcmp(fs_name(where), "tmpfs") ? "" : ", which copies instead of pinning pages", n,
	      n < 0 ? strerror(errno) : "read");
	st = seen_by_child(r.fd, off, MiB, 7);
	CHECK(st == 0, "O_DIRECT: another process's window sees the data (status %d)", st);
	close(fd);
	unlink(path);
	region_teardown(&r);
}

/* ---- 6. io_uring fixed buffers ---- */

static int uring_setup(unsigned entries, struct io_uring_params *p)
{
	return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int uring_enter(int fd, unsigned submit, unsigned min_complete, unsigned flags)
{
	return (int)syscall(__NR_io_uring_enter, fd, submit, min_complete, flags, NULL, 0);
}

static int uring_register(int fd, unsigned op, void *arg, unsigned nr)
{
	return (int)syscall(__NR_io_uring_register, fd, op, arg, nr);
}

static void test_io_uring(void)
{
	struct region r;
	struct io_uring_params p;
	const uint64_t off = 16 * MiB;
	char path[64], *buf = malloc(MiB);
	void *sq = MAP_FAILED, *cq = MAP_FAILED, *sqes_map = MAP_FAILED;
	size_t sq_sz, cq_sz;
	int ring = -1, file = -1, st;

	if (!buf || !region_setup(&r, "io_uring")) {
		free(buf);
		return;
	}
	memset(&p, 0, sizeof(p));
	ring = uring_setup(4, &p);
	if (ring < 0 && (errno == ENOSYS || errno == EPERM)) {
		SKIP("io_uring unavailable here (io_uring_setup: %s)", strerror(errno));
		goto out;
	}
	CHECK(ring >= 0, "io_uring: io_uring_setup (%s)", ring < 0 ? strerror(errno) : "done");
	if (ring < 0)
		goto out;

	sq_sz = p.sq_off.array + p.sq_entries * sizeof(__u32);
	cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP)
		sq_sz = cq_sz = sq_sz > cq_sz ? sq_sz : cq_sz;
	sq = mmap(NULL, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
	cq = (p.features & IORING_FEAT_SINGLE_MMAP) ? sq :
		mmap(NULL, cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
	sqes_map = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes_map == MAP_FAILED) {
		CHECK(0, "io_uring: map the rings (%s)", strerror(errno));
		goto out;
	}

	/* A regular file (read through the page cache, not O_DIRECT). */
	snprintf(path, sizeof(path), "/tmp/kmod_users.uring.%d", getpid());
	file = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	fill(buf, MiB, 8);
	if (file < 0 || write(file, buf, MiB) != (ssize_t)MiB) {
		CHECK(0, "io_uring: write a 1 MiB file in /tmp (%s)", strerror(errno));
		goto out;
	}

	memset(r.w + off, 0x33, MiB);
	struct iovec iov = { r.w + off, MiB };
	int rc = uring_register(ring, IORING_REGISTER_BUFFERS, &iov, 1);
	int err = errno;

	if (rc && err == EOPNOTSUPP && !kernel_at_least(6, 5)) {
		/* The same refusal any file mapping but shmem and hugetlbfs gets there. */
		printf("ok - # SKIP io_uring: before 6.5 only anonymous, shmem and hugetlbfs memory can be "
		       "registered (EOPNOTSUPP, as for any other file mapping)\n");
		goto out;
	}
	CHECK(rc == 0, "io_uring: IORING_REGISTER_BUFFERS of 1 MiB of the window (%s)",
	      rc ? strerror(err) : "registered");
	if (rc)
		goto out;

	unsigned *sq_tail = (unsigned *)((char *)sq + p.sq_off.tail);
	unsigned *sq_mask = (unsigned *)((char *)sq + p.sq_off.ring_mask);
	unsigned *sq_array = (unsigned *)((char *)sq + p.sq_off.array);
	unsigned *cq_head = (unsigned *)((char *)cq + p.cq_off.head);
	unsigned *cq_tail = (unsigned *)((char *)cq + p.cq_off.tail);
	unsigned *cq_mask = (unsigned *)((char *)cq + p.cq_off.ring_mask);
	struct io_uring_cqe *cqes = (struct io_uring_cqe *)((char *)cq + p.cq_off.cqes);
	struct io_uring_sqe *sqes = sqes_map;
	unsigned tail = __atomic_load_n(sq_tail, __ATOMIC_ACQUIRE), idx = tail & *sq_mask;

	memset(&sqes[idx], 0, sizeof(sqes[idx]));
	sqes[idx].opcode = IORING_OP_READ_FIXED;
	sqes[idx].fd = file;
	sqes[idx].addr = (uintptr_t)(r.w + off);
	sqes[idx].len = MiB;
	sqes[idx].off = 0;
	sqes[idx].buf_index = 0;
	sqes[idx].user_data = 0x6b6d6f64;
	sq_array[idx] = idx;
	__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
	rc = uring_enter(ring, 1, 1, IORING_ENTER_GETEVENTS);
	err = errno;

	unsigned head = __atomic_load_n(cq_head, __ATOMIC_ACQUIRE);
	bool have = head != __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE);
	struct io_uring_cqe cqe = { 0 };

	if (have) {
		cqe = cqes[head & *cq_mask];
		__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
	}
	CHECK(rc == 1 && have && cqe.user_data == 0x6b6d6f64 && cqe.res == (int)MiB,
	      "io_uring: IORING_OP_READ_FIXED of a 1 MiB file completes in full (enter %d%s%s, cqe res %d%s%s)", rc,
	      rc < 0 ? ": " : "", rc < 0 ? strerror(err) : "", cqe.res, cqe.res < 0 ? ": " : "",
	      cqe.res < 0 ? strerror(-cqe.res) : "");
	CHECK(matches(r.w + off, MiB, 8), "io_uring: the fixed buffer in the window has the file's bytes");
	st = seen_by_child(r.fd, off, MiB, 8);
	CHECK(st == 0, "io_uring: another process's window sees them (status %d)", st);
	CHECK(uring_register(ring, IORING_UNREGISTER_BUFFERS, NULL, 0) == 0, "io_uring: IORING_UNREGISTER_BUFFERS");
out:
	if (sqes_map != MAP_FAILED)
		munmap(sqes_map, p.sq_entries * sizeof(struct io_uring_sqe));
	if (cq != MAP_FAILED && cq != sq)
		munmap(cq, cq_sz);
	if (sq != MAP_FAILED)
		munmap(sq, sq_sz);
	if (ring >= 0)
		close(ring);
	if (file >= 0) {
		close(file);
		unlink(path);
	}
	free(buf);
	region_teardown(&r);
}

/* ---- 7. protection of read-only windows ---- */

static void test_readonly(void)
{
	struct region r;
	const uint64_t off = 3 * MiB, doff = 8 * MiB;
	char path[64], odpath[128], *ro, *ro2, *wrong;
	const char *where;
	pid_t parent = getpid(), pid;
	int rofd, st, p[2], odfd;
	ssize_t n;

	if (!region_setup(&r, "read-only"))
		return;
	fill(r.w + off, 64 * KiB, 9);

	/* (a) the region file reopened O_RDONLY */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", r.fd);
	rofd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(rofd >= 0, "read-only: the region file reopens O_RDONLY through /proc/self/fd (%s)",
	      rofd < 0 ? strerror(errno) : "done");
	if (rofd >= 0) {
		ro = window_prot(rofd, REGION_SIZE, PROT_READ);
		CHECK(ro && probe_matches(ro + off, 64 * KiB, 9),
		      "read-only: a PROT_READ window of the O_RDONLY file shows the data");
		st = store_in_child(rofd, off, NULL);
		CHECK(st == 128 + SIGSEGV && matches(r.w + off, 64 * KiB, 9),
		      "read-only: a store into a child's own window of the O_RDONLY file dies with SIGSEGV (status %d), "
		      "data unchanged",
		      st);
		if (ro) {
			st = store_in_child(-1, 0, ro + off);
			CHECK(st == 128 + SIGSEGV && matches(r.w + off, 64 * KiB, 9),
			      "read-only: a store into the inherited one dies with SIGSEGV too (status %d), data unchanged",
			      st);
			CHECK(mprotect(ro, REGION_SIZE, PROT_READ | PROT_WRITE) == -1 && errno == EACCES,
			      "read-only: mprotect(PROT_WRITE) of it is EACCES (%s)", strerror(errno));
			st = store_in_child(-1, 0, ro + off);
			CHECK(st == 128 + SIGSEGV && matches(r.w + off, 64 * KiB, 9),
			      "read-only: and a store still dies with SIGSEGV after it (status %d)", st);
			munmap(ro, REGION_SIZE);
		}
		errno = 0;
		wrong = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, rofd, 0);
		CHECK(wrong == MAP_FAILED && errno == EACCES,
		      "read-only: mmap(PROT_WRITE, MAP_SHARED) of the O_RDONLY file is EACCES (%s)",
		      wrong == MAP_FAILED ? strerror(errno) : "it was mapped");
		if (wrong != MAP_FAILED)
			munmap(wrong, REGION_SIZE);
		close(rofd);
	}

	/* (b) a PROT_READ window of the O_RDWR file */
	ro2 = window_prot(r.fd, REGION_SIZE, PROT_READ);
	CHECK(ro2 && probe_matches(ro2 + off, 64 * KiB, 9),
	      "read-only: a PROT_READ window of the O_RDWR file shows the data");
	st = store_in_child(r.fd, off, NULL);
	CHECK(st == 128 + SIGSEGV && matches(r.w + off, 64 * KiB, 9),
	      "read-only: a store into a child's own PROT_READ window dies with SIGSEGV (status %d), data unchanged",
	      st);
	if (!ro2) {
		region_teardown(&r);
		return;
	}
	st = store_in_child(-1, 0, ro2 + off);
	CHECK(st == 128 + SIGSEGV && matches(r.w + off, 64 * KiB, 9),
	      "read-only: a store into the inherited PROT_READ window dies with SIGSEGV (status %d), data unchanged",
	      st);

	/* (c) the kernel's copies into it fail with EFAULT */
	if (pipe(p) == 0) {
		if (write(p[1], "0123456789abcdef", 16) != 16)
			perror("write to pipe");
		errno = 0;
		n = read(p[0], ro2 + off, 16);
		CHECK(n == -1 && errno == EFAULT && matches(r.w + off, 64 * KiB, 9),
		      "read-only: read() from a pipe into a PROT_READ window is EFAULT (%zd, %s), data unchanged", n,
		      strerror(errno));
		close(p[0]);
		close(p[1]);
	}
	odfd = odirect_file(10, odpath, sizeof(odpath), &where);
	if (odfd >= 0) {
		fill(r.w + doff, 64 * KiB, 9);
		errno = 0;
		n = pread(odfd, ro2 + doff, 64 * KiB, 0);
		CHECK(n == -1 && errno == EFAULT && matches(r.w + doff, 64 * KiB, 9),
		      "read-only: an O_DIRECT read (%s, %s) into a PROT_READ window is EFAULT (%zd, %s), data unchanged",
		      where, fs_name(where), n, strerror(errno));
		close(odfd);
		unlink(odpath);
	} else {
		SKIP("O_DIRECT into a PROT_READ window: O_DIRECT unsupported by the guest's filesystems");
	}

	/* (d) process_vm_writev from another process into it */
	pid = fork_child(20);
	if (pid == 0) {
		char buf[4096];
		struct iovec local = { buf, sizeof(buf) }, remote = { ro2 + off, sizeof(buf) };

		memset(buf, 0x77, sizeof(buf));
		n = process_vm_writev(parent, &local, 1, &remote, 1, 0);
		_exit(n == -1 && errno == EFAULT ? 0 : n >= 0 ? 3 : 4);
	}
	st = reap(pid);
	CHECK(st == 0 && matches(r.w + off, 64 * KiB, 9),
	      "read-only: process_vm_writev into another process's PROT_READ window is EFAULT (status %d: 3 = it "
	      "wrote, 4 = another errno), data unchanged",
	      st);
	munmap(ro2, REGION_SIZE);
	region_teardown(&r);
}

/* ---- 8. addresses ---- */

static void test_addresses(void)
{
	struct region r;
	char *w2, *hint, *at;
	int st;

	if (!region_setup(&r, "addresses"))
		return;
	if (memfd_mode)
		SKIP("addresses: 1 GiB alignment (a module window property; memfd at %p)", (void *)r.w);
	else
		CHECK(((uintptr_t)r.w % GiB) == 0, "addresses: mmap(NULL) gives a 1 GiB aligned window (%p)",
		      (void *)r.w);

	w2 = window(r.fd, REGION_SIZE);
	CHECK(w2 && w2 != r.w, "addresses: a second window of the region in the same process (%p)", (void *)w2);
	if (w2) {
		fill(r.w + 10 * MiB, 16 * KiB, 20);
		fill(w2 + 11 * MiB, 16 * KiB, 21);
		CHECK(matches(w2 + 10 * MiB, 16 * KiB, 20) && matches(r.w + 11 * MiB, 16 * KiB, 21),
		      "addresses: the two windows see each other's stores");
		munmap(w2, REGION_SIZE);
	}

	hint = free_aligned_address();
	at = hint ? mmap(hint, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd, 0) : MAP_FAILED;
	CHECK(hint && at == hint, "addresses: a free 1 GiB aligned hint is taken exactly (hint %p, got %p)",
	      (void *)hint, (void *)at);
	if (at != MAP_FAILED) {
		CHECK(matches(at + 10 * MiB, 16 * KiB, 20), "addresses: the window at the hint shows the data");
		munmap(at, REGION_SIZE);
	}

	/* A child that inherited r.w maps a second window: the two agree. */
	pid_t pid = fork_child(20);

	if (pid == 0) {
		char *cw = window(r.fd, REGION_SIZE);

		if (!cw)
			_exit(2);
		if (!matches(cw + 10 * MiB, 16 * KiB, 20))
			_exit(3);
		fill(r.w + 12 * MiB, 16 * KiB, 22);
		if (!matches(cw + 12 * MiB, 16 * KiB, 22))
			_exit(4);
		fill(cw + 13 * MiB, 16 * KiB, 23);
		if (!matches(r.w + 13 * MiB, 16 * KiB, 23))
			_exit(5);
		if (!memfd_mode && ((uintptr_t)cw % GiB) != 0)
			_exit(6);
		_exit(0);
	}
	st = reap(pid);
	CHECK(st == 0 && matches(r.w + 12 * MiB, 16 * KiB, 22) && matches(r.w + 13 * MiB, 16 * KiB, 23),
	      "addresses: a child with an inherited window maps a second one and the two agree (status %d)", st);
	region_teardown(&r);
}

/* ---- 9. refusals keep the window working ---- */

static void test_refusals(void)
{
	struct region r;
	char *w, *target, *moved;
	const char *why;

	if (memfd_mode) {
		SKIP("refusals: mremap/partial munmap/mprotect are refused only on module windows");
		return;
	}
	if (!region_setup(&r, "refusals"))
		return;
	fill(r.w + MiB, 16 * KiB, 30);
	fill(r.w + 32 * MiB, 16 * KiB, 31);

	/* mremap to another aligned free place */
	w = window(r.fd, REGION_SIZE);
	target = free_aligned_address();
	errno = 0;
	moved = w && target ? mremap(w, REGION_SIZE, REGION_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED, target) :
			      MAP_FAILED;
	CHECK(w && target && moved == MAP_FAILED && errno == EINVAL,
	      "refusals: mremap(MREMAP_MAYMOVE|MREMAP_FIXED) of a window to a free aligned address is EINVAL (%s)",
	      moved == MAP_FAILED ? strerror(errno) : "it moved");
	if (w && target) {
		CHECK(moved != MAP_FAILED || !is_mapped(target), "refusals: nothing is left mapped at the target");
		why = moved != MAP_FAILED ? "it moved" : window_still_works(r.fd, w, MiB, 16 * KiB, 30);
		CHECK(!why, "refusals: after the mremap the old window has the old data and takes stores%s%s",
		      why ? ": " : "", why ? why : "");
		munmap(moved != MAP_FAILED ? moved : w, REGION_SIZE);
	}

	/* a partial munmap */
	w = window(r.fd, REGION_SIZE);
	errno = 0;
	CHECK(w && munmap(w + 32 * MiB, PAGE) == -1 && errno == EINVAL,
	      "refusals: a partial munmap of a window is EINVAL (%s)", strerror(errno));
	if (w) {
		why = window_still_works(r.fd, w, 32 * MiB, 16 * KiB, 31);
		CHECK(!why, "refusals: after it the window (at that page too) has the old data and takes stores%s%s",
		      why ? ": " : "", why ? why : "");
		munmap(w, REGION_SIZE);
	}

	/* mprotect */
	w = window(r.fd, REGION_SIZE);
	errno = 0;
	CHECK(w && mprotect(w, REGION_SIZE, PROT_READ) == -1 && errno == EINVAL,
	      "refusals: mprotect(PROT_READ) of a window is EINVAL (%s)", strerror(errno));
	if (w) {
		why = window_still_works(r.fd, w, MiB, 16 * KiB, 30);
		CHECK(!why, "refusals: after it the window has the old data and takes stores%s%s", why ? ": " : "",
		      why ? why : "");
		munmap(w, REGION_SIZE);
	}
	region_teardown(&r);
}

/*
 * Windows never execute, as files on a noexec mount: an executable window is
 * refused with EPERM, and code stored in a region whose layout says PROT_EXEC
 * faults when a read-write window calls it (NX cannot be set in the PUD
 * entries that windows share, so no host view is executable).
 */
static void test_exec(void)
{
	static const unsigned char ret_insn = 0xc3;
	struct region r;
	void *x;
	pid_t pid;
	int fd, err, st;

	if (memfd_mode) {
		SKIP("exec: windows never execute; a memfd mapping does");
		return;
	}
	fd = region_create(REGION_SIZE);
	err = fd < 0 ? errno : range_op(fd, MSHAREFS_KMOD_MAP, 0, MAPPED_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC);
	CHECK(fd >= 0 && !err, "exec: a region with a PROT_READ|PROT_WRITE|PROT_EXEC mapping (%s)", strerror(err));
	if (fd < 0)
		return;
	r.fd = fd;
	r.w = window(fd, REGION_SIZE);
	if (!r.w) {
		CHECK(0, "exec: a read-write window of it (%s)", strerror(errno));
		close(fd);
		return;
	}
	errno = 0;
	x = mmap(free_aligned_address(), REGION_SIZE, PROT_READ | PROT_EXEC, MAP_SHARED | MAP_FIXED, fd, 0);
	CHECK(x == MAP_FAILED && errno == EPERM, "exec: a PROT_EXEC window is refused with EPERM (%s)",
	      x == MAP_FAILED ? strerror(errno) : "it mapped");
	if (x != MAP_FAILED)
		munmap(x, REGION_SIZE);
	errno = 0;
	CHECK(mprotect(r.w, REGION_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC) == -1,
	      "exec: mprotect(PROT_EXEC) of a window is refused (%s)", strerror(errno));
	fill(r.w + 2 * MiB, 16 * KiB, 33);
	memcpy(r.w + MiB, &ret_insn, 1);
	pid = fork_child(10);
	if (pid == 0) {
		((void (*)(void))(r.w + MiB))();
		_exit(0);
	}
	st = reap(pid);
	CHECK(st == 128 + SIGSEGV, "exec: calling code stored in a read-write window dies with SIGSEGV (status %d)", st);
	CHECK(!window_still_works(r.fd, r.w, 2 * MiB, 16 * KiB, 33), "exec: the window still reads and takes stores");
	region_teardown(&r);
}

/* A value of /proc/meminfo's HugePages_* (a count, not kB). */
static long huge_pages(const char *key)
{
	char line[128];
	long v = -1;
	size_t n = strlen(key);
	FILE *f = fopen("/proc/meminfo", "r");

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && line[n] == ':')
			v = atol(line + n + 1);
	if (f)
		fclose(f);
	return v;
}

/* This process's VmPTE in kB, -1 if unknown. */
static long vm_pte_kb(void)
{
	char line[128];
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmPTE:", 6))
			v = atol(line + 6);
	if (f)
		fclose(f);
	return v;
}

/* Waits up to 5 s for HugePages_Free to be back at free (teardown is async). */
static bool settled_huge_free(long free)
{
	for (int i = 0; i < 500; i++) {
		if (huge_pages("HugePages_Free") == free)
			return true;
		usleep(10000);
	}
	return false;
}

static bool set_nr_hugepages(long n)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "w");

	if (!f)
		return false;
	fprintf(f, "%ld\n", n);
	return fclose(f) == 0;
}

/*
 * Whether the page mapped at p is part of a compound page with flag bit of
 * /proc/kpageflags: 1 or 0, -1 when that cannot be read.
 */
static int kpageflag(const void *p, int bit)
{
	uint64_t entry = 0, flags = 0;
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	int kf = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	int ret = -1;

	if (pm >= 0 && kf >= 0 &&
	    pread(pm, &entry, 8, (off_t)((uintptr_t)p / PAGE * 8)) == 8 && (entry >> 63) &&
	    pread(kf, &flags, 8, (off_t)((entry & ((1ULL << 55) - 1)) * 8)) == 8)
		ret = (flags >> bit & 1) && (flags >> 15 & 3); /* and KPF_COMPOUND_HEAD/TAIL */
	if (pm >= 0)
		close(pm);
	if (kf >= 0)
		close(kf);
	return ret;
}

/* Still part of a hugetlb page (KPF_HUGE)? */
static int in_huge_page(const void *p)
{
	return kpageflag(p, 17);
}

/* Part of a transparent huge page (KPF_THP)? */
static int in_thp(const void *p)
{
	return kpageflag(p, 22);
}

/* The huge page pool of one hugetlb item: grown for it, given back after. */
struct huge_pool {
	const char *item;
	long nr_before;		/* HugePages_Total before the item */
	long free;		/* HugePages_Free once grown */
	long rsvd;		/* HugePages_Rsvd once grown */
};

/* Grows the pool by pages free huge pages for item; false (SKIPped) if not. */
static bool huge_pool_grow(struct huge_pool *pool, const char *item, long pages)
{
	long free_before = huge_pages("HugePages_Free");

	pool->item = item;
	pool->nr_before = huge_pages("HugePages_Total");
	if (memfd_mode) {
		printf("ok - # SKIP %s: module regions only\n", item);
		return false;
	}
	if (pool->nr_before < 0 || !set_nr_hugepages(pool->nr_before + pages) ||
	    huge_pages("HugePages_Free") < free_before + pages) {
		printf("ok - # SKIP %s: no pool of %ld more huge pages here\n", item, pages);
		set_nr_hugepages(pool->nr_before);
		return false;
	}
	pool->free = huge_pages("HugePages_Free");
	pool->rsvd = huge_pages("HugePages_Rsvd");
	return true;
}

/* Closes the item's region and file; every huge page must be back. */
static void huge_pool_end(const struct huge_pool *pool, int fd, int hfd)
{
	if (fd >= 0)
		close(fd);
	if (hfd >= 0)
		close(hfd);
	CHECK(settled_huge_free(pool->free) && huge_pages("HugePages_Rsvd") == pool->rsvd,
	      "%s: every huge page is free and unreserved again once region and file are gone", pool->item);
	set_nr_hugepages(pool->nr_before);
}

static int map_file(int fd, uint64_t off, uint64_t size, uint64_t file_off, int file, uint32_t prot)
{
	struct msharefs_kmod_map_file m = { off, size, file_off, prot, file };

	return ioctl(fd, MSHAREFS_KMOD_MAP_FILE, &m) == 0 ? 0 : errno;
}

/*
 * Huge pages: a hugetlbfs file (a MFD_HUGETLB memfd) mapped into a region
 * across a GiB boundary is backed by 2 MiB pages that sit as PMD entries in
 * the shared tables (no PTE table at all), seen by every window; refused
 * where a cut would split a huge page or where 4 KiB pages had tables.
 */
static void test_hugetlb(void)
{
	const uint64_t size = 64 * MiB, at = GiB - 32 * MiB, pages = size / (2 * MiB);
	struct huge_pool pool;
	struct msharefs_kmod_stats st;
	char *w, c = 0;
	int fd, hfd, err, st_child, mem;
	pid_t pid;

	if (!huge_pool_grow(&pool, "hugetlb", 2 * pages))
		return;
	hfd = hugetlb_memfd(size);
	fd = region_create(2 * GiB);
	CHECK(hfd >= 0 && fd >= 0,
	      "hugetlb: a 64 MiB MFD_HUGETLB memfd and a 2 GiB region (%s)", strerror(errno));
	if (hfd < 0 || fd < 0)
		goto out;
	err = map_file(fd, at + PAGE, size - 2 * MiB, 0, hfd, PROT_READ | PROT_WRITE);
	CHECK(err == EINVAL, "hugetlb: an offset that is not 2 MiB aligned is EINVAL (%s)", strerror(err));
	err = map_file(fd, at, size, 0, hfd, PROT_READ | PROT_WRITE);
	CHECK(!err, "hugetlb: MAP_FILE of it across the GiB boundary (%s)", strerror(err));
	w = window(fd, 2 * GiB);
	CHECK(w != NULL, "hugetlb: a window");
	if (err || !w)
		goto out;
	fill(w + at, size, 41);
	CHECK(huge_pages("HugePages_Free") == pool.free - (long)pages,
	      "hugetlb: the stores took %llu huge pages (free %ld -> %ld)", (unsigned long long)pages,
	      pool.free, huge_pages("HugePages_Free"));
	/*
	 * Only view 0 maps these pages yet (a PROT_READ window would map them in
	 * view 1 too): advice over part of one must not split it as if it were
	 * a THP of that one mapping's own.
	 */
	CHECK(in_huge_page(w + at + 4 * MiB + PAGE) == 1 && in_huge_page(w + at + 6 * MiB + PAGE) == 1,
	      "hugetlb: pagemap and kpageflags show the window's pages in huge pages");
	CHECK(madvise(w + at + 4 * MiB + PAGE, PAGE, MADV_COLD) == 0 &&
		      madvise(w + at + 6 * MiB + PAGE, PAGE, MADV_PAGEOUT) == 0,
	      "hugetlb: COLD and PAGEOUT over part of a huge page that one view maps (%s)", strerror(errno));
	CHECK(in_huge_page(w + at + 4 * MiB + PAGE) == 1 && in_huge_page(w + at + 6 * MiB + PAGE) == 1 &&
		      matches(w + at, size, 41),
	      "hugetlb: and it is still one huge page, data intact (%d %d)",
	      in_huge_page(w + at + 4 * MiB + PAGE), in_huge_page(w + at + 6 * MiB + PAGE));
	st = region_stats(fd);
	CHECK(st.resident_pages >= size / PAGE && st.table_pages <= 2 * 2,
	      "hugetlb: resident %llu pages in %llu page-table pages: PMD tables only, no PTE table",
	      (unsigned long long)st.resident_pages, (unsigned long long)st.table_pages);
	pid = fork_child(30);
	if (pid == 0) {
		long pte_before = vm_pte_kb(), pte_after;
		char *cw = window_prot(fd, 2 * GiB, PROT_READ);

		if (!cw || !matches(cw + at, size, 41))
			_exit(101);
		pte_after = vm_pte_kb();
		/* the kB its tables grew by (at most its PUD table and two parked PMD tables) */
		_exit(pte_after - pte_before > 100 ? 100 : (int)(pte_after - pte_before));
	}
	st_child = reap(pid);
	/* 4 KiB pages would need 32 PTE tables (128 kB) for the 64 MiB. */
	CHECK(st_child >= 0 && st_child <= 12,
	      "hugetlb: another process's window reads it all: its page tables grew by %d kB (<= 12: no PTE table)",
	      st_child);
	mem = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
	CHECK(mem >= 0 && pread(mem, &c, 1, (off_t)(uintptr_t)(w + at + 3 * MiB)) == 1 && c == (char)pat(41, 3 * MiB),
	      "hugetlb: /proc/self/mem reads a huge page of the window");
	if (mem >= 0)
		close(mem);
	/* advice over part of a huge page and over whole ones: data intact */
	CHECK(madvise(w + at + 4 * MiB + PAGE, PAGE, MADV_COLD) == 0 &&
		      madvise(w + at + 6 * MiB + PAGE, PAGE, MADV_PAGEOUT) == 0 &&
		      madvise(w + at + 8 * MiB, 4 * MiB, MADV_COLD) == 0 &&
		      madvise(w + at + 12 * MiB, 4 * MiB, MADV_PAGEOUT) == 0 &&
		      madvise(w + at, size, MADV_DONTNEED) == 0 && madvise(w + at, size, MADV_WILLNEED) == 0,
	      "hugetlb: COLD and PAGEOUT over part of a huge page and over whole ones, DONTNEED, WILLNEED (%s)",
	      strerror(errno));
	CHECK(matches(w + at, size, 41), "hugetlb: the data is intact after the advice");
	err = range_op(fd, MSHAREFS_KMOD_UNMAP, at, PAGE, 0);
	CHECK(err == EINVAL && matches(w + at, size, 41),
	      "hugetlb: UNMAP of part of a huge page is EINVAL, data intact (%s)", strerror(err));
	err = range_op(fd, MSHAREFS_KMOD_PROTECT, at, 2 * MiB, PROT_READ);
	CHECK(!err && probe(w + at, true, 1, NULL) == SIGSEGV && matches(w + at, size, 41),
	      "hugetlb: PROTECT of one huge page read-only: a store faults, data intact (%s)", strerror(err));
	err = range_op(fd, MSHAREFS_KMOD_UNMAP, at + size - 2 * MiB, 2 * MiB, 0);
	CHECK(!err && probe(w + at + size - 2 * MiB, false, 0, &c) == SIGSEGV,
	      "hugetlb: UNMAP of the last huge page: an access faults (%s)", strerror(err));
	/* 4 KiB pages with a table of their own, then huge pages there */
	err = range_op(fd, MSHAREFS_KMOD_MAP, GiB + 512 * MiB, 2 * MiB, PROT_READ | PROT_WRITE);
	if (!err)
		w[GiB + 512 * MiB] = 1;
	if (!err)
		err = range_op(fd, MSHAREFS_KMOD_UNMAP, GiB + 512 * MiB, 2 * MiB, 0);
	err = err ? err : map_file(fd, GiB + 512 * MiB, 2 * MiB, 0, hfd, PROT_READ | PROT_WRITE);
	CHECK(err == EBUSY, "hugetlb: huge pages where 4 KiB pages had a table are EBUSY (%s)", strerror(err));
	munmap(w, 2 * GiB);
out:
	huge_pool_end(&pool, fd, hfd);
}

/*
 * A hugetlbfs file mapped over a whole GiB of the region while another
 * process maps the same file over a whole aligned GiB too: had the view's
 * PMD table been shared with that mapping (huge_pmd_share()), an UNMAP would
 * leave windows on the other process's table. After the UNMAP the window
 * faults, and nothing breaks when the other process exits.
 */
static void test_hugetlb_gib(void)
{
	const long pages = GiB / (2 * MiB);
	struct huge_pool pool;
	char *w = NULL, *other, c = 0;
	int fd = -1, hfd = -1, err, st, go[2] = { -1, -1 }, ready[2] = { -1, -1 };
	pid_t pid = -1;

	if (!huge_pool_grow(&pool, "hugetlb GiB", pages))
		return;
	hfd = hugetlb_memfd(GiB);
	fd = region_create(2 * GiB);
	if (hfd < 0 || fd < 0 || pipe(go) || pipe(ready)) {
		CHECK(0, "hugetlb GiB: a 1 GiB MFD_HUGETLB memfd and a region (%s)", strerror(errno));
		goto out;
	}
	pid = fork_child(60);
	if (pid == 0) {
		close(ready[0]);
		close(go[1]);
		other = mmap(free_aligned_address(), GiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, hfd, 0);
		if (other == MAP_FAILED) {
			printf("# hugetlb GiB: the other process's mmap: %s\n", strerror(errno));
			_exit(2);
		}
		for (uint64_t i = 0; i < GiB; i += 2 * MiB)
			other[i] = (char)(51 + (i >> 21));
		if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(3);
		_exit(0);
	}
	close(ready[1]);
	ready[1] = -1;
	close(go[0]);
	go[0] = -1;
	CHECK(read(ready[0], &c, 1) == 1, "hugetlb GiB: another process maps the file over a whole aligned GiB");
	err = map_file(fd, GiB, GiB, 0, hfd, PROT_READ | PROT_WRITE);
	w = window(fd, 2 * GiB);
	bool seen = !err && w;

	for (uint64_t i = 0; seen && i < GiB; i += 2 * MiB)
		seen = w[GiB + i] == (char)(51 + (i >> 21));
	CHECK(seen,
	      "hugetlb GiB: the region maps the same GiB of the file and a window reads it (%s)", strerror(err));
	err = range_op(fd, MSHAREFS_KMOD_UNMAP, GiB, GiB, 0);
	CHECK(!err && w && probe(w + GiB + 5 * MiB, false, 0, &c) == SIGSEGV,
	      "hugetlb GiB: after UNMAP the window faults there (%s)", strerror(err));
	if (write(go[1], "x", 1) == 1)
		st = reap(pid), pid = -1;
	else
		st = -1;
	CHECK(st == 0, "hugetlb GiB: the other process exits (status %d)", st);
	CHECK(w && probe(w + GiB + 7 * MiB, false, 0, &c) == SIGSEGV,
	      "hugetlb GiB: and the window still faults there, no stale table");
out:
	if (pid > 0)
		reap(pid);
	if (w)
		munmap(w, 2 * GiB);
	for (int i = 0; i < 2; i++) {
		if (go[i] >= 0)
			close(go[i]);
		if (ready[i] >= 0)
			close(ready[i]);
	}
	huge_pool_end(&pool, fd, hfd);
}

/*
 * A hugetlb CREATE_MAPPING the pool cannot reserve, across a GiB boundary
 * (the views map it in pieces) next to 4 KiB memory that windows link: it
 * is ENOMEM before anything changes. No huge page stays reserved for it,
 * the window keeps its data in this and another process, and a mapping
 * that fits works afterwards.
 */
static void test_hugetlb_reserve(void)
{
	const uint64_t at = GiB - 8 * MiB, old = GiB + 512 * MiB;
	struct huge_pool pool;
	char *w = NULL, c = 0;
	int fd, hfd, err;

	if (!huge_pool_grow(&pool, "hugetlb reservation", 5))
		return;
	hfd = hugetlb_memfd(16 * MiB);
	fd = region_create(2 * GiB);
	err = hfd < 0 || fd < 0 ? errno : 0;
	err = err ? err : range_op(fd, MSHAREFS_KMOD_MAP, old, 2 * MiB, PROT_READ | PROT_WRITE);
	err = err ? err : range_op(fd, MSHAREFS_KMOD_MAP, 0, 2 * MiB, PROT_READ | PROT_WRITE);
	w = err ? NULL : window(fd, 2 * GiB);
	CHECK(w != NULL, "hugetlb reservation: a 16 MiB MFD_HUGETLB memfd, a region, 4 KiB memory in both GiBs, a window (%s)",
	      strerror(err));
	if (!w)
		goto out;
	fill(w + old, 2 * MiB, 61);
	fill(w, 2 * MiB, 62);
	err = map_file(fd, at, 16 * MiB, 0, hfd, PROT_READ | PROT_WRITE);
	CHECK(err == ENOMEM, "hugetlb reservation: 8 huge pages from a pool of 5 are ENOMEM (%s)", strerror(err));
	CHECK(huge_pages("HugePages_Rsvd") == pool.rsvd && huge_pages("HugePages_Free") == pool.free,
	      "hugetlb reservation: and nothing stays reserved or taken (reserved %ld -> %ld, free %ld -> %ld)",
	      pool.rsvd, huge_pages("HugePages_Rsvd"), pool.free, huge_pages("HugePages_Free"));
	CHECK(matches(w + old, 2 * MiB, 61) && matches(w, 2 * MiB, 62) &&
		      seen_by_child_of(fd, 2 * GiB, old, 2 * MiB, 61) == 0 && seen_by_child_of(fd, 2 * GiB, 0, 2 * MiB, 62) == 0,
	      "hugetlb reservation: the window and another process's read the 4 KiB memory of both GiBs");
	CHECK(probe(w + at, false, 0, &c) == SIGSEGV && probe(w + GiB + 4 * MiB, false, 0, &c) == SIGSEGV,
	      "hugetlb reservation: the refused range is still a hole");
	err = map_file(fd, at, 8 * MiB, 0, hfd, PROT_READ | PROT_WRITE);
	if (!err)
		fill(w + at, 8 * MiB, 63);
	CHECK(!err && matches(w + at, 8 * MiB, 63) && seen_by_child_of(fd, 2 * GiB, at, 8 * MiB, 63) == 0 &&
		      in_huge_page(w + at) == 1,
	      "hugetlb reservation: 4 huge pages that fit map, in huge pages, seen by another process (%s)",
	      strerror(err));
	munmap(w, 2 * GiB);
out:
	huge_pool_end(&pool, fd, hfd);
}

/*
 * The caller truncates its hugetlbfs file under the region (its pages and
 * their reservation go), then the pool runs dry, then a PROTECT maps the
 * object again in the views: it must not need a reservation it cannot have
 * halfway through (a gap there would be repaired by freeing a table windows
 * link). The PROTECT works, the 4 KiB memory windows link keeps its data,
 * and once the pool has pages again the truncated range reads zeros.
 */
static void test_hugetlb_truncated(void)
{
	const uint64_t at = GiB - 2 * MiB, old = GiB + 512 * MiB;
	struct huge_pool pool;
	char *w = NULL, *hog = MAP_FAILED, c = 0;
	size_t hog_size = 0;
	int fd, hfd, hogfd = -1, err;

	if (!huge_pool_grow(&pool, "hugetlb truncated", 4))
		return;
	hfd = hugetlb_memfd(4 * MiB);
	fd = region_create(2 * GiB);
	err = hfd < 0 || fd < 0 ? errno : 0;
	err = err ? err : range_op(fd, MSHAREFS_KMOD_MAP, old, 2 * MiB, PROT_READ | PROT_WRITE);
	err = err ? err : map_file(fd, at, 4 * MiB, 0, hfd, PROT_READ | PROT_WRITE);
	w = err ? NULL : window(fd, 2 * GiB);
	CHECK(w != NULL, "hugetlb truncated: 2 huge pages across a GiB boundary, 4 KiB memory, a window (%s)",
	      strerror(err));
	if (!w)
		goto out;
	fill(w + old, 2 * MiB, 71);
	fill(w + at, 4 * MiB, 72);
	CHECK(ftruncate(hfd, 0) == 0 && ftruncate(hfd, (off_t)(4 * MiB)) == 0,
	      "hugetlb truncated: the caller truncates its file and extends it again");
	hog_size = (size_t)huge_pages("HugePages_Free") * 2 * MiB;
	hogfd = hog_size ? hugetlb_memfd(hog_size) : -1;
	if (hogfd >= 0)
		hog = mmap(NULL, hog_size, PROT_READ, MAP_SHARED, hogfd, 0);
	CHECK(hog != MAP_FAILED && huge_pages("HugePages_Free") == huge_pages("HugePages_Rsvd"),
	      "hugetlb truncated: another mapping reserves every free huge page (free %ld, reserved %ld)",
	      huge_pages("HugePages_Free"), huge_pages("HugePages_Rsvd"));
	err = range_op(fd, MSHAREFS_KMOD_PROTECT, at, 4 * MiB, PROT_READ);
	CHECK(!err, "hugetlb truncated: PROTECT of the truncated object read-only works (%s)", strerror(err));
	CHECK(matches(w + old, 2 * MiB, 71) && seen_by_child_of(fd, 2 * GiB, old, 2 * MiB, 71) == 0,
	      "hugetlb truncated: the window and another process's read the 4 KiB memory");
	if (hog != MAP_FAILED)
		munmap(hog, hog_size);
	if (hogfd >= 0)
		close(hogfd);
	hog = MAP_FAILED;
	hogfd = -1;
	CHECK(probe(w + at + 3 * MiB, false, 0, &c) == 0 && w[at] == 0 && w[at + 3 * MiB] == 0 &&
		      probe(w + at, true, 1, NULL) == SIGSEGV,
	      "hugetlb truncated: the range reads zeros in new huge pages and refuses stores");
	munmap(w, 2 * GiB);
out:
	if (hogfd >= 0)
		close(hogfd);
	huge_pool_end(&pool, fd, hfd);
}

/* Writes value to a sysfs file; its old value (up to len bytes) in old. */
static bool sysfs_swap(const char *path, const char *value, char *old, size_t len)
{
	FILE *f = fopen(path, "r");

	if (!f || !fgets(old, (int)len, f)) {
		if (f)
			fclose(f);
		return false;
	}
	fclose(f);
	old[strcspn(old, "\n")] = 0;
	f = fopen(path, "w");
	if (!f)
		return false;
	fputs(value, f);
	return fclose(f) == 0;
}

#define KHUGEPAGED_SLEEP "/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs"

/*
 * khugepaged collapses the region's shmem (4 KiB pages that windows see)
 * into a THP, and retracts the PTE tables of every mapping of that range.
 * Before 6.5 it frees them at once, under walkers of a window: there the
 * views' tables must stay. On every kernel the window and another
 * process's see the data and later stores.
 */
static void test_collapse(void)
{
	const uint64_t at = 900 * MiB, len = 4 * MiB;
	struct msharefs_kmod_stats before, after;
	char *w = NULL, thp[32] = "never", sleep_ms[32] = "10000", ignored[32];
	long huge_before = meminfo_kb("ShmemHugePages"), huge_after = huge_before;
	int fd = -1, err;

	if (memfd_mode) {
		SKIP("collapse: module regions only");
		return;
	}
	/* THP allowed when the views are mapped (khugepaged then scans the host) */
	if (set_shmem_thp("always", thp, sizeof(thp)) ||
	    !sysfs_swap(KHUGEPAGED_SLEEP, "100", sleep_ms, sizeof(sleep_ms))) {
		SKIP("collapse: shmem THP or khugepaged cannot be set here");
		set_shmem_thp(thp, NULL, 0);
		return;
	}
	fd = region_create(GiB);
	err = fd < 0 ? errno : range_op(fd, MSHAREFS_KMOD_MAP, at, len, PROT_READ | PROT_WRITE);
	w = err ? NULL : window(fd, GiB);
	CHECK(w != NULL, "collapse: a region with 4 MiB mapped and a window (%s)", strerror(err));
	if (!w)
		goto out;
	/* 4 KiB pages, in PTE tables of the host's view */
	set_shmem_thp("never", NULL, 0);
	fill(w + at, len, 81);
	before = region_stats(fd);
	set_shmem_thp("always", NULL, 0);
	for (int i = 0; i < 300 && huge_after < huge_before + (long)(len >> 10); i++) {
		usleep(100000);
		huge_after = meminfo_kb("ShmemHugePages");
	}
	after = region_stats(fd);
	CHECK(huge_after >= huge_before + (long)(len >> 10),
	      "collapse: khugepaged made THPs of the region's memory (ShmemHugePages %ld -> %ld kB)", huge_before,
	      huge_after);
	if (!kernel_at_least(6, 5))
		CHECK(after.table_pages == before.table_pages,
		      "collapse: no table of a view is freed while windows may walk it (%llu -> %llu pages)",
		      (unsigned long long)before.table_pages, (unsigned long long)after.table_pages);
	else
		printf("# collapse: page-table pages %llu -> %llu (freed after an RCU grace period)\n",
		       (unsigned long long)before.table_pages, (unsigned long long)after.table_pages);
	CHECK(matches(w + at, len, 81) && seen_by_child(fd, at, len, 81) == 0,
	      "collapse: the window and another process's read the data");
	fill(w + at, len, 82);
	CHECK(seen_by_child(fd, at, len, 82) == 0, "collapse: and see stores made after it");
	munmap(w, GiB);
out:
	if (fd >= 0)
		close(fd);
	set_shmem_thp(thp, NULL, 0);
	sysfs_swap(KHUGEPAGED_SLEEP, sleep_ms, ignored, sizeof(ignored));
}

/* ---- 10. madvise ---- */

static const char *advice_result(int rc, int err)
{
	return rc == 0 ? "0" : err == EINVAL ? "EINVAL" : strerror(err);
}

static void test_madvise(void)
{
	struct region r;
	const uint64_t in = MiB, out = 4 * MiB;
	long before, after;
	int zero = 0, einval = 0, other = 0, other_errno = 0, st;
	volatile int *v;

	if (!region_setup(&r, "madvise"))
		return;
	v = (volatile int *)r.w;
	fill(r.w + in, 16 * KiB, 40);  /* inside the 2 MiB that are zapped */
	fill(r.w + out, 16 * KiB, 41); /* outside */
	*v = -1;
	before = meminfo_kb("PageTables");
	for (int i = 0; i < 2000; i++) {
		if (madvise(r.w, 2 * MiB, MADV_DONTNEED) == 0)
			zero++;
		else if (errno == EINVAL)
			einval++;
		else
			other++, other_errno = errno;
		*v = i;
	}
	after = meminfo_kb("PageTables");
	CHECK(zero == 2000 || einval == 2000,
	      "madvise: MADV_DONTNEED of 2 MiB of the window, 2000 times: %d returned 0, %d EINVAL, %d other (%s)",
	      zero, einval, other, other ? strerror(other_errno) : "none");
	CHECK(*v == 1999, "madvise: the value stored after each MADV_DONTNEED is there (%d)", *v);
	CHECK(matches(r.w + in, 16 * KiB, 40),
	      "madvise: data inside the MADV_DONTNEED range is kept (shared memory: only the mapping is dropped)");
	CHECK(matches(r.w + out, 16 * KiB, 41), "madvise: data outside the range is kept");
	CHECK(after - before <= 1024, "madvise: PageTables grew by <= 1 MiB over the loop (%ld -> %ld kB)", before,
	      after);
	st = seen_by_child(r.fd, in, 16 * KiB, 40);
	CHECK(st == 0, "madvise: another process's window sees the data (status %d)", st);

	static const struct {
		int advice;
		const char *name;
	} advs[] = { { MADV_PAGEOUT, "MADV_PAGEOUT" }, { MADV_COLD, "MADV_COLD" }, { MADV_WILLNEED, "MADV_WILLNEED" } };

	for (size_t i = 0; i < sizeof(advs) / sizeof(advs[0]); i++) {
		int rc = madvise(r.w, REGION_SIZE, advs[i].advice), err = errno;

		CHECK((rc == 0 || err == EINVAL) && *v == 1999 && matches(r.w + in, 16 * KiB, 40) &&
			      matches(r.w + out, 16 * KiB, 41),
		      "madvise: %s of the window returns %s, the data is intact after it", advs[i].name,
		      advice_result(rc, err));
	}
	st = seen_by_child(r.fd, out, 16 * KiB, 41);
	CHECK(st == 0, "madvise: another process's window still sees the data (status %d)", st);
	region_teardown(&r);
}

/* ---- 11. fork inheritance ---- */

static void test_inheritance(void)
{
	struct region r;
	int st;

	if (!region_setup(&r, "fork"))
		return;
	fill(r.w + 7 * MiB, 64 * KiB, 50);
	memset(r.w + 9 * MiB, 0, 64 * KiB);
	pid_t pid = fork_child(20);

	if (pid == 0) {
		if (!matches(r.w + 7 * MiB, 64 * KiB, 50))
			_exit(3);
		fill(r.w + 9 * MiB, 64 * KiB, 51);
		_exit(0);
	}
	st = reap(pid);
	CHECK(st == 0, "fork: a child reads the parent's data through the inherited window (status %d)", st);
	CHECK(matches(r.w + 9 * MiB, 64 * KiB, 51), "fork: the parent sees the child's store through the inherited window");
	region_teardown(&r);
}

/* ---- 12. offset windows (2 MiB but not 1 GiB aligned) ---- */

/* The region's fault count, from STATS. */
static unsigned long long region_faults(int fd)
{
	return (unsigned long long)region_stats(fd).faults;
}

/*
 * A fresh process maps an offset window of fd at 2 MiB past a GiB and reads
 * len bytes of seed at 0: 0, or 2 (mmap failed), 3 (wrong data), 4 (its
 * page tables grew by more than 16 kB: it built PTE tables of its own).
 */
static int offset_reader(int fd, size_t len, uint32_t seed, long *grew_kb)
{
	long *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pid;
	int st;

	if (shared == MAP_FAILED)
		return 2;
	*shared = -1;
	pid = fork_child(30);
	if (pid == 0) {
		long before = vm_pte_kb();
		char *o = offset_window(fd, GiB);

		if (!o)
			_exit(2);
		if (!matches(o, len, seed))
			_exit(3);
		*shared = vm_pte_kb() - before;
		_exit(*shared > 16 ? 4 : 0);
	}
	st = reap(pid);
	*grew_kb = *shared;
	munmap(shared, PAGE);
	return st;
}

/*
 * Whether a store into p (a window the region PROTECTed read-only) faults,
 * and p still holds what it held.
 */
static bool store_refused(char *p)
{
	char before = *p, after = 0;

	return probe(p, true, (char)~before, NULL) == SIGSEGV && !probe(p, false, 0, &after) && after == before;
}

/*
 * mmap(NULL) through FUSE gets a 2 MiB aligned address, not a 1 GiB one: an
 * offset window links the views' PTE tables from PMD entries of its own
 * and copies their huge page entries. It must see every change the host
 * makes (UNMAP, PROTECT, a new page) and cost no PTE table of its own.
 */
static void test_offset(void)
{
	const uint64_t small = 64 * MiB, thp_at = 512 * MiB, thp_len = 4 * MiB;
	char *w = NULL, *o = MAP_FAILED, *at, thp[32] = "never";
	unsigned long long faults;
	long grew = -1, before, after;
	bool huge;
	int fd, err, st, i;

	if (memfd_mode) {
		SKIP("offset: module regions only");
		return;
	}
	set_shmem_thp("never", thp, sizeof(thp));
	fd = region_create(GiB);
	err = fd < 0 ? errno : range_op(fd, MSHAREFS_KMOD_MAP, 0, small, PROT_READ | PROT_WRITE);
	w = err ? NULL : window(fd, GiB);
	CHECK(w, "offset: a region with 64 MiB of 4 KiB pages and a window (%s)", strerror(err));
	if (!w)
		goto out;
	fill(w, small, 90);
	at = free_aligned_address();
	CHECK(at && mmap(at + PAGE, GiB, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "offset: a window at an address that is not 2 MiB aligned is EINVAL");

	/* Before shmem THP is ever allowed: khugepaged then leaves the region alone. */
	faults = region_faults(fd);
	st = offset_reader(fd, small, 90, &grew);
	faults = region_faults(fd) - faults;
	CHECK(st == 0, "offset: another process's window 2 MiB past a GiB reads 64 MiB, its page tables grew %ld kB "
		       "(PMD tables only, no PTE table; status %d)", grew, st);
	CHECK(faults <= 4, "offset: it took %llu faults for 32 PTE tables (linked per GiB, not per 2 MiB)", faults);

	set_shmem_thp("always", NULL, 0);
	err = range_op(fd, MSHAREFS_KMOD_MAP, thp_at, thp_len, PROT_READ | PROT_WRITE);
	if (!err)
		fill(w + thp_at, thp_len, 91);
	set_shmem_thp("never", NULL, 0);
	huge = in_thp(w + thp_at) == 1;
	CHECK(!err, "offset: 4 MiB of shmem THP mapped at 512 MiB (%s)", strerror(err));
	if (err)
		goto out;

	o = at ? mmap(at + 6 * MiB, GiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) : MAP_FAILED;
	CHECK(o != MAP_FAILED, "offset: this process maps one 6 MiB past a GiB (%s)",
	      o == MAP_FAILED ? strerror(errno) : "mapped");
	if (o == MAP_FAILED)
		goto out;
	CHECK(matches(o, small, 90) && matches(o + thp_at, thp_len, 91),
	      "offset: it reads the 4 KiB pages and the THP (%s)", huge ? "a huge page" : "not a huge page here");
	fill(o + 8 * MiB, 64 * KiB, 92);
	st = seen_by_child(fd, 8 * MiB, 64 * KiB, 92);
	CHECK(matches(w + 8 * MiB, 64 * KiB, 92) && st == 0,
	      "offset: its stores reach the aligned window and another process's (status %d)", st);

	/* The host changes what the offset window links or copies. */
	err = range_op(fd, MSHAREFS_KMOD_UNMAP, thp_at, thp_len, 0);
	if (!err) {
		set_shmem_thp("always", NULL, 0);
		err = range_op(fd, MSHAREFS_KMOD_MAP, thp_at, thp_len, PROT_READ | PROT_WRITE);
		set_shmem_thp("never", NULL, 0);
	}
	if (!err)
		err = range_op(fd, MSHAREFS_KMOD_UNMAP, 16 * MiB, 2 * MiB, 0);
	if (!err)
		err = range_op(fd, MSHAREFS_KMOD_MAP, 16 * MiB, 2 * MiB, PROT_READ | PROT_WRITE);
	CHECK(!err, "offset: UNMAP and MAP again of the THP and of 2 MiB of 4 KiB pages (%s)", strerror(err));
	fill(w + thp_at, thp_len, 93);
	fill(w + 16 * MiB, 2 * MiB, 94);
	CHECK(matches(o + thp_at, thp_len, 93), "offset: it reads the new huge page, not the one UNMAP freed");
	CHECK(matches(o + 16 * MiB, 2 * MiB, 94), "offset: and the new 4 KiB pages");

	err = range_op(fd, MSHAREFS_KMOD_PROTECT, 0, small, PROT_READ);
	CHECK(!err && store_refused(o + 8 * MiB) && matches(o + 8 * MiB, 64 * KiB, 92),
	      "offset: after PROTECT read-only a store faults, the data is intact (%s)", strerror(err));
	err = range_op(fd, MSHAREFS_KMOD_PROTECT, 0, small, PROT_READ | PROT_WRITE);
	CHECK(!err && !probe(o + 8 * MiB, true, 0x77, NULL) && w[8 * MiB] == 0x77,
	      "offset: after PROTECT read-write it stores again (%s)", strerror(err));

	before = vm_pte_kb();
	for (i = 0; i < 500; i++) {
		if (madvise(o, 4 * MiB, MADV_DONTNEED))
			break;
		o[i * PAGE] = (char)i;
	}
	after = vm_pte_kb();
	CHECK(i == 500 && after - before <= 16 && o[499 * PAGE] == (char)499 && w[499 * PAGE] == (char)499 &&
		      matches(o + 16 * MiB, 2 * MiB, 94),
	      "offset: 500 MADV_DONTNEED and stores (%d done) keep the data, page tables %ld -> %ld kB", i, before,
	      after);

	pid_t pid = fork_child(20);

	if (pid == 0)
		_exit(matches(o + thp_at, thp_len, 93) ? (fill(o + 32 * MiB, 64 * KiB, 95), 0) : 3);
	st = reap(pid);
	CHECK(st == 0 && matches(w + 32 * MiB, 64 * KiB, 95),
	      "offset: a forked child reads and stores through the inherited window (status %d)", st);

	pid = fork_child(20);
	if (pid == 0) {
		static char buf[64 * KiB];
		struct iovec local = { buf, sizeof(buf) }, remote = { o + 32 * MiB, sizeof(buf) };

		_exit(process_vm_readv(getppid(), &local, 1, &remote, 1, 0) == (ssize_t)sizeof(buf) &&
				      matches(buf, sizeof(buf), 95) ? 0 : 3);
	}
	st = reap(pid);
	CHECK(st == 0, "offset: process_vm_readv of it by another process (status %d)", st);

	pid = fork_child(20);
	if (pid == 0) {
		static char buf[64 * KiB];
		char path[64];
		int mem;

		snprintf(path, sizeof(path), "/proc/%d/mem", (int)getppid());
		mem = open(path, O_RDONLY);
		_exit(mem >= 0 && pread(mem, buf, sizeof(buf), (off_t)(uintptr_t)(o + 32 * MiB)) ==
						(ssize_t)sizeof(buf) && matches(buf, sizeof(buf), 95) ? 0 : 3);
	}
	st = reap(pid);
	CHECK(st == 0, "offset: another process reads it through /proc/PID/mem, as a debugger does (status %d)", st);

	/* A read-only opener's offset window shows the read-only view. */
	pid = fork_child(20);
	if (pid == 0) {
		char path[64];
		int rd;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		rd = open(path, O_RDONLY | O_CLOEXEC);
		char *ro = rd >= 0 ? offset_window_prot(rd, GiB, PROT_READ) : NULL;

		if (!ro)
			_exit(2);
		if (!matches(ro + 32 * MiB, 64 * KiB, 95))
			_exit(3);
		_exit(probe(ro + 32 * MiB, true, 1, NULL) == SIGSEGV ? 0 : 4);
	}
	st = reap(pid);
	CHECK(st == 0 && matches(w + 32 * MiB, 64 * KiB, 95),
	      "offset: an O_RDONLY PROT_READ offset window reads, its store faults, the data is intact (status %d)", st);

	/* A process-shared mutex: this process's offset window against another's aligned one. */
	{
		pthread_mutex_t *mtx = (pthread_mutex_t *)(o + 40 * MiB);
		volatile int *counter = (volatile int *)(o + 40 * MiB + 256);
		pthread_mutexattr_t ma;

		pthread_mutexattr_init(&ma);
		pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
		pthread_mutex_init(mtx, &ma);
		*counter = 0;
		pthread_mutex_lock(mtx);
		pid = fork_child(20);
		if (pid == 0) {
			char *cw = window(fd, GiB);
			pthread_mutex_t *cm = (pthread_mutex_t *)(cw + 40 * MiB);
			volatile int *cc = (volatile int *)(cw + 40 * MiB + 256);

			/* Blocks in the kernel until the parent unlocks. */
			if (!cw || pthread_mutex_lock(cm))
				_exit(2);
			(*cc)++;
			pthread_mutex_unlock(cm);
			_exit(*cc == 2 ? 0 : 3);
		}
		usleep(300000);
		(*counter)++;
		pthread_mutex_unlock(mtx);
		st = reap(pid);
		CHECK(st == 0 && *counter == 2,
		      "offset: a contended PTHREAD_PROCESS_SHARED mutex between it and another process's window (status %d, "
		      "count %d)",
		      st, *counter);
	}

	/* A refused mremap leaves it working. */
	{
		char *target = free_aligned_address(), *moved;
		const char *why;

		errno = 0;
		moved = target ? mremap(o, GiB, GiB, MREMAP_MAYMOVE | MREMAP_FIXED, target) : MAP_FAILED;
		CHECK(target && moved == MAP_FAILED && errno == EINVAL,
		      "offset: mremap(MREMAP_MAYMOVE|MREMAP_FIXED) of it is EINVAL (%s)",
		      moved == MAP_FAILED ? strerror(errno) : "it moved");
		why = moved != MAP_FAILED ? "it moved" : window_still_works(fd, o, 32 * MiB, 64 * KiB, 95);
		CHECK(!why, "offset: after the refused mremap it has the old data and takes stores%s%s", why ? ": " : "",
		      why ? why : "");
	}
	CHECK(munmap(o, GiB) == 0 && matches(w + 32 * MiB, 64 * KiB, 95), "offset: munmap; the region is intact");
	o = MAP_FAILED;
out:
	if (o != MAP_FAILED)
		munmap(o, GiB);
	if (w)
		munmap(w, GiB);
	if (fd >= 0)
		close(fd);
	set_shmem_thp(thp, NULL, 0);
}

/* ---- 13. fork while signals arrive ---- */

static volatile int storm_stop;

static void on_usr1(int sig)
{
	(void)sig;
}

/* Sends SIGUSR1 to the thread in arg until storm_stop. */
static void *signal_storm(void *arg)
{
	pthread_t target = *(pthread_t *)arg;

	while (!__atomic_load_n(&storm_stop, __ATOMIC_RELAXED))
		pthread_kill(target, SIGUSR1);
	return NULL;
}

/*
 * A server forks while signals arrive (SIGCHLD, timers): every child must
 * get a working window, even when a signal is pending while fork() copies
 * the parent's mappings.
 */
static void test_fork_signals(void)
{
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_RESTART }, old;
	pthread_t self = pthread_self(), storm;
	int forks = 0, bad = 0, last = 0;
	struct region r;

	if (!region_setup(&r, "fork signals"))
		return;
	fill(r.w + 3 * MiB, 4 * KiB, 60);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, &old);
	storm_stop = 0;
	if (pthread_create(&storm, NULL, signal_storm, &self)) {
		CHECK(0, "fork signals: start a thread that signals this one");
		goto out;
	}
	for (int i = 0; i < 300; i++) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(matches(r.w + 3 * MiB, 4 * KiB, 60) ? 0 : 3);
		if (pid < 0)
			continue;
		forks++;
		int st = reap(pid);

		if (st) {
			bad++;
			last = st;
		}
	}
	__atomic_store_n(&storm_stop, 1, __ATOMIC_RELAXED);
	pthread_join(storm, NULL);
	CHECK(forks > 0 && bad == 0,
	      "fork signals: %d children forked while SIGUSR1 kept arriving read the window (%d failed, last status %d)",
	      forks, bad, last);
out:
	sigaction(SIGUSR1, &old, NULL);
	region_teardown(&r);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help")) {
			printf("usage: %s [--memfd] [--only ITEM]\n"
			       "Runs the kernel's other users of memory (futexes, /proc/PID/mem, process_vm_*,\n"
			       "vmsplice, O_DIRECT, io_uring, read-only windows, huge pages, madvise, fork,\n"
			       "offset windows) on msharefs_kmod windows (needs the module loaded, as root).\n"
			       "--memfd runs them on a memfd mapped MAP_SHARED instead, skipping the window-only\n"
			       "checks; --only runs the one item named as its check lines name it.\n",
			       argv[0]);
			return 0;
		} else if (!strcmp(argv[i], "--memfd")) {
			memfd_mode = true;
		} else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			only_item = argv[++i];
		} else {
			fprintf(stderr, "%s: unknown argument '%s' (try --help)\n", argv[0], argv[i]);
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("# kmod_users: %s\n", memfd_mode ? "on a MAP_SHARED memfd (--memfd)" : "on msharefs_kmod windows");
	run_item("futex", test_futexes, 120);
	run_item("/proc/PID/mem", test_proc_mem, 60);
	run_item("process_vm", test_process_vm, 60);
	run_item("vmsplice", test_vmsplice, 60);
	run_item("O_DIRECT", test_odirect, 60);
	run_item("io_uring", test_io_uring, 60);
	run_item("read-only", test_readonly, 60);
	run_item("addresses", test_addresses, 60);
	run_item("refusals", test_refusals, 60);
	run_item("exec", test_exec, 60);
	run_item("hugetlb", test_hugetlb, 120);
	run_item("hugetlb GiB", test_hugetlb_gib, 180);
	run_item("hugetlb reservation", test_hugetlb_reserve, 120);
	run_item("hugetlb truncated", test_hugetlb_truncated, 120);
	run_item("collapse", test_collapse, 120);
	run_item("madvise", test_madvise, 60);
	run_item("fork", test_inheritance, 60);
	run_item("offset", test_offset, 120);
	run_item("fork signals", test_fork_signals, 120);
	printf("kmod_users: %d failures\n", failures);
	return failures ? 1 : 0;
}
