/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The uffd runtime's entry points. libmshare attaches windows through them;
 * libmshare-preload.so routes libc's mmap, munmap, mprotect and mremap to
 * them. Each behaves as the libc call for anything that is not a window of
 * an msharefs region served by a daemon with datapath=uffd.
 */
#ifndef MSHARE_RUNTIME_H
#define MSHARE_RUNTIME_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

void *mshare_runtime_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int mshare_runtime_munmap(void *addr, size_t len);
/* mmap with MAP_SHARED_PT handled (the implicit region's window), any other
 * call passed to the kernel untouched: libmshare's own mmap. */
void *mshare_runtime_mmap_shared_pt(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int mshare_runtime_mprotect(void *addr, size_t len, int prot);
/* 0 if mprotect (or pkey_mprotect) of the range to prot may go to the
 * kernel; else the errno: EINVAL for a window of a region, EACCES for
 * PROT_WRITE of adopted memory mapped read-only. */
int mshare_runtime_protect_allowed(const void *addr, size_t len, int prot);
/* Non-zero if fd is on an msharefs mount this process attached a window
 * from and no daemon serves it now (its requests would wait for a restart). */
int mshare_runtime_daemon_gone(int fd);
/* Non-zero if [addr, addr+len) overlaps an attached window. */
int mshare_runtime_windows_touch(const void *addr, size_t len);

#ifdef __cplusplus
}
#endif

#endif
