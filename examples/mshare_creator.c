// SPDX-License-Identifier: GPL-2.0
/*
 * mshare_creator: create an mshare region and share memory through it.
 *
 * This is the creator side of the msharefs documentation example, using only
 * the files and ioctls of <linux/msharefs.h>:
 *
 *   1. read the alignment the mount requires from /sys/fs/mshare/mshare_info;
 *   2. create the region: open("/sys/fs/mshare/NAME", O_RDWR|O_CREAT|O_EXCL);
 *   3. give it a start address and size with MSHAREFS_SET_SIZE;
 *   4. put shared anonymous memory in it with MSHAREFS_CREATE_MAPPING;
 *   5. attach the window with mmap() of the region file, at the region start;
 *   6. use the memory like any other.
 *
 * It writes one message at the start of the window and a second one 1 MiB in,
 * prints "creator: ready", and waits for an attacher (mshare_attacher or
 * mshare_lib_attacher) to write an acknowledgement at offset 4096. Then it
 * removes the name and exits. Every process attached to the region shares one
 * set of page tables for it.
 *
 * Usage, with msharefs mounted at /sys/fs/mshare:
 *
 *   $ ./mshare_creator [NAME [TIMEOUT_SECONDS]]
 *   # and, in another shell, once "creator: ready" is printed:
 *   $ ./mshare_attacher [NAME]
 *
 * NAME defaults to "example", TIMEOUT_SECONDS to 60.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/msharefs.h>

#define TB(x)		((unsigned long long)(x) << 40)
#define MB(x)		((unsigned long long)(x) << 20)

#define MSG_OFFSET	0
#define MSG2_OFFSET	MB(1)
#define ACK_OFFSET	4096
#define ACK_MAX		256

static const char msg[] = "Hello from the mshare creator!";
static const char msg2[] = "This one is 1 MiB into the window.";

static void usage(FILE *out, const char *prog)
{
	fprintf(out,
		"usage: %s [NAME [TIMEOUT_SECONDS]]\n"
		"\n"
		"Creates the mshare region /sys/fs/mshare/NAME (default \"example\")\n"
		"with the msharefs ioctls, maps shared anonymous memory into it at\n"
		"2 TiB, writes two messages, prints \"creator: ready\" and waits up to\n"
		"TIMEOUT_SECONDS (default 60) for an attacher to acknowledge at\n"
		"offset 4096. Then it removes the name and exits.\n"
		"Run mshare_attacher NAME in another shell to attach.\n",
		prog);
}

static int fail(const char *what)
{
	fprintf(stderr, "creator: %s: %s\n", what, strerror(errno));
	return 1;
}

/* Reads the alignment (decimal text) from /sys/fs/mshare/mshare_info. */
static int read_alignment(unsigned long long *align)
{
	char buf[64], *end;
	ssize_t n;
	int fd;

	fd = open("/sys/fs/mshare/mshare_info", O_RDONLY);
	if (fd < 0) {
		fail("open /sys/fs/mshare/mshare_info");
		return -1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0) {
		fail("read /sys/fs/mshare/mshare_info");
		close(fd);
		return -1;
	}
	close(fd);
	buf[n] = '\0';

	errno = 0;
	*align = strtoull(buf, &end, 10);
	if (errno || end == buf || (*end && *end != '\n') || !*align) {
		fprintf(stderr, "creator: bad alignment in mshare_info: \"%s\"\n",
			buf);
		return -1;
	}
	return 0;
}

