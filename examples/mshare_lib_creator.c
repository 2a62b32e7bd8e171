// SPDX-License-Identifier: GPL-2.0
/*
 * mshare_lib_creator: create an mshare region with the libmshare calls.
 *
 * The same example as mshare_creator, written with the 2022 mshare API that
 * libmshare provides (<mshare.h>) instead of the raw msharefs ioctls:
 *
 *   fd = mshare(name, addr, len, O_CREAT | O_EXCL | O_RDWR, 0600);
 *
 * creates the region NAME covering [addr, addr + len), backs it with shared
 * anonymous memory and maps the window at addr, in one call. addr and len
 * must be multiples of mshare_alignment(). mshare_unlink(name) removes the
 * name again. Names are relative to the msharefs mount, which the library
 * finds by itself (mshare_mount_point()).
 *
 * It writes one message at the start of the window and a second one 1 MiB in,
 * prints "creator: ready", and waits for an attacher (mshare_lib_attacher or
 * mshare_attacher) to write an acknowledgement at offset 4096. Then it removes
 * the name and exits.
 *
 * Usage, with msharefs mounted:
 *
 *   $ ./mshare_lib_creator [NAME [TIMEOUT_SECONDS]]
 *   # and, in another shell, once "creator: ready" is printed:
 *   $ ./mshare_lib_attacher [NAME]
 *
 * NAME defaults to "example", TIMEOUT_SECONDS to 60.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <mshare.h>

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
		"Creates the mshare region NAME (default \"example\") at 2 TiB with\n"
		"the libmshare call mshare(NAME, addr, len, O_CREAT|O_EXCL|O_RDWR,\n"
		"0600), writes two messages, prints \"creator: ready\" and waits up\n"
		"to TIMEOUT_SECONDS (default 60) for an attacher to acknowledge at\n"
		"offset 4096. Then it removes the name with mshare_unlink() and exits.\n"
		"Run mshare_lib_attacher NAME in another shell to attach.\n",
		prog);
}

static int fail(const char *what)
{
	fprintf(stderr, "creator: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char *argv[])
{
	const char *name = "example";
	unsigned long timeout = 60;
	unsigned long long align;
	const char *mnt, *rel;
	const char *ack;
	char *addr = (char *)(uintptr_t)TB(2);
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
	/* Names are relative to the mount; a leading '/' is allowed. */
	for (rel = name; *rel == '/'; rel++)
		;
	if (argc > 2) {
		char *end;

		errno = 0;
		timeout = strtoul(argv[2], &end, 10);
		if (errno || end == argv[2] || *end || !timeout) {
			fprintf(stderr, "creator: bad timeout \"%s\"\n", argv[2]);
			return 2;
		}
	}

	mnt = mshare_mount_point();
	if (!mnt)
		return fail("mshare_mount_point");

	/* The region start and size must be multiples of this. */
	align = mshare_alignment();
	if (!align)
		return fail("mshare_alignment");
	if (align < MSG2_OFFSET + sizeof(msg2)) {
		fprintf(stderr, "creator: alignment %llu is too small for this example\n",
			align);
		return 1;
	}

	/* Create the region and map its window at 2 TiB, in one call. */
	fd = mshare(name, addr, align, O_CREAT | O_EXCL | O_RDWR, 0600);
	if (fd < 0) {
		fprintf(stderr, "creator: mshare %s: %s\n", name, strerror(errno));
		return 1;
	}

	/* From here on it is ordinary memory. */
	memcpy(addr + MSG_OFFSET, msg, sizeof(msg));
	memcpy(addr + MSG2_OFFSET, msg2, sizeof(msg2));

	printf("creator: sharing %s/%s: start %#llx size %#llx\n",
	       mnt, rel, TB(2), align);
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
			goto out;
		}
		nanosleep(&ts, NULL);
	}
	printf("creator: got \"%.*s\" at offset %#x\n",
	       (int)strnlen(ack, ACK_MAX), ack,
	       ACK_OFFSET);

	/* Remove the name; the region lives on until its last user is gone. */
	if (mshare_unlink(name) < 0) {
		fail("mshare_unlink");
		goto out;
	}
	printf("creator: removed %s/%s\n", mnt, rel);
	ret = 0;

out:
	if (ret)
		mshare_unlink(name);
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
