/*
 * shm_workers: an ordinary program that knows nothing of msharefs. It maps
 * shared anonymous memory, fills it, forks workers that each read all of it,
 * and reports the page-table memory its workers use for it. Run it as it is
 * and under mshare-run to see what sharing the page tables saves:
 *
 *   shm_workers [MIB [WORKERS]]               (default 1024 MiB, 8 workers)
 *   mshare-run -- shm_workers [MIB [WORKERS]]
 *
 * Build: cc shm_workers.c
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* A field of /proc/meminfo or /proc/PID/status, in kB; -1 if absent. */
static long kb_field(const char *path, const char *field)
{
	char line[256];
	long v = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, strlen(field)) == 0 && line[strlen(field)] == ':')
			v = atol(line + strlen(field) + 1);
	fclose(f);
	return v;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 1024;
	int workers = argc > 2 ? atoi(argv[2]) : 8;
	size_t len = mib << 20;
	int ready[2], release[2], i;
	long before, after, pte = 0;
	pid_t pids[256];
	char *mem, c;

	if (mib == 0 || workers < 1 || workers > 256) {
		fprintf(stderr, "usage: shm_workers [MIB [WORKERS (1-256)]]\n");
		return 2;
	}
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED || pipe(ready) < 0 || pipe(release) < 0) {
		perror("shm_workers: setup");
		return 1;
	}
	memset(mem, 1, len);
	before = kb_field("/proc/meminfo", "PageTables");
	for (i = 0; i < workers; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			volatile char sum = 0;

			close(release[1]); /* the parent's close is the release */
			for (size_t off = 0; off < len; off += 4096)
				sum += mem[off];
			if (write(ready[1], "r", 1) != 1 || read(release[0], &c, 1) < 0)
				_exit(1);
			_exit(0);
		}
		if (pids[i] < 0) {
			perror("shm_workers: fork");
			return 1;
		}
	}
	for (i = 0; i < workers; i++)
		if (read(ready[0], &c, 1) != 1)
			return 1;
	after = kb_field("/proc/meminfo", "PageTables");
	for (i = 0; i < workers; i++) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/status", (int)pids[i]);
		pte += kb_field(path, "VmPTE");
	}
	close(release[1]);
	for (i = 0; i < workers; i++)
		waitpid(pids[i], NULL, 0);
	printf("shm_workers: %d workers read %zu MiB of shared memory: their page tables %ld kB "
	       "(VmPTE), PageTables grew %ld kB\n",
	       workers, mib, pte, after - before);
	return 0;
}
