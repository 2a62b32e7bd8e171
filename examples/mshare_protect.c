/*
 * mshare_protect(): a range made read-only for every attacher; a child's
 * store there faults, and after the range is writable again it does not.
 *
 * Build: cc mshare_protect.c -lmshare
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <mshare.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1 << 20)

/* The signal that ended a child storing to p, or 0. */
static int store_in_child(char *p)
{
	int status;
	pid_t child;

	fflush(stdout); /* nothing buffered twice */
	child = fork();
	if (child == 0) {
		*(volatile char *)p = 'x';
		_exit(0);
	}
	if (child < 0 || waitpid(child, &status, 0) != child)
		return -1;
	return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

int main(void)
{
	size_t size = (size_t)mshare_alignment();
	int fd = mshare_create(O_CLOEXEC);
	char *window;
	int sig;

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
	strcpy(window, "before mshare_protect");
	if (mshare_protect(fd, 0, 2 * MIB, PROT_READ) < 0) {
		perror("mshare_protect");
		return 1;
	}
	sig = store_in_child(window);
	printf("mshare_protect: PROT_READ: a store faults (%s); the data reads \"%s\"\n",
	       sig > 0 ? strsignal(sig) : "no fault", window);
	if (sig != SIGSEGV && sig != SIGBUS)
		return 1;
	if (mshare_protect(fd, 0, 2 * MIB, PROT_READ | PROT_WRITE) < 0 || store_in_child(window) != 0) {
		perror("mshare_protect back to PROT_READ | PROT_WRITE");
		return 1;
	}
	printf("mshare_protect: PROT_READ | PROT_WRITE: stores work again\n");
	munmap(window, size);
	close(fd);
	return 0;
}
