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

#ifdef __cplusplus
}
#endif

#endif /* MSHARE_H */
