/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers of the adoption tests: programs that use shared memory the way
 * unmodified programs do and check, under mshare-run (or with MAP_SHARED_PT),
 * that it behaves as the call promises and that it lives in a region of the
 * mount. The mount is $MSHARE_RUN_MOUNT (or $MSHAREFS_MOUNT); msharectl is
 * $MSHARECTL.
 */
#ifndef ADOPT_TEST_H
#define ADOPT_TEST_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                          \
	do {                                                                      \
		if (!(cond)) {                                                    \
			fprintf(stderr, "FAIL %s:%d (pid %d): ", __FILE__, __LINE__, \
				(int)getpid());                                   \
			fprintf(stderr, __VA_ARGS__);                             \
			fputc('\n', stderr);                                      \
			failures++;                                               \
		}                                                                 \
	} while (0)

#define MIB (1024ULL * 1024)

/* Whether the windows are the module's (datapath=kmod), which refuses
 * mprotect of a window with EINVAL. */
static inline int on_module(void)
{
	const char *d = getenv("MSHAREFS_TEST_DATAPATH");

	return d && strcmp(d, "kmod") == 0;
}

static const char *test_mount(void)
{
	const char *m = getenv("MSHARE_RUN_MOUNT");

	if (!m || !*m)
		m = getenv("MSHAREFS_MOUNT");
	if (!m || !*m) {
		fprintf(stderr, "no mount: set MSHARE_RUN_MOUNT or MSHAREFS_MOUNT\n");
		exit(2);
	}
	return m;
}

/* mshare_info of the mount. */
static inline uint64_t test_alignment(void)
{
	char path[4096], text[32] = "";
	int fd;

	snprintf(path, sizeof(path), "%s/mshare_info", test_mount());
	fd = open(path, O_RDONLY);
	if (fd < 0 || read(fd, text, sizeof(text) - 1) <= 0) {
		perror(path);
		exit(2);
	}
	close(fd);
	return strtoull(text, NULL, 10);
}

/* What `msharectl -j ls` says of the mount now (a static buffer). */
static inline char *ctl_ls(void)
{
	static char buf[65536];
	const char *ctl = getenv("MSHARECTL");
	char *argv[] = {(char *)(ctl ? ctl : "msharectl"), "-m", (char *)test_mount(), "-j", "ls", NULL};
	posix_spawn_file_actions_t actions;
	char rest[4096];
	int out[2], status, err;
	size_t n = 0;
	ssize_t r;
	pid_t pid;

	/* Spawned without a shell: a process less for each look. */
	if (pipe2(out, O_CLOEXEC) < 0) {
		perror("pipe");
		exit(2);
	}
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_adddup2(&actions, out[1], 1);
	err = posix_spawnp(&pid, argv[0], &actions, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&actions);
	close(out[1]);
	if (err) {
		fprintf(stderr, "%s: %s\n", argv[0], strerror(err));
		exit(2);
	}
	while ((r = n < sizeof(buf) - 1 ? read(out[0], buf + n, sizeof(buf) - 1 - n)
					 : read(out[0], rest, sizeof(rest))) > 0)
		if (n < sizeof(buf) - 1)
			n += (size_t)r;
	buf[n] = 0;
	close(out[0]);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "msharectl -j ls failed\n");
		exit(2);
	}
	return buf;
}

/* The regions of listing ls that pid has a window of; *names gets their
 * names (space-separated) if not NULL. */
static inline int regions_in(char *ls, pid_t pid, char *names, size_t names_len)
{
	int count = 0;
	char *p;

	if (names && names_len)
		names[0] = 0;
	/* Each region: {"attachers":[pids],...,"name":"NAME",...} */
	for (p = strstr(ls, "\"attachers\":["); p; p = strstr(p + 1, "\"attachers\":[")) {
		char *end = strchr(p, ']');
		char *name = strstr(p, "\"name\":\"");
		int found = 0;
		char *q;

		for (q = p + 13; end && q < end;) {
			long v = strtol(q, &q, 10);

			if (v == pid)
				found = 1;
			if (*q == ',')
				q++;
			else
				break;
		}
		if (found) {
			count++;
			if (names && name) {
				char *e = strchr(name + 8, '"');

				strncat(names, name + 8, e ? (size_t)(e - name - 8) : 0);
				strncat(names, " ", names_len - strlen(names) - 1);
			}
		}
	}
	return count;
}

/*
 * The regions of the mount that pid has a window of, as `msharectl -j ls`
 * lists them; *names gets their names (space-separated) if not NULL.
 */
static inline int regions_of(pid_t pid, char *names, size_t names_len)
{
	return regions_in(ctl_ls(), pid, names, names_len);
}

/* The value of /proc/meminfo field (e.g. "HugePages_Free:"), 0 if absent. */
static inline long meminfo_value(const char *field)
{
	char line[256];
	long v = 0;
	FILE *f = fopen("/proc/meminfo", "r");

	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, field, strlen(field)) == 0)
			v = atol(line + strlen(field));
	if (f)
		fclose(f);
	return v;
}

/* Free huge pages of the default size (HugePages_Free), for MAP_HUGETLB. */
static inline long free_huge_pages(void)
{
	return meminfo_value("HugePages_Free:");
}