int main(int argc, char *argv[])
{
	const char *name = "example";
	unsigned long timeout = 60;
	unsigned long long align;
	char path[PATH_MAX];
	struct mshare_info minfo;
	struct mshare_create mcreate;
	const char *ack;
	char *addr;
	long polls;
	int fd, ret = 1;

	/* One line at a time, in order with stderr, even into a pipe. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout, argv[0]);
		return 0;
	}
	if (argc > 3 || (argc > 1 && argv[1][0] == '-')) {
		usage(stderr, argv[0]);
		return 2;
	}
	if (argc > 1)
		name = argv[1];
	if (argc > 2) {
		char *end;

		errno = 0;
		timeout = strtoul(argv[2], &end, 10);
		if (errno || end == argv[2] || *end || !timeout) {
			fprintf(stderr, "creator: bad timeout \"%s\"\n", argv[2]);
			return 2;
		}
	}
	if (snprintf(path, sizeof(path), "/sys/fs/mshare/%s", name) >=
	    (int)sizeof(path)) {
		fprintf(stderr, "creator: name too long\n");
		return 2;
	}

	/* The region start and size must be multiples of this. */
	if (read_alignment(&align) < 0)
		return 1;
	if (align < MSG2_OFFSET + sizeof(msg2)) {
		fprintf(stderr, "creator: alignment %llu is too small for this example\n",
			align);
		return 1;
	}

	/* Create the region. O_EXCL: never reuse someone else's. */
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		fprintf(stderr, "creator: open %s: %s\n", path, strerror(errno));
		return 1;
	}

	/* The region covers [2 TiB, 2 TiB + align) of every attacher. */
	minfo.start = TB(2);
	minfo.size = align;
	if (ioctl(fd, MSHAREFS_SET_SIZE, &minfo) < 0) {
		fail("ioctl MSHAREFS_SET_SIZE");
		goto out_unlink;
	}

	/* Fill the whole region with shared anonymous memory. */
	memset(&mcreate, 0, sizeof(mcreate));
	mcreate.addr = TB(2);
	mcreate.size = align;
	mcreate.offset = 0;
	mcreate.prot = PROT_READ | PROT_WRITE;
	mcreate.flags = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;
	mcreate.fd = -1;
	if (ioctl(fd, MSHAREFS_CREATE_MAPPING, &mcreate) < 0) {
		fail("ioctl MSHAREFS_CREATE_MAPPING");
		goto out_unlink;
	}

	/* Attach the window: the region file mapped at its start. */
	addr = mmap((void *)(uintptr_t)TB(2), align, PROT_READ | PROT_WRITE,
		    MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED) {
		fail("mmap");
		goto out_unlink;
	}
	if ((uintptr_t)addr != TB(2)) {
		fprintf(stderr, "creator: mmap: got %p instead of %#llx\n",
			(void *)addr, TB(2));
		munmap(addr, align);
		goto out_unlink;
	}

	/* From here on it is ordinary memory. */
	memcpy(addr + MSG_OFFSET, msg, sizeof(msg));
	memcpy(addr + MSG2_OFFSET, msg2, sizeof(msg2));

	printf("creator: sharing %s: start %#llx size %#llx\n",
	       path, (unsigned long long)minfo.start,
	       (unsigned long long)minfo.size);
	printf("creator: wrote \"%s\" at offset %#llx\n",
	       msg, (unsigned long long)MSG_OFFSET);
	printf("creator: wrote \"%s\" at offset %#llx\n",
	       msg2, (unsigned long long)MSG2_OFFSET);
	printf("creator: ready\n");
	fflush(stdout);

	/*
	 * The attacher writes the acknowledgement's first byte last, so a
	 * non-zero first byte means the whole string is there.
	 */
	ack = addr + ACK_OFFSET;
	for (polls = 0; !__atomic_load_n(ack, __ATOMIC_ACQUIRE); polls++) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 10 * 1000 * 1000 };

		if (polls >= (long)timeout * 100) {
			fprintf(stderr,
				"creator: timed out after %lu s waiting for an acknowledgement\n",
				timeout);
			goto out_munmap;
		}
		nanosleep(&ts, NULL);
	}
	printf("creator: got \"%.*s\" at offset %#x\n",
	       (int)strnlen(ack, ACK_MAX), ack,
	       ACK_OFFSET);

	/* Remove the name; the region lives on until its last user is gone. */
	if (unlink(path) < 0) {
		fail("unlink");
		goto out_munmap;
	}
	printf("creator: removed %s\n", path);
	ret = 0;

out_munmap:
	if (munmap(addr, align) < 0 && !ret) {
		fail("munmap");
		ret = 1;
	}
out_unlink:
	if (ret)
		unlink(path);
	if (close(fd) < 0 && !ret) {
		fail("close");
		ret = 1;
	}
	return ret;
}
