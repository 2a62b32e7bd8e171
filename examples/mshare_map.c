/*
 * mshare_map(): a memfd mapped read-only at the start of a region and fresh
 * anonymous memory after it; the window shows both. mshare_unmap() removes
 * the anonymous range again.
 *
 * Build: cc mshare_map.c -lmshare
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <mshare.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB (1 << 20)

int main(void)
{
	static const char text[] = "text of a memfd";
	size_t size = (size_t)mshare_alignment();
	int fd = mshare_create(O_CLOEXEC);
	int memfd = memfd_create("mshare-map-example", MFD_CLOEXEC);
	char *window;

	if (fd < 0 || memfd < 0 || ftruncate(fd, (off_t)size) < 0 || ftruncate(memfd, 2 * MIB) < 0 ||
	    pwrite(memfd, text, sizeof(text), 0) != (ssize_t)sizeof(text)) {
		perror("setup");
		return 1;
	}
	if (mshare_map(fd, 0, 2 * MIB, PROT_READ, 0, memfd, 0) < 0 ||
	    mshare_map(fd, 2 * MIB, 2 * MIB, PROT_READ | PROT_WRITE, 0, -1, 0) < 0) {
		perror("mshare_map");
		return 1;
	}
	window = mshare_attach(fd, 0, size, NULL, 0);
	if (window == MAP_FAILED) {
		perror("mshare_attach");
		return 1;
	}
	strcpy(window + 2 * MIB, "anonymous memory");
	printf("mshare_map: the memfd reads \"%s\", the anonymous mapping \"%s\"\n", window, window + 2 * MIB);
	if (strcmp(window, text) != 0)
		return 1;
	/* mshare_unmap() takes the anonymous range away; mapped again, it is new memory. */
	if (mshare_unmap(fd, 2 * MIB, 2 * MIB) < 0 ||
	    mshare_map(fd, 2 * MIB, 2 * MIB, PROT_READ | PROT_WRITE, 0, -1, 0) < 0) {
		perror("mshare_unmap, mshare_map");
		return 1;
	}
	printf("mshare_map: after mshare_unmap and mshare_map again the range reads %s\n",
	       window[2 * MIB] ? "old data" : "zeros");
	if (window[2 * MIB])
		return 1;
	munmap(window, size);
	close(memfd);
	close(fd);
	return 0;
}
