/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared anonymous memory under mshare-run: mmap(MAP_SHARED|MAP_ANONYMOUS)
 * above the threshold is a window of a region, inherited across fork, with
 * mprotect, munmap and small or private mappings behaving as without it.
 */
#include "adopt_test.h"

#define LEN (80 * MIB + 12345) /* not a multiple of anything */

static volatile pid_t handler_tid;

static void note_handler_thread(int sig)
{
	(void)sig;
	handler_tid = gettid();
}

int main(void)
{
	const uint64_t align = test_alignment();
	char names[1024];
	char *p, *small, *priv;
	pid_t child;
	int status;

	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	if (p == MAP_FAILED)
		return test_result("adopt_anon");
	CHECK((uintptr_t)p % align == 0, "the window %p is not aligned to %llu", (void *)p,
	      (unsigned long long)align);
	CHECK(regions_of(getpid(), names, sizeof(names)) == 1, "not one region with this process: '%s'", names);
	CHECK(strncmp(names, "anon-", 5) == 0, "region name '%s'", names);
	CHECK(p[0] == 0 && p[LEN - 1] == 0, "new shared anonymous memory is not zero");
	fill(p, LEN, 7);
	p[LEN - 1] = 99;

	/*
	 * A process-directed signal runs the program's handler on the program's
	 * thread, as without the runtime: blocked here, it waits for the unblock
	 * (a postmaster blocks its signals and forks in their handlers).
	 */
	{
		sigset_t usr1, old;
		struct sigaction sa = { .sa_handler = note_handler_thread };

		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		sigaction(SIGUSR1, &sa, NULL);
		sigprocmask(SIG_BLOCK, &usr1, &old);
		kill(getpid(), SIGUSR1);
		usleep(200000);
		CHECK(handler_tid == 0, "the SIGUSR1 handler ran on thread %d while the program blocked it",
		      (int)handler_tid);
		sigprocmask(SIG_SETMASK, &old, NULL);
		CHECK(handler_tid == gettid(), "the SIGUSR1 handler ran on thread %d, not %d", (int)handler_tid,
		      (int)gettid());
		signal(SIGUSR1, SIG_DFL);
	}

	/* Below the threshold, or private: left alone. */
	small = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	priv = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(small != MAP_FAILED && priv != MAP_FAILED, "plain mmaps: %s", strerror(errno));
	CHECK(regions_of(getpid(), NULL, 0) == 1, "a small or private mapping was adopted");

	/* fork: the child shares it, and its stores reach the parent. */
	child = fork();
	if (child == 0) {
		failures = 0;
		CHECK(filled(p, LEN, 7) && p[LEN - 1] == 99, "the child does not see the parent's data");
		CHECK(regions_of(getpid(), NULL, 0) == 1, "the child has no window of the region");
		fill(p, LEN, 11);
		strcpy(p + 100, "from the child");
		_exit(failures ? 1 : 0);
	}
	CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "the child failed");
	CHECK(strcmp(p + 100, "from the child") == 0 && p[4096] == (char)12, "the child's stores are not seen");

	if (on_module()) {
		/* The module refuses mprotect of a window; the window stays. */
		CHECK(mprotect(p, 2 * MIB, PROT_READ) == -1 && errno == EINVAL, "mprotect was not refused");
		CHECK(!store_faults(p), "a store after a refused mprotect faults");
	} else {
		/* mprotect works as on shared anonymous memory, and is undone. */
		CHECK(mprotect(p, 2 * MIB, PROT_READ) == 0, "mprotect PROT_READ: %s", strerror(errno));
		CHECK(store_faults(p), "a store into a PROT_READ range does not fault");
		CHECK(!store_faults(p + 2 * MIB), "a store beyond the PROT_READ range faults");
		CHECK(mprotect(p, 2 * MIB, PROT_READ | PROT_WRITE) == 0, "mprotect back: %s", strerror(errno));
		CHECK(!store_faults(p), "a store after mprotect back faults");
		/* pkey_mprotect (the default key) as mprotect. */
		CHECK(pkey_mprotect(p, 2 * MIB, PROT_READ, -1) == 0, "pkey_mprotect: %s", strerror(errno));
		CHECK(store_faults(p), "a store after pkey_mprotect PROT_READ does not fault");
		CHECK(pkey_mprotect(p, 2 * MIB, PROT_READ | PROT_WRITE, -1) == 0 && !store_faults(p),
		      "pkey_mprotect back: %s", strerror(errno));
	}

	/* A partial munmap of adopted memory is refused; the memory stays. */
	CHECK(munmap(p + 2 * MIB, 2 * MIB) == -1 && errno == EINVAL, "a partial munmap was not refused");
	CHECK(!store_faults(p + 2 * MIB) && p[LEN - 1] == 99, "the window broke after a refused munmap");

	/* munmap with the length the program mapped frees the region. */
	CHECK(munmap(p, LEN) == 0, "munmap: %s", strerror(errno));
	CHECK(regions_of(getpid(), NULL, 0) == 0, "the region is still attached after munmap");
	names[strcspn(names, " ")] = 0;
	CHECK(!region_listed(names), "region %s is still held after its last window went", names);
	munmap(small, MIB);
	munmap(priv, LEN);

	/* MAP_HUGETLB, where the pool holds it: huge pages (on every data path). */
	if (free_huge_pages() >= 40) {
		const long free_before = free_huge_pages();

		p = mmap(NULL, 64 * MIB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		CHECK(p != MAP_FAILED, "MAP_HUGETLB: %s", strerror(errno));
		if (p != MAP_FAILED) {
			CHECK(regions_of(getpid(), NULL, 0) == 1, "MAP_HUGETLB memory was not adopted");
			CHECK(strcmp(backing_of(getpid()), "hugetlb") == 0, "MAP_HUGETLB backed by '%s'",
			      backing_of(getpid()));
			fill(p, 64 * MIB, 5);
			CHECK(free_huge_pages() <= free_before - 32, "MAP_HUGETLB memory is not in huge pages (%ld free of %ld)",
			      free_huge_pages(), free_before);
			CHECK(filled(p, 64 * MIB, 5) && munmap(p, 64 * MIB) == 0, "MAP_HUGETLB data or munmap");
		}
	}
	return test_result("adopt_anon");
}
