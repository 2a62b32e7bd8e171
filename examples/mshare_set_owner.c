/*
 * mshare_set_owner(): the creator hands its region to a child process; the
 * creator's own mshare_map() then fails with EPERM and the child's works.
 *
 * Build: cc mshare_set_owner.c -lmshare
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mshare.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1 << 20)

int main(void)
{
	int fd = mshare_create(O_CLOEXEC);
	int go[2], pidfd, status;
	pid_t child;
	char c = 'g';

	if (fd < 0 || ftruncate(fd, (off_t)mshare_alignment()) < 0 || pipe(go) < 0) {
		perror("setup");
		return 1;
	}
	fflush(stdout); /* nothing buffered twice */
	child = fork();
	if (child == 0) {
		/* The new owner, once the region is its. */
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		if (mshare_map(fd, 0, 2 * MIB, PROT_READ | PROT_WRITE, 0, -1, 0) < 0) {
			perror("mshare_map by the new owner");
			_exit(1);
		}
		printf("mshare_set_owner: the new owner (pid %d) maps the region\n", (int)getpid());
		fflush(stdout);
		_exit(0);
	}
	pidfd = (int)syscall(SYS_pidfd_open, child, 0);
	if (child < 0 || pidfd < 0 || mshare_set_owner(fd, pidfd) < 0) {
		perror("mshare_set_owner");
		return 1;
	}
	if (mshare_map(fd, 0, 2 * MIB, PROT_READ | PROT_WRITE, 0, -1, 0) != -1 || errno != EPERM) {
		fprintf(stderr, "the old owner's mshare_map was not refused with EPERM\n");
		return 1;
	}
	printf("mshare_set_owner: the old owner's mshare_map fails: %s\n", strerror(EPERM));
	if (write(go[1], &c, 1) != 1 || waitpid(child, &status, 0) != child)
		return 1;
	close(pidfd);
	close(fd);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
