/* SPDX-License-Identifier: GPL-2.0 */
/*
 * memfds under mshare-run: a memfd mapped MAP_SHARED above the threshold is
 * a window of its implicit region, shared with an unrelated process that
 * opens it through /proc/PID/fd and with a forked child; the memory outlives
 * every descriptor of the memfd for as long as a window holds it; seals are
 * honoured as mmap honours them.
 */
#include "adopt_test.h"

#define LEN (70 * MIB)

static int attacher(const char *path, const char *region)
{
	int fd = open(path, O_RDWR);
	char *p;

	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	if (fd < 0)
		return 1;
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED && filled(p, LEN, 9), "the unrelated process's mapping: %s", strerror(errno));
	CHECK(attached_only_to(getpid(), region), "the unrelated process has no window of region %s", region);
	if (p != MAP_FAILED)
		strcpy(p + 64, "unrelated");
	return failures ? 1 : 0;
}

/*
 * The unrelated process of removed(): maps the memfd through path and
 * closes it, then, once every descriptor of the memfd is closed, still
 * shares the memory with the process that made it.
 */
static int holder(const char *path, const char *region)
{
	int fd = open(path, O_RDWR);
	char *p = fd < 0 ? MAP_FAILED : mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	CHECK(p != MAP_FAILED, "the holder's mapping of %s: %s", path, strerror(errno));
	if (p == MAP_FAILED)
		return 1;
	close(fd);
	CHECK(filled(p, LEN, 13) && attached_only_to(getpid(), region),
	      "the holder does not share region %s", region);
	if (step(1) < 0 || wait_step(0) < 0)
		return 1;
	/* Every descriptor of the memfd is closed now. */
	CHECK(filled(p, LEN, 14) && strcmp(p + 256, "after close") == 0,
	      "the holder does not see the stores made after the memfd was closed");
	CHECK(attached_only_to(getpid(), region), "the holder lost region %s", region);
	strcpy(p + 320, "holder");
	CHECK(munmap(p, LEN) == 0, "the holder's munmap: %s", strerror(errno));
	return failures ? 1 : 0;
}

/*
 * Removal while attached: every descriptor of the memfd the program holds is
 * closed (this process's two, and the unrelated process's after it mapped
 * it) while it is mapped in both; the memory stays readable and writable,
 * shared by both, until its last window goes.
 */
static void removed(void)
{
	char path[64], names[1024];
	int fd, fd2, to = -1, from = -1;
	char *p;
	pid_t pid;

	signal(SIGPIPE, SIG_IGN); /* a holder that died is a failed check */
	fd = memfd_create("adopt-removed", MFD_CLOEXEC);
	CHECK(fd >= 0 && ftruncate(fd, LEN) == 0, "memfd: %s", strerror(errno));
	fd2 = dup(fd);
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	if (p == MAP_FAILED)
		return;
	CHECK(regions_of(getpid(), names, sizeof(names)) == 1 && strncmp(names, "pt-", 3) == 0,
	      "not in an implicit region: '%s'", names);
	names[strcspn(names, " ")] = 0;
	fill(p, LEN, 13);
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), fd);
	pid = start_unrelated((char *[]){"hold", path, names, NULL}, &to, &from);
	CHECK(pid > 0 && wait_step(from) == 0, "the holder did not map the memfd");

	CHECK(close(fd) == 0 && close(fd2) == 0, "close: %s", strerror(errno));
	CHECK(filled(p, LEN, 13), "the data is gone after the memfd was closed");
	CHECK(!store_faults(p + 4096), "a store after the memfd was closed faults");
	fill(p, LEN, 14);
	strcpy(p + 256, "after close");
	CHECK(attached_only_to(getpid(), names), "region %s is not attached after the memfd was closed", names);
	step(to);
	CHECK(wait_unrelated(pid) == 0, "the holder failed");
	CHECK(strcmp(p + 320, "holder") == 0, "the holder's store is not seen");
	close(to);
	close(from);
	CHECK(munmap(p, LEN) == 0 && gone(getpid(), names), "implicit region %s is held after its last window",
	      names);
}

int main(int argc, char **argv)
{
	char path[64], names[1024];
	char *p;
	int fd, sealed, status;
	pid_t child;

	if (argc == 4 && strcmp(argv[1], "attach") == 0)
		return attacher(argv[2], argv[3]);
	if (argc == 4 && strcmp(argv[1], "hold") == 0)
		return holder(argv[2], argv[3]);
	fd = memfd_create("adopt-memfd", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	CHECK(fd >= 0 && ftruncate(fd, LEN) == 0, "memfd: %s", strerror(errno));
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED && regions_of(getpid(), names, sizeof(names)) == 1, "the memfd was not adopted: %s",
	      strerror(errno));
	if (p == MAP_FAILED)
		return test_result("adopt_memfd");
	names[strcspn(names, " ")] = 0;
	fill(p, LEN, 9);
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), fd);
	CHECK(run_unrelated((char *[]){"attach", path, names, NULL}) == 0, "the unrelated process failed");
	CHECK(strcmp(p + 64, "unrelated") == 0, "the unrelated process's store is not seen");

	/* fork: the child reads and writes through the inherited window. */
	child = fork();
	if (child == 0) {
		failures = 0;
		CHECK(filled(p, LEN, 9) && strcmp(p + 64, "unrelated") == 0, "the child does not see the data");
		CHECK(attached_only_to(getpid(), names), "the child has no window of region %s", names);
		strcpy(p + 128, "child");
		_exit(failures ? 1 : 0);
	}
	CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "the forked child failed");
	CHECK(strcmp(p + 128, "child") == 0, "the child's store is not seen");
	CHECK(munmap(p, LEN) == 0 && gone(getpid(), names), "implicit region %s is held after its last window",
	      names);
	close(fd);

	removed();

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