/* Free huge pages of the default size that no mapping has reserved
 * (HugePages_Free - HugePages_Rsvd): what a new hugetlbfs mapping can get. */
static inline long unreserved_huge_pages(void)
{
	return free_huge_pages() - meminfo_value("HugePages_Rsvd:");
}

/* The "backing" msharectl reports for the regions pid is attached to (the
 * first), or "" if none. */
static inline const char *backing_of(pid_t pid)
{
	static char backing[32];
	char cmd[4352], buf[65536];
	const char *ctl = getenv("MSHARECTL");
	size_t n;
	FILE *f;
	char *p;

	backing[0] = 0;
	snprintf(cmd, sizeof(cmd), "'%s' -m '%s' -j ls", ctl ? ctl : "msharectl", test_mount());
	f = popen(cmd, "r");
	if (!f)
		return backing;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	pclose(f);
	for (p = strstr(buf, "\"attachers\":["); p; p = strstr(p + 1, "\"attachers\":[")) {
		char want[32], *b;

		snprintf(want, sizeof(want), "%d", (int)pid);
		if (!strstr(p, want) || strstr(p, want) > strchr(p, ']'))
			continue;
		b = strstr(p, "\"backing\":\"");
		if (b)
			sscanf(b + 11, "%31[^\"]", backing);
		break;
	}
	return backing;
}

/* Whether listing ls has a region (named or unlinked) called name. */
static inline int listed_in(const char *ls, const char *name)
{
	char want[1100];

	snprintf(want, sizeof(want), "\"name\":\"%s\"", name);
	return strstr(ls, want) != NULL;
}

/* Whether the mount lists a region (named or unlinked) called name. */
static inline int region_listed(const char *name)
{
	return listed_in(ctl_ls(), name);
}

/* Whether pid has no window left and the mount lists none of the regions
 * named in names (space-separated; "" for none). */
static inline int gone(pid_t pid, const char *names)
{
	char *ls = ctl_ls(), name[300];
	const char *p = names;
	int n;

	if (regions_in(ls, pid, NULL, 0) != 0)
		return 0;
	while (sscanf(p, "%299s%n", name, &n) == 1) {
		if (listed_in(ls, name))
			return 0;
		p += n;
	}
	return 1;
}

/* Whether pid has exactly one window, and it is of region name. */
static inline int attached_only_to(pid_t pid, const char *name)
{
	char names[1024];

	if (regions_of(pid, names, sizeof(names)) != 1)
		return 0;
	names[strcspn(names, " ")] = 0;
	return strcmp(names, name) == 0;
}

/*
 * Starts this program again with args, as a process that inherits nothing
 * mapped (fork + exec) and runs alongside this one: *to (if not NULL) is its
 * standard input and *from its standard output, for step() and
 * wait_step(). Its pid, or -1.
 */
static inline pid_t start_unrelated(char *const args[], int *to, int *from)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1};
	char *argv[16];
	pid_t pid;
	int i;

	argv[0] = "adopt-test";
	for (i = 0; args[i] && i < 14; i++)
		argv[i + 1] = args[i];
	argv[i + 1] = NULL;
	if (to && (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0))
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		if (to && (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0))
			_exit(127);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	if (to) {
		close(in[0]);
		close(out[1]);
		*to = in[1];
		*from = out[0];
	}
	return pid;
}

/* The exit status of a process start_unrelated started, or -1. */
static inline int wait_unrelated(pid_t pid)
{
	int status;

	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs this program again with args, as a process that inherits nothing
 * mapped (fork + exec); its exit status, or -1. */
static inline int run_unrelated(char *const args[])
{
	return wait_unrelated(start_unrelated(args, NULL, NULL));
}

/* Tells the other side of a pipe that a step is done; waits for it to say
 * so (0), or learns that it is gone (-1). */
static inline int step(int fd)
{
	return write(fd, "s", 1) == 1 ? 0 : -1;
}

static inline int wait_step(int fd)
{
	char c;

	return read(fd, &c, 1) == 1 ? 0 : -1;
}

static sigjmp_buf fault_jump;

static inline void on_fault(int sig)
{
	siglongjmp(fault_jump, sig);
}

/* Whether a one-byte store to p faults (SIGSEGV or SIGBUS); p is unchanged
 * either way. */
static inline int store_faults(volatile char *p)
{
	struct sigaction sa = {.sa_handler = on_fault}, old_segv, old_bus;
	int faulted;

	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	if (sigsetjmp(fault_jump, 1) == 0) {
		char c = *p;

		*p = c;
		faulted = 0;
	} else {
		faulted = 1;
	}
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	return faulted;
}

/* Fills len bytes at p with a pattern of seed; checks one. */
static inline void fill(char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i += 4096)
		p[i] = (char)(seed + i / 4096);
}

static inline int filled(const char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i += 4096)
		if (p[i] != (char)(seed + i / 4096))
			return 0;
	return 1;
}

static inline int test_result(const char *what)
{
	if (failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", what, failures);
		return 1;
	}
	printf("%s: every check passed\n", what);
	return 0;
}

#endif
