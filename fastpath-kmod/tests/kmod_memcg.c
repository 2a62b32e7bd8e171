// SPDX-License-Identifier: GPL-2.0
/*
 * kmod_memcg: region memory on datapath=kmod is charged to its owner's
 * memory cgroup, not to whoever touches it first.
 *
 *   kmod_memcg owner NAME MIB   create /sys/fs/mshare/NAME with MIB MiB of
 *                               anonymous memory, print "ready", wait for a
 *                               line on stdin, remove the name
 *   kmod_memcg touch NAME MIB   attach NAME and write every page
 *   kmod_memcg check NAME MIB   attach NAME and check every page
 *
 * guest-memcg.sh runs the owner and the toucher in two cgroups and compares
 * their memory.current.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/msharefs.h>

#define START	(2ULL << 40)
#define PAGE	4096ULL

static void die(const char *what)
{
	fprintf(stderr, "kmod_memcg: %s: %s\n", what, strerror(errno));
	exit(1);
}

static char *attach(const char *path, int flags, uint64_t *size)
{
	struct mshare_info info;
	int fd = open(path, flags, 0600);
	char *w;

	if (fd < 0)
		die(path);
	if (flags & O_CREAT) {
		struct mshare_create c = { .addr = START, .size = *size, .prot = PROT_READ | PROT_WRITE,
					   .flags = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED, .fd = -1 };

		FILE *f = fopen("/sys/fs/mshare/mshare_info", "r");
		unsigned long long align = 0;

		if (!f || fscanf(f, "%llu", &align) != 1 || !align)
			die("/sys/fs/mshare/mshare_info");
		fclose(f);
		info = (struct mshare_info){ .start = START, .size = align };
		if (ioctl(fd, MSHAREFS_SET_SIZE, &info))
			die("MSHAREFS_SET_SIZE");
		if (ioctl(fd, MSHAREFS_CREATE_MAPPING, &c))
			die("MSHAREFS_CREATE_MAPPING");
	}
	if (ioctl(fd, MSHAREFS_GET_SIZE, &info))
		die("MSHAREFS_GET_SIZE");
	w = mmap((void *)(uintptr_t)info.start, info.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	if (w == MAP_FAILED)
		die("mmap of the window");
	close(fd);
	return w;
}

int main(int argc, char **argv)
{
	char path[256], line[16];
	uint64_t size, off;
	char *w;

	if (argc != 4 || (strcmp(argv[1], "owner") && strcmp(argv[1], "touch") && strcmp(argv[1], "check"))) {
		fprintf(stderr, "usage: kmod_memcg owner|touch|check NAME MIB\n");
		return 2;
	}
	snprintf(path, sizeof(path), "/sys/fs/mshare/%s", argv[2]);
	size = strtoull(argv[3], NULL, 10) << 20;
	if (!strcmp(argv[1], "owner")) {
		w = attach(path, O_RDWR | O_CREAT | O_EXCL, &size);
		printf("ready\n");
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			line[0] = 0;
		unlink(path);
		return 0;
	}
	w = attach(path, O_RDWR, &size);
	for (off = 0; off < size; off += PAGE) {
		if (!strcmp(argv[1], "touch")) {
			memcpy(w + off, &off, sizeof(off));
		} else {
			uint64_t seen;

			memcpy(&seen, w + off, sizeof(seen));
			if (seen != off) {
				fprintf(stderr, "kmod_memcg: page at %#llx holds %#llx\n", (unsigned long long)off,
					(unsigned long long)seen);
				return 1;
			}
		}
	}
	return 0;
}
