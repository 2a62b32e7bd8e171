/*
 * mshare_attach(): the window of a region at an address the library picks;
 * a child process drops the window it inherited and attaches its own,
 * read-only, and reads what the parent wrote.
 *
 * Build: cc mshare_attach.c -lmshare
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <mshare.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
	size_t size = (size_t)mshare_alignment();
	int fd = mshare_create(0);
	char *window;
	pid_t child;
	int status;

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0 ||
	    mshare_map(fd, 0, 2 << 20, PROT_READ | PROT_WRITE, 0, -1, 0) < 0) {
		perror("mshare_create/ftruncate/mshare_map");
		return 1;
	}
	window = mshare_attach(fd, 0, size, NULL, 0);
	if (window == MAP_FAILED) {
		perror("mshare_attach");
		return 1;
	}
	strcpy(window, "written through the parent's window");

	fflush(stdout); /* nothing buffered twice */
	child = fork();
	if (child == 0) {
		char *mine;

		munmap(window, size);
		mine = mshare_attach(fd, 0, size, NULL, MSHARE_ATTACH_RDONLY);
		if (mine == MAP_FAILED) {
			perror("mshare_attach in the child");
			_exit(1);
		}
		printf("mshare_attach: the child's window at %p reads \"%s\"\n", (void *)mine, mine);
		fflush(stdout);
		_exit(strcmp(mine, "written through the parent's window") != 0);
	}
	if (child < 0 || waitpid(child, &status, 0) != child) {
		perror("fork");
		return 1;
	}
	printf("mshare_attach: the parent's window at %p\n", (void *)window);
	munmap(window, size);
	close(fd);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
