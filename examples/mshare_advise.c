/*
 * mshare_advise(): MADV_DONTNEED frees a range's memory for every attacher
 * (it reads as zeros after), MADV_WILLNEED reads it ahead, and other advice
 * is refused with EINVAL.
 *
 * Build: cc mshare_advise.c -lmshare
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mshare.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB (1 << 20)

int main(void)
{
	size_t size = (size_t)mshare_alignment();
	int fd = mshare_create(O_CLOEXEC);
	char *window;

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0 ||
	    mshare_map(fd, 0, 2 * MIB, PROT_READ | PROT_WRITE, 0, -1, 0) < 0) {
		perror("setup");
		return 1;
	}
	window = mshare_attach(fd, 0, size, NULL, 0);
	if (window == MAP_FAILED) {
		perror("mshare_attach");
		return 1;
	}
	memset(window, 'a', 2 * MIB);
	if (mshare_advise(fd, 0, 2 * MIB, MADV_WILLNEED) < 0) {
		perror("mshare_advise(MADV_WILLNEED)");
		return 1;
	}
	if (mshare_advise(fd, 0, MIB, MADV_DONTNEED) < 0) {
		if (errno == EOPNOTSUPP) {
			/* datapath=kmod: the module keeps the memory itself */
			printf("mshare_advise: MADV_DONTNEED is not supported on this data path\n");
			return 0;
		}
		perror("mshare_advise(MADV_DONTNEED)");
		return 1;
	}
	printf("mshare_advise: after MADV_DONTNEED of the first MiB: byte 0 is %d, byte 1 MiB is '%c'\n",
	       window[0], window[MIB]);
	if (window[0] != 0 || window[MIB] != 'a')
		return 1;
	if (mshare_advise(fd, 0, MIB, MADV_RANDOM) != -1 || errno != EINVAL) {
		fprintf(stderr, "MADV_RANDOM was not refused with EINVAL\n");
		return 1;
	}
	munmap(window, size);
	close(fd);
	return 0;
}
