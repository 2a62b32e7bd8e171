/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * msharefs: share page tables between processes for a region of memory.
 *
 * Userspace ABI of /sys/fs/mshare. Every field has a fixed width so that a
 * 32-bit process computes the same ioctl numbers as a 64-bit one.
 */
#ifndef _UAPI_LINUX_MSHAREFS_H
#define _UAPI_LINUX_MSHAREFS_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define MSHAREFS_MAGIC 'x'

/* Seed ABI (2025 msharefs interface). */
struct mshare_info {
	__u64 start;
	__u64 size;
};

struct mshare_create {
	__u64 addr;
	__u64 size;
	__u64 offset;
	__u32 prot;
	__u32 flags;
	__u32 fd;
} __attribute__((aligned(8)));

struct mshare_unmap {
	__u64 addr;
	__u64 size;
};

#define MSHAREFS_GET_SIZE	_IOR(MSHAREFS_MAGIC, 0, struct mshare_info)
#define MSHAREFS_SET_SIZE	_IOW(MSHAREFS_MAGIC, 1, struct mshare_info)
#define MSHAREFS_CREATE_MAPPING	_IOW(MSHAREFS_MAGIC, 2, struct mshare_create)
#define MSHAREFS_UNMAP		_IOW(MSHAREFS_MAGIC, 3, struct mshare_unmap)

/*
 * v3 ABI (posted August 2025). Addresses are offsets into the window, which
 * each process may map at any address aligned to mshare_info. The size is set
 * with ftruncate() or fallocate() and read back with stat().
 *
 * MSHAREFS_UNMAP_V3 has the same number as MSHAREFS_SET_SIZE: before the
 * region is sized the number means SET_SIZE, afterwards it means UNMAP.
 */
struct mshare_create_v3 {
	__u64 region_offset;
	__u64 size;
	__u64 offset;
	__u32 prot;
	__u32 flags;
	__u32 fd;
} __attribute__((aligned(8)));

struct mshare_unmap_v3 {
	__u64 region_offset;
	__u64 size;
};

#define MSHAREFS_CREATE_MAPPING_V3 _IOW(MSHAREFS_MAGIC, 0, struct mshare_create_v3)
#define MSHAREFS_UNMAP_V3	_IOW(MSHAREFS_MAGIC, 1, struct mshare_unmap_v3)

/* Beyond upstream: one protection change seen by every attacher. */
struct mshare_protect {
	__u64 addr;
	__u64 size;
	__u32 prot;
	__u32 pad;
};

#define MSHAREFS_PROTECT	_IOW(MSHAREFS_MAGIC, 4, struct mshare_protect)
/* Buffer ownership handoff: one writer at a time. */
#define MSHAREFS_LOCK		_IO(MSHAREFS_MAGIC, 5)
#define MSHAREFS_UNLOCK		_IO(MSHAREFS_MAGIC, 6)

/*
 * Ownership transfer (wanted upstream, LSFMM+BPF 2026). Only the owner may
 * size the region, map, unmap and change protections (EPERM for others); it
 * hands the region to the process of pidfd, which must be able to open the
 * region O_RDWR (EPERM otherwise). The region's mappings then go away when
 * the new owner exits. flags 0, or MSHAREFS_OWNER_RELEASE with pidfd -1: the
 * region has no owner from then on, like any shared memory object. Its
 * layout and protections are fixed, nobody may change them [EPERM], and it
 * lives until its name is gone and its last descriptor and window with it.
 */
struct mshare_owner {
	__s32 pidfd;
	__u32 flags;
};

#define MSHAREFS_OWNER_RELEASE	0x1

#define MSHAREFS_SET_OWNER	_IOW(MSHAREFS_MAGIC, 7, struct mshare_owner)

/*
 * mmap() flag (the 2023 "ptshare" proposal): MAP_SHARED | MAP_SHARED_PT of an
 * ordinary shared file, in a program that links libmshare or runs under
 * libmshare-preload.so, maps a window of the implicit region of that file
 * range, which every process doing the same shares page tables for. The
 * value lies in the MAP_TYPE field, where no kernel defines it: without the
 * runtime, every kernel refuses the call with EINVAL.
 */
#define MAP_SHARED_PT		0x04

/* Name of the read-only file at the root of the mount. */
#define MSHAREFS_INFO_NAME	"mshare_info"
/* Where msharefs is mounted. */
#define MSHAREFS_MOUNT_POINT	"/sys/fs/mshare"
/* Upstream alignment on x86-64: 512 GiB, the P4D size. */
#define MSHAREFS_DEFAULT_ALIGN	(1ULL << 39)

#endif /* _UAPI_LINUX_MSHAREFS_H */
