// SPDX-License-Identifier: GPL-2.0
/*
 * window_syscalls: system calls handed a page of an msharefs window that this
 * process has not touched yet, as an unmodified program run under
 * libmshare-preload.so makes them. The tests run it as another user.
 *
 *   window_syscalls pipe-read  REGION OFFSET TEXT  read() from a pipe holding TEXT into the page
 *   window_syscalls pwrite     REGION OFFSET TEXT  pwrite() of the page to a memfd; it must hold TEXT
 *   window_syscalls sem-wait   REGION OFFSET       sem_init(pshared=1) there, flag OFFSET+64, wait
 *   window_syscalls sem-post   REGION OFFSET       once the flag is set, sem_post()
 *   window_syscalls futex-wait REGION OFFSET       FUTEX_WAIT on the word while it is 0
 *   window_syscalls futex-wake REGION OFFSET       FUTEX_WAKE there until it wakes a waiter
 *
 * The window is the whole region mapped at its start. Exit status: 0 on
 * success, 3 if the system call failed (its errno printed as "errno N"),
 * 4 if the data differ, 1 for anything else.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/msharefs.h>

static int failed(const char *what)
{
	printf("%s: errno %d (%s)\n", what, errno, strerror(errno));
	return 3;
}

static char *map_window(const char *region)
{
	struct mshare_info info;
	int fd = open(region, O_RDWR);
	void *p;

	if (fd < 0 || ioctl(fd, MSHAREFS_GET_SIZE, &info) < 0) {
		perror(region);
		exit(1);
	}
	p = mmap((void *)(uintptr_t)info.start, info.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	close(fd);
	return p;
}

static int pipe_read(char *page, const char *text)
{
	const size_t len = strlen(text) + 1;
	int p[2];

	if (pipe(p) < 0 || write(p[1], text, len) != (ssize_t)len)
		return 1;
	if (read(p[0], page, len) != (ssize_t)len)
		return failed("read");
	return memcmp(page, text, len) ? 4 : 0;
}

static int pwrite_out(const char *page, const char *text)
{
	const size_t len = strlen(text) + 1;
	char back[256] = { 0 };
	int fd = (int)syscall(SYS_memfd_create, "out", 0);

	if (fd < 0 || len > sizeof(back))
		return 1;
	if (pwrite(fd, page, len, 0) != (ssize_t)len)
		return failed("pwrite");
	if (pread(fd, back, len, 0) != (ssize_t)len)
		return 1;
	return memcmp(back, text, len) ? 4 : 0;
}

static void pause_ms(long ms)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = ms * 1000000 };

	nanosleep(&ts, NULL);
}

static int sem_waiter(char *page)
{
	sem_t *sem = (sem_t *)page;
	struct timespec deadline;

	if (sem_init(sem, 1, 0) < 0)
		return failed("sem_init");
	__atomic_store_n((int *)(page + 64), 1, __ATOMIC_RELEASE);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	while (sem_timedwait(sem, &deadline) < 0)
		if (errno != EINTR)
			return failed("sem_timedwait");
	printf("sem-wait: woken\n");
	return 0;
}

static int sem_poster(char *page)
{
	int i;

	for (i = 0; !__atomic_load_n((int *)(page + 64), __ATOMIC_ACQUIRE); i++) {
		if (i > 1000)
			return 1;
		pause_ms(10);
	}
	if (sem_post((sem_t *)page) < 0)
		return failed("sem_post");
	return 0;
}

static int futex_waiter(char *page)
{
	struct timespec timeout = { .tv_sec = 10, .tv_nsec = 0 };
	uint32_t *word = (uint32_t *)page;

	/* The first touch of the page is the kernel's. */
	while (syscall(SYS_futex, word, FUTEX_WAIT, 0, &timeout, NULL, 0) < 0)
		if (errno != EINTR)
			return failed("futex wait");
	printf("futex-wait: woken\n");
	return 0;
}

static int futex_waker(char *page)
{
	uint32_t *word = (uint32_t *)page;
	long woken = 0;
	int i;

	/* Until a waiter sleeps there (5 s at most). */
	for (i = 0; woken < 1 && i < 500; i++) {
		woken = syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
		if (woken < 0)
			return failed("futex wake");
		if (!woken)
			pause_ms(10);
	}
	__atomic_store_n(word, 1, __ATOMIC_RELEASE);
	return woken == 1 ? 0 : 1;
}

int main(int argc, char *argv[])
{
	const char *op;
	char *page;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 4) {
		fprintf(stderr, "usage: %s OPERATION REGION OFFSET [TEXT]\n", argv[0]);
		return 1;
	}
	op = argv[1];
	page = map_window(argv[2]) + strtoull(argv[3], NULL, 0);
	if (!strcmp(op, "pipe-read") && argc == 5)
		return pipe_read(page, argv[4]);
	if (!strcmp(op, "pwrite") && argc == 5)
		return pwrite_out(page, argv[4]);
	if (!strcmp(op, "sem-wait"))
		return sem_waiter(page);
	if (!strcmp(op, "sem-post"))
		return sem_poster(page);
	if (!strcmp(op, "futex-wait"))
		return futex_waiter(page);
	if (!strcmp(op, "futex-wake"))
		return futex_waker(page);
	fprintf(stderr, "%s: unknown operation %s\n", argv[0], op);
	return 1;
}
