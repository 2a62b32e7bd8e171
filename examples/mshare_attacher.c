// SPDX-License-Identifier: GPL-2.0
/*
 * mshare_attacher: attach an existing mshare region and use its memory.
 *
 * This is the attacher side of the msharefs documentation example, using only
 * the files and ioctls of <linux/msharefs.h>:
 *
 *   1. open the region: open("/sys/fs/mshare/NAME", O_RDWR);
 *   2. ask where it lives with MSHAREFS_GET_SIZE;
 *   3. attach the window with mmap() of the region file at that start;
 *   4. use the memory like any other: it is the creator's memory, reached
 *      through the same page tables the creator uses.
 *
 * It prints the two messages mshare_creator (or mshare_lib_creator) left in
 * the region, writes "attacher <pid> was here" at offset 4096 for the creator
 * to see, and exits.
 *
 * Usage, with msharefs mounted at /sys/fs/mshare and a creator running:
 *
 *   $ ./mshare_creator &      # wait for "creator: ready"
 *   $ ./mshare_attacher [NAME]
 *
 * NAME defaults to "example".
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/msharefs.h>

#define MB(x)		((unsigned long long)(x) << 20)

#define MSG_OFFSET	0
#define MSG2_OFFSET	MB(1)
#define ACK_OFFSET	4096
#define MSG_MAX		256

static void usage(FILE *out, const char *prog)
{
	fprintf(out,
		"usage: %s [NAME]\n"
		"\n"
		"Attaches the mshare region /sys/fs/mshare/NAME (default \"example\")\n"
		"created by mshare_creator: finds its start and size with\n"
		"MSHAREFS_GET_SIZE, maps the window there, prints the creator's two\n"
		"messages and writes an acknowledgement at offset 4096.\n",
		prog);
}

static int fail(const char *what)
{
	fprintf(stderr, "attacher: %s: %s\n", what, strerror(errno));
	return 1;
}

/* Prints the NUL-terminated message at offset off of the window. */
static int print_message(const char *addr, unsigned long long off)
{
	size_t len = strnlen(addr + off, MSG_MAX);

	if (len == MSG_MAX) {
		fprintf(stderr, "attacher: no message at offset %#llx\n", off);
		return -1;
	}
	printf("attacher: read \"%s\" at offset %#llx\n", addr + off, off);
	return 0;
}

int main(int argc, char *argv[])
{
	const char *name = "example";
	char path[PATH_MAX];
	char ack[64];
	struct mshare_info minfo;
	char *addr;
	int fd, len, ret = 1;

	/* One line at a time, in order with stderr, even into a pipe. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout, argv[0]);
		return 0;
	}
	if (argc > 2 || (argc > 1 && argv[1][0] == '-')) {
		usage(stderr, argv[0]);
		return 2;
	}
	if (argc > 1)
		name = argv[1];
	if (snprintf(path, sizeof(path), "/sys/fs/mshare/%s", name) >=
	    (int)sizeof(path)) {
		fprintf(stderr, "attacher: name too long\n");
		return 2;
	}

	fd = open(path, O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "attacher: open %s: %s\n", path, strerror(errno));
		return 1;
	}

	/* Where the creator put the region, and how big it is. */
	if (ioctl(fd, MSHAREFS_GET_SIZE, &minfo) < 0) {
		fail("ioctl MSHAREFS_GET_SIZE");
		goto out_close;
	}
	if (minfo.size < MSG2_OFFSET + MSG_MAX) {
		fprintf(stderr, "attacher: region size %#llx is too small for this example\n",
			(unsigned long long)minfo.size);
		goto out_close;
	}

	/* Attach the window at the region start. */
	addr = mmap((void *)(uintptr_t)minfo.start, minfo.size,
		    PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED) {
		fail("mmap");
		goto out_close;
	}
	if ((uintptr_t)addr != minfo.start) {
		fprintf(stderr, "attacher: mmap: got %p instead of %#llx\n",
			(void *)addr, (unsigned long long)minfo.start);
		goto out_munmap;
	}

	printf("attacher: attached %s: start %#llx size %#llx\n", path,
	       (unsigned long long)minfo.start, (unsigned long long)minfo.size);
	if (print_message(addr, MSG_OFFSET) < 0 ||
	    print_message(addr, MSG2_OFFSET) < 0)
		goto out_munmap;

	/*
	 * Write the acknowledgement's first byte last: the creator polls it
	 * and reads the rest once it is non-zero.
	 */
	len = snprintf(ack, sizeof(ack), "attacher %d was here", (int)getpid());
	memcpy(addr + ACK_OFFSET + 1, ack + 1, len);
	__atomic_store_n(addr + ACK_OFFSET, ack[0], __ATOMIC_RELEASE);

	/* Push out the acknowledgement (msync wants a page-aligned start). */
	if (msync(addr, ACK_OFFSET + len + 1, MS_SYNC) < 0) {
		fail("msync");
		goto out_munmap;
	}
	printf("attacher: wrote \"%s\" at offset %#x\n", ack, ACK_OFFSET);
	ret = 0;

out_munmap:
	if (munmap(addr, minfo.size) < 0 && !ret) {
		fail("munmap");
		ret = 1;
	}
out_close:
	if (close(fd) < 0 && !ret) {
		fail("close");
		ret = 1;
	}
	return ret;
}
