// SPDX-License-Identifier: GPL-2.0
/*
 * mshare_lib_attacher: attach an mshare region with the libmshare calls.
 *
 * The same example as mshare_attacher, written with the 2022 mshare API that
 * libmshare provides (<mshare.h>) instead of the raw msharefs ioctls:
 *
 *   fd = mshare(name, addr, len, O_RDWR, 0);
 *
 * attaches the existing region NAME and maps its window at addr. In this API
 * the attacher states where it expects the region: addr and len must be the
 * region's start and size (EINVAL otherwise). Here that is 2 TiB and one
 * alignment unit (mshare_alignment()), as mshare_lib_creator and
 * mshare_creator make it.
 *
 * It prints the two messages the creator left in the region, writes
 * "attacher <pid> was here" at offset 4096 for the creator to see, and exits.
 *
 * Usage, with msharefs mounted and a creator running:
 *
 *   $ ./mshare_lib_creator &      # wait for "creator: ready"
 *   $ ./mshare_lib_attacher [NAME]
 *
 * NAME defaults to "example".
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mshare.h>

#define TB(x)		((unsigned long long)(x) << 40)
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
		"Attaches the mshare region NAME (default \"example\") at 2 TiB with\n"
		"the libmshare call mshare(NAME, addr, len, O_RDWR, 0), prints the\n"
		"creator's two messages and writes an acknowledgement at offset 4096.\n"
		"Start mshare_lib_creator NAME first.\n",
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
	unsigned long long align;
	const char *mnt, *rel;
	char *addr = (char *)(uintptr_t)TB(2);
	char ack[64];
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
	/* Names are relative to the mount; a leading '/' is allowed. */
	for (rel = name; *rel == '/'; rel++)
		;

	mnt = mshare_mount_point();
	if (!mnt)
		return fail("mshare_mount_point");
	align = mshare_alignment();
	if (!align)
		return fail("mshare_alignment");
	if (align < MSG2_OFFSET + MSG_MAX) {
		fprintf(stderr, "attacher: alignment %llu is too small for this example\n",
			align);
		return 1;
	}

	/* Attach the region; it must start at 2 TiB and be align bytes. */
	fd = mshare(name, addr, align, O_RDWR, 0);
	if (fd < 0) {
		fprintf(stderr, "attacher: mshare %s: %s\n", name, strerror(errno));
		return 1;
	}

	printf("attacher: attached %s/%s: start %#llx size %#llx\n",
	       mnt, rel, TB(2), align);
	if (print_message(addr, MSG_OFFSET) < 0 ||
	    print_message(addr, MSG2_OFFSET) < 0)
		goto out;

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
		goto out;
	}
	printf("attacher: wrote \"%s\" at offset %#x\n", ack, ACK_OFFSET);
	ret = 0;

out:
	if (munmap(addr, align) < 0 && !ret) {
		fail("munmap");
		ret = 1;
	}
	if (close(fd) < 0 && !ret) {
		fail("close");
		ret = 1;
	}
	return ret;
}
