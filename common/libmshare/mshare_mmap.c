/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * MAP_SHARED_PT for programs that link libmshare: libmshare's mmap gives a
 * MAP_SHARED | MAP_SHARED_PT mapping its implicit region's window and hands
 * every other call to the kernel unchanged; its munmap takes such a window
 * down with the length the program mapped, and a window of a region as a
 * whole (as the runtime's own munmap does).
 */
#undef _FILE_OFFSET_BITS /* mmap and mmap64 are both defined here */
#define _GNU_SOURCE

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/msharefs.h>

#include "mshare_runtime.h"

#define MSHARE_EXPORT __attribute__((visibility("default")))

MSHARE_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mshare_runtime_mmap_shared_pt(addr, len, prot, flags, fd, off);
}

MSHARE_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mshare_runtime_mmap_shared_pt(addr, len, prot, flags, fd, off);
}

MSHARE_EXPORT int munmap(void *addr, size_t len)
{
	return mshare_runtime_munmap(addr, len);
}
