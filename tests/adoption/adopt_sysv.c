/* SPDX-License-Identifier: GPL-2.0 */
/*
 * System V shared memory under mshare-run, the way Oracle's SGA and
 * PostgreSQL's shared_memory_type=sysv use it: a segment above the threshold
 * lives in a region, found by unrelated processes through its key, with
 * IPC_STAT, IPC_RMID while attached, SHM_RDONLY, fork and the errors of the
 * calls it replaces.
 */
#include "adopt_test.h"

#include <sys/ipc.h>
#include <sys/shm.h>

#define LEN (96 * MIB + 100)

/* An unrelated process: attaches through the key, checks, writes back. */
static int attacher(key_t key)
{
	int id = shmget(key, 0, 0);
	struct shmid_ds ds;
	char *p, *ro;

	CHECK(id >= 0, "shmget by key: %s", strerror(errno));
	if (id < 0)
		return 1;
	CHECK(shmget(key, LEN + 4096 * 1024, 0) == -1 && errno == EINVAL, "a larger size was not refused");
	p = shmat(id, NULL, 0);
	CHECK(p != (void *)-1, "shmat: %s", strerror(errno));
	if (p == (void *)-1)
		return 1;
	CHECK(filled(p, LEN, 3), "the attacher does not see the creator's data");
	CHECK(regions_of(getpid(), NULL, 0) == 1, "the attacher has no window of the region");
	CHECK(shmctl(id, IPC_STAT, &ds) == 0 && ds.shm_nattch == 2, "shm_nattch %lu, not 2",
	      (unsigned long)ds.shm_nattch);
	ro = shmat(id, NULL, SHM_RDONLY);
	CHECK(ro != (void *)-1 && ro[4096] == (char)4, "SHM_RDONLY attach: %s", strerror(errno));
	if (ro != (void *)-1) {
		CHECK(store_faults(ro), "a store through a SHM_RDONLY attach does not fault");
		CHECK(mprotect(ro, 4096, PROT_READ | PROT_WRITE) == -1 && errno == EACCES,
		      "mprotect made a SHM_RDONLY attach writable");
		CHECK(shmdt(ro) == 0, "shmdt of the read-only attach: %s", strerror(errno));
	}
	strcpy(p + 64, "unrelated attacher");
	CHECK(shmdt(p) == 0, "shmdt: %s", strerror(errno));
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	const uint64_t align = test_alignment();
	key_t key;
	struct shmid_ds ds;
	char *p, keytext[32], names[1024];
	int id, small, status;
	pid_t child;

	if (argc == 3 && strcmp(argv[1], "attach") == 0)
		return attacher((key_t)strtol(argv[2], NULL, 0));

	key = (key_t)(0x6d730000 | (getpid() & 0xffff));
	id = shmget(key, LEN, IPC_CREAT | IPC_EXCL | 0600);
	CHECK(id >= 0, "shmget IPC_CREAT: %s", strerror(errno));
	if (id < 0)
		return test_result("adopt_sysv");
	CHECK(shmget(key, LEN, IPC_CREAT | IPC_EXCL | 0600) == -1 && errno == EEXIST, "IPC_EXCL did not fail EEXIST");
	CHECK(shmget(key, 0, 0) == id, "shmget of the key is another id");
	CHECK(shmctl(id, IPC_STAT, &ds) == 0 && ds.shm_segsz == LEN && ds.shm_nattch == 0 &&
		      ds.shm_cpid == getpid(),
	      "IPC_STAT: size %zu nattch %lu cpid %d", (size_t)ds.shm_segsz, (unsigned long)ds.shm_nattch,
	      (int)ds.shm_cpid);

	p = shmat(id, NULL, 0);
	CHECK(p != (void *)-1, "shmat: %s", strerror(errno));
	if (p == (void *)-1)
		return test_result("adopt_sysv");
	CHECK((uintptr_t)p % align == 0, "the attach %p is not aligned", (void *)p);
	CHECK(regions_of(getpid(), NULL, 0) == 1, "the segment is not in a region");
	CHECK(p[0] == 0 && p[LEN - 1] == 0, "a new segment is not zero");
	fill(p, LEN, 3);
	CHECK(shmat(id, (char *)p + 4096, 0) == (void *)-1 && errno == EINVAL,
	      "shmat at an unaligned address was not refused");

	snprintf(keytext, sizeof(keytext), "%d", (int)key);
	CHECK(run_unrelated((char *[]){"attach", keytext, NULL}) == 0, "the unrelated attacher failed");
	CHECK(strcmp(p + 64, "unrelated attacher") == 0, "the unrelated attacher's store is not seen");

	/* fork: the child inherits the attach. */
	child = fork();
	if (child == 0) {
		failures = 0;
		CHECK(shmctl(id, IPC_STAT, &ds) == 0 && ds.shm_nattch == 2, "after fork shm_nattch %lu",
		      (unsigned long)ds.shm_nattch);
		strcpy(p + 128, "forked child");
		_exit(failures ? 1 : 0);
	}
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "the forked child failed");
	CHECK(strcmp(p + 128, "forked child") == 0, "the forked child's store is not seen");

	/* IPC_RMID while attached: the memory stays until the last detach. */
	CHECK(shmctl(id, IPC_RMID, NULL) == 0, "IPC_RMID: %s", strerror(errno));
	CHECK(shmget(key, 0, 0) == -1 && errno == ENOENT, "the key still finds a removed segment");
	CHECK(strcmp(p + 64, "unrelated attacher") == 0 && filled(p + 4096, LEN - 4096, 4),
	      "data lost at IPC_RMID while attached");
	p[LEN - 1] = 1;
	CHECK(regions_of(getpid(), names, sizeof(names)) == 1 && strncmp(names, "sysv-", 5) == 0,
	      "the region went at IPC_RMID while attached: '%s'", names);
	CHECK(shmdt(p) == 0, "shmdt: %s", strerror(errno));
	CHECK(regions_of(getpid(), NULL, 0) == 0, "still attached after shmdt");
	names[strcspn(names, " ")] = 0;
	CHECK(names[0] && !region_listed(names), "the region %s of a removed, detached segment is still held", names);
	CHECK(shmdt(p) == -1 && errno == EINVAL, "a second shmdt did not fail EINVAL");

	/* Small segments are the kernel's. */
	small = shmget(IPC_PRIVATE, MIB, IPC_CREAT | 0600);
	CHECK(small >= 0 && shmctl(small, IPC_STAT, &ds) == 0 && ds.shm_segsz == MIB, "a small segment");
	p = shmat(small, NULL, 0);
	CHECK(p != (void *)-1 && regions_of(getpid(), NULL, 0) == 0, "a small segment was adopted");
	shmdt(p);
	shmctl(small, IPC_RMID, NULL);

	/* IPC_PRIVATE segments above the threshold are adopted too. */
	id = shmget(IPC_PRIVATE, LEN, IPC_CREAT | 0600);
	p = id >= 0 ? shmat(id, NULL, 0) : (void *)-1;
	CHECK(p != (void *)-1 && regions_of(getpid(), NULL, 0) == 1, "an IPC_PRIVATE segment was not adopted");
	if (id >= 0)
		shmctl(id, IPC_RMID, NULL);
	if (p != (void *)-1)
		shmdt(p);

	/* SHM_HUGETLB, where the pool holds it: huge pages (on every data path). */
	if (free_huge_pages() >= 40) {
		const long free_before = free_huge_pages();

		id = shmget(IPC_PRIVATE, 64 * MIB, IPC_CREAT | SHM_HUGETLB | 0600);
		p = id >= 0 ? shmat(id, NULL, 0) : (void *)-1;
		CHECK(p != (void *)-1, "SHM_HUGETLB: %s", strerror(errno));
		if (p != (void *)-1) {
			CHECK(strcmp(backing_of(getpid()), "hugetlb") == 0, "SHM_HUGETLB backed by '%s'",
			      backing_of(getpid()));
			fill(p, 64 * MIB, 6);
			CHECK(free_huge_pages() <= free_before - 32, "SHM_HUGETLB memory is not in huge pages (%ld free of %ld)",
			      free_huge_pages(), free_before);
			CHECK(filled(p, 64 * MIB, 6), "SHM_HUGETLB data");
			shmdt(p);
		}
		if (id >= 0)
			shmctl(id, IPC_RMID, NULL);
	}
	return test_result("adopt_sysv");
}
