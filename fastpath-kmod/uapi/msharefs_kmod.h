/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * msharefs_kmod: the interface between msharefsd (or a test) and the
 * fastpath kernel module.
 *
 * /dev/msharefs_kmod hands out region descriptors: regular files on the
 * module's own filesystem, so they can serve as FUSE passthrough backing
 * files. A region is memory whose
 * page tables exist once: every mmap() of the region descriptor (the window)
 * links the caller's PUD entries to the region's own PMD tables. A window
 * at an address that is 2 MiB but not 1 GiB aligned (MAP_FIXED there, or
 * what a FUSE file's mmap(NULL) gets) links PMD entries of its own to the
 * region's PTE tables instead; other addresses are EINVAL. Offsets are
 * relative to the region (the window start is whatever mmap() returned).
 */
#ifndef _UAPI_MSHAREFS_KMOD_H
#define _UAPI_MSHAREFS_KMOD_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define MSHAREFS_KMOD_DEVICE	"/dev/msharefs_kmod"
/*
 * Region sizes are multiples of this (one PUD), and so are the addresses
 * mmap(NULL) of a region descriptor returns.
 */
#define MSHAREFS_KMOD_ALIGN	(1ULL << 30)

struct msharefs_kmod_create {
	__u64 size;		/* multiple of MSHAREFS_KMOD_ALIGN; 0: set later */
	__u32 flags;		/* 0 */
	__u32 pad;
};

struct msharefs_kmod_range {
	__u64 offset;		/* page aligned, inside the region */
	__u64 size;		/* page aligned, > 0 */
	__u32 prot;		/* PROT_READ | PROT_WRITE | PROT_EXEC, or PROT_NONE */
	__u32 flags;		/* 0 */
};

/* A file's pages at a region range: they are the file's page cache. */
struct msharefs_kmod_map_file {
	__u64 offset;		/* page aligned, inside the region */
	__u64 size;		/* page aligned, > 0 */
	__u64 file_offset;	/* page aligned */
	__u32 prot;		/* needs a descriptor open for writing for PROT_WRITE */
	__s32 fd;		/* a regular file; on hugetlbfs (2 MiB pages only) the
				 * offsets and size are 2 MiB aligned */
};

struct msharefs_kmod_stats {
	__u64 size;
	__u64 resident_pages;	/* data pages the region holds */
	__u64 table_pages;	/* shared PMD and PTE table pages */
	__u64 windows;		/* windows attached now, over all processes */
	__u64 faults;		/* faults the region has resolved */
};

/* On /dev/msharefs_kmod: returns a new region descriptor (O_RDWR, O_CLOEXEC). */
#define MSHAREFS_KMOD_CREATE	_IOW('x', 0x40, struct msharefs_kmod_create)
/* On a region descriptor. */
#define MSHAREFS_KMOD_MAP	_IOW('x', 0x41, struct msharefs_kmod_range)
#define MSHAREFS_KMOD_UNMAP	_IOW('x', 0x42, struct msharefs_kmod_range)
#define MSHAREFS_KMOD_PROTECT	_IOW('x', 0x43, struct msharefs_kmod_range)
#define MSHAREFS_KMOD_STATS	_IOR('x', 0x44, struct msharefs_kmod_stats)
/* Sizes a region created with size 0 (once: EBUSY after). */
#define MSHAREFS_KMOD_SET_SIZE	_IOW('x', 0x45, __u64)
/* Maps a file range; msync of a window writes its stores back to the file. */
#define MSHAREFS_KMOD_MAP_FILE	_IOW('x', 0x47, struct msharefs_kmod_map_file)
/*
 * Who may store through windows (the msharefs LOCK/UNLOCK handoff): -1 every
 * window, as the layout allows (the default); 0 no window; a pid (of the
 * caller's pid namespace) only the windows of that process. Each window's
 * entries are pointed at the writable or the read-only view at once.
 */
#define MSHAREFS_KMOD_SET_WRITER	_IOW('x', 0x48, __s32)
/* No new windows from now on (mmap fails with EINVAL): the owner is gone. */
#define MSHAREFS_KMOD_SEAL	_IO('x', 0x46)

#endif /* _UAPI_MSHAREFS_KMOD_H */
