/* SPDX-License-Identifier: GPL-2.0 */
/*
 * POSIX shared memory under mshare-run (PostgreSQL's dynamic shared memory,
 * larger): a shm_open file mapped MAP_SHARED above the threshold is a window
 * of its file range's implicit region, which an unrelated process opening
 * the name shares; the data is the file's.
 */
#include "adopt_test.h"

#define LEN (72 * MIB)

static int attacher(const char *name)
{
	int fd = shm_open(name, O_RDWR, 0);
	char *p;

	CHECK(fd >= 0, "shm_open: %s", strerror(errno));
	if (fd < 0)
		return 1;
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	if (p == MAP_FAILED)
		return 1;
	CHECK(filled(p, LEN, 5), "the unrelated process does not see the data");
	CHECK(regions_of(getpid(), NULL, 0) == 1, "the unrelated process has no window of the region");
	strcpy(p + 64, "unrelated");
	CHECK(munmap(p, LEN) == 0, "munmap: %s", strerror(errno));
	close(fd);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	char name[64], names[1024];
	char *p, *ro;
	int fd, rofd, status;
	pid_t child;

	if (argc == 3 && strcmp(argv[1], "attach") == 0)
		return attacher(argv[2]);
	snprintf(name, sizeof(name), "/adopt-shm-%d", (int)getpid());
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	CHECK(fd >= 0 && ftruncate(fd, LEN) == 0, "shm_open: %s", strerror(errno));
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	if (p == MAP_FAILED)
		return test_result("adopt_shm");
	CHECK(regions_of(getpid(), names, sizeof(names)) == 1 && strncmp(names, "pt-", 3) == 0,
	      "not in an implicit region: '%s'", names);
	fill(p, LEN, 5);
	CHECK(run_unrelated((char *[]){"attach", name, NULL}) == 0, "the unrelated process failed");
	CHECK(strcmp(p + 64, "unrelated") == 0, "the unrelated process's store is not seen");

	child = fork();
	if (child == 0) {
		failures = 0;
		strcpy(p + 128, "child");
		_exit(regions_of(getpid(), NULL, 0) == 1 ? 0 : 1);
	}
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "the forked child has no window");
	CHECK(strcmp(p + 128, "child") == 0, "the child's store is not seen");

	/* The data is the file's: read it back through the descriptor. */
	char buf[16] = "";
	CHECK(pread(fd, buf, 10, 64) == 10 && memcmp(buf, "unrelated", 9) == 0, "the file does not hold the data");

	/* A read-only descriptor maps read-only, and not writable. */
	rofd = shm_open(name, O_RDONLY, 0);
	CHECK(mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, rofd, 0) == MAP_FAILED && errno == EACCES,
	      "a read-only descriptor was mapped writable");
	ro = mmap(NULL, LEN, PROT_READ, MAP_SHARED, rofd, 0);
	CHECK(ro != MAP_FAILED && ro[64] == 'u', "a read-only mapping: %s", strerror(errno));
	if (ro != MAP_FAILED) {
		CHECK(store_faults(ro + 64), "a store through a read-only mapping does not fault");
		munmap(ro, LEN);
	}
	close(rofd);

	/* shm_unlink while mapped: the mapping stays. */
	CHECK(shm_unlink(name) == 0 && strcmp(p + 128, "child") == 0, "shm_unlink while mapped");
	CHECK(munmap(p, LEN) == 0, "munmap: %s", strerror(errno));
	CHECK(regions_of(getpid(), NULL, 0) == 0, "still attached after munmap");
	names[strcspn(names, " ")] = 0;
	CHECK(!region_listed(names), "implicit region %s is held after its last window", names);
	close(fd);
	return test_result("adopt_shm");
}
