/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmshare: the mshare API as library calls, built on the msharefs files and
 * ioctls of <linux/msharefs.h>.
 */
#ifndef MSHARE_H
#define MSHARE_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Shares [addr, addr + len) of the caller's address space under NAME.
 * With O_CREAT the region is created (O_EXCL honoured), sized to the window
 * and backed by one shared anonymous mapping; without it an existing region is
 * attached and addr/len must equal its start and size. In both cases the
 * window is mapped at addr. addr and len must be multiples of the alignment in
 * mshare_info. O_RDONLY attaches read-only. Returns the region's file
 * descriptor, or -1 with errno set.
 */
int mshare(const char *name, void *addr, size_t len, int oflags, mode_t mode);

/* Removes NAME; the region lives on until its last user is gone. */
int mshare_unlink(const char *name);

/* open() of NAME under the msharefs mount, with O_CREAT added. */
int mcreate(const char *name, int flags, mode_t mode);

/*
 * Where msharefs is mounted: /sys/fs/mshare if it is an msharefs mount, else
 * $MSHAREFS_MOUNT, else the first fuse.msharefs entry of /proc/self/mounts.
 * NULL with errno = ENOENT if none is found.
 */
const char *mshare_mount_point(void);

/* Alignment the mount requires (mshare_info), or 0 with errno set. */
unsigned long long mshare_alignment(void);

/*
 * The 2026 upstream direction (LSFMM+BPF 2026): regions as descriptors. The
 * creator owns the region; only the owner sizes it, maps, unmaps and changes
 * protections (EPERM for others) until it hands the region on with
 * mshare_set_owner(); when the owner exits every mapping goes. Offsets are
 * window-relative. Each call returns 0 (mshare_attach: the window) or -1
 * (MAP_FAILED) with errno set. See libmshare(3).
 */

/* Don't map the window writable (it is read-only anyway for O_RDONLY fds). */
#define MSHARE_ATTACH_RDONLY 0x1

/* A new nameless region, open O_RDWR; flags: 0 or O_CLOEXEC [EINVAL].
 * Size it with ftruncate() to a multiple of mshare_alignment(). */
int mshare_create(int flags);
/* Maps the window of the whole region: offset 0 and size the region's size
 * [EINVAL]; at addr (aligned [EINVAL], free [EEXIST]) or, with addr NULL,
 * at a free aligned address; flags 0 or MSHARE_ATTACH_RDONLY. Undo with
 * munmap(window, size). */
void *mshare_attach(int fd, off_t offset, size_t size, void *addr, int flags);
/* Maps objfd (or fresh anonymous memory for objfd -1) from objoffset at
 * [region_offset, region_offset + size) for every attacher; flags: mmap
 * flags (MAP_SHARED and MAP_FIXED are implied, MAP_HUGETLB allowed). */
int mshare_map(int fd, off_t region_offset, size_t size, int prot, int flags, int objfd, off_t objoffset);
/* Removes the mappings of a range for every attacher. */
int mshare_unmap(int fd, off_t region_offset, size_t size);
/* Changes the protection of a range for every attacher; never more than
 * the mapped file allows [EACCES]. */
int mshare_protect(int fd, off_t region_offset, size_t size, int prot);
/* MADV_DONTNEED or MADV_REMOVE: frees the anonymous memory of the range for
 * every attacher (it reads as zeros after; file mappings keep their data);
 * any O_RDWR opener may. MADV_WILLNEED: reads the range ahead. Any other
 * advice: EINVAL. */
int mshare_advise(int fd, off_t region_offset, size_t size, int advice);
/* Hands the region to the process of pidfd, which must be able to open it
 * O_RDWR [EPERM]; the caller must be the owner [EPERM]. */
int mshare_set_owner(int fd, int pidfd);
/* Gives up ownership: the region keeps its layout for good and lives, like
 * any shared memory, until its name and its last descriptor and window are
 * gone. The caller must be the owner [EPERM]. */
int mshare_release(int fd);

#ifdef __cplusplus
}
#endif

#endif /* MSHARE_H */
