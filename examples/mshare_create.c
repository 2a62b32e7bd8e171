/*
 * mshare_create(): a new nameless region, owned by this process, sized with
 * ftruncate() to the alignment the mount requires.
 *
 * Build: cc mshare_create.c -lmshare
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mshare.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void)
{
	unsigned long long size = mshare_alignment();
	struct stat st;
	int fd;

	if (!size) {
		perror("mshare_alignment");
		return 1;
	}
	fd = mshare_create(O_CLOEXEC);
	if (fd < 0) {
		perror("mshare_create");
		return 1;
	}
	if (ftruncate(fd, (off_t)size) < 0 || fstat(fd, &st) < 0) {
		perror("ftruncate");
		return 1;
	}
	printf("mshare_create: a nameless region of %lld bytes\n", (long long)st.st_size);
	/* Only O_CLOEXEC is a flag. */
	if (mshare_create(O_RDWR) != -1 || errno != EINVAL) {
		fprintf(stderr, "mshare_create(O_RDWR) was not refused with EINVAL\n");
		return 1;
	}
	close(fd);
	return 0;
}
