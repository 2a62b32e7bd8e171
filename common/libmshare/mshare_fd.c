// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libmshare: the 2026 upstream direction (LSFMM+BPF 2026, "Revisiting
 * mshare"), regions as descriptors, as library calls. Built on the v3 files
 * and ioctls of <linux/msharefs.h>: a nameless region is a region file
 * created under a unique name and unlinked at once; its size is set with
 * ftruncate(); offsets are window-relative.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/falloc.h>
#include <linux/msharefs.h>

#include "mshare.h"
#include "mshare_internal.h"
#include "mshare_runtime.h"

#define MSHARE_EXPORT __attribute__((visibility("default")))

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* Times mshare_create() tries another name when one is taken. */
#define MSHARE_CREATE_TRIES 16

static int fail(int err)
{
	errno = err;
	return -1;
}

MSHARE_EXPORT int mshare_create(int flags)
{
	static atomic_uint counter;
	char name[64], path[PATH_MAX];
	int tries;

	if (flags & ~O_CLOEXEC)
		return fail(EINVAL);
	for (tries = 0; tries < MSHARE_CREATE_TRIES; tries++) {
		unsigned long long nonce = 0;
		int fd;

		if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
			nonce = (unsigned long long)(uintptr_t)&nonce ^ (unsigned long long)tries;
		snprintf(name, sizeof(name), ".mshare-%d-%u-%016llx", (int)getpid(),
			 atomic_fetch_add(&counter, 1), nonce);
		if (mshare_region_path(name, path, sizeof(path)) < 0)
			return -1;
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | flags, 0600);
		if (fd < 0 && errno == EEXIST)
			continue;
		if (fd < 0)
			return -1;
		/* Nameless from here on: it lives as long as a descriptor does. */
		unlink(path);
		return fd;
	}
	return fail(EEXIST);
}

/* The region's geometry: 0, or -1 with errno (EINVAL while unsized). */
static int geometry(int fd, struct mshare_info *info)
{
	return ioctl(fd, MSHAREFS_GET_SIZE, info) < 0 ? -1 : 0;
}

/* An address aligned to align with size bytes free after it, or NULL. */
static void *free_aligned_range(size_t size, unsigned long long align)
{
	size_t span = size + align;
	uintptr_t base, aligned;
	void *p;

	if (span < size)
		return NULL;
	p = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	base = (uintptr_t)p;
	aligned = (base + align - 1) & ~(uintptr_t)(align - 1);
	munmap(p, span);
	return (void *)aligned;
}

MSHARE_EXPORT void *mshare_attach(int fd, off_t offset, size_t size, void *addr, int flags)
{
	struct mshare_info info;
	unsigned long long align;
	int mode, prot = PROT_READ;
	void *p;

	if (offset != 0 || (flags & ~MSHARE_ATTACH_RDONLY)) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	if (geometry(fd, &info) < 0)
		return MAP_FAILED;
	if (size != info.size) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	mode = fcntl(fd, F_GETFL) & O_ACCMODE;
	if (mode == O_RDWR && !(flags & MSHARE_ATTACH_RDONLY))
		prot |= PROT_WRITE;
	align = mshare_alignment();
	if (!align)
		return MAP_FAILED;
	if (info.start) {
		/* Sized with MSHAREFS_SET_SIZE: the window is at its start. */
		if (addr && (uintptr_t)addr != info.start) {
			errno = EINVAL;
			return MAP_FAILED;
		}
		addr = (void *)(uintptr_t)info.start;
	} else if (!addr) {
		addr = free_aligned_range(size, align);
		if (!addr) {
			errno = ENOMEM;
			return MAP_FAILED;
		}
	} else if ((uintptr_t)addr % align) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	p = mshare_runtime_mmap(addr, size, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
	if (p != MAP_FAILED && p != addr) {
		mshare_runtime_munmap(p, size);
		errno = EEXIST;
		return MAP_FAILED;
	}
	return p;
}

MSHARE_EXPORT int mshare_map(int fd, off_t region_offset, size_t size, int prot, int flags, int objfd,
			     off_t objoffset)
{
	struct mshare_create_v3 create = {
		.region_offset = (__u64)region_offset,
		.size = size,
		.offset = (__u64)objoffset,
		.prot = (__u32)prot,
		.flags = (__u32)flags | MAP_SHARED | MAP_FIXED,
		.fd = (__u32)objfd,
	};

	if (region_offset < 0 || objoffset < 0 || (flags & MAP_PRIVATE))
		return fail(EINVAL);
	if (objfd < 0) {
		if (objfd != -1)
			return fail(EBADF);
		create.flags |= MAP_ANONYMOUS;
	} else if (flags & MAP_ANONYMOUS) {
		return fail(EINVAL);
	}
	return ioctl(fd, MSHAREFS_CREATE_MAPPING_V3, &create) < 0 ? -1 : 0;
}

MSHARE_EXPORT int mshare_unmap(int fd, off_t region_offset, size_t size)
{
	struct mshare_unmap_v3 unmap = {.region_offset = (__u64)region_offset, .size = size};
	struct mshare_info info;

	if (region_offset < 0)
		return fail(EINVAL);
	/* The number means SET_SIZE until the region is sized. */
	if (geometry(fd, &info) < 0)
		return -1;
	return ioctl(fd, MSHAREFS_UNMAP_V3, &unmap) < 0 ? -1 : 0;
}

MSHARE_EXPORT int mshare_protect(int fd, off_t region_offset, size_t size, int prot)
{
	struct mshare_protect protect = {.size = size, .prot = (__u32)prot};
	struct mshare_info info;

	if (region_offset < 0)
		return fail(EINVAL);
	if (geometry(fd, &info) < 0)
		return -1;
	/* PROTECT takes the seed ABI's absolute address. */
	protect.addr = info.start + (__u64)region_offset;
	return ioctl(fd, MSHAREFS_PROTECT, &protect) < 0 ? -1 : 0;
}

MSHARE_EXPORT int mshare_advise(int fd, off_t region_offset, size_t size, int advice)
{
	struct mshare_info info;
	int err;

	if (region_offset < 0 || !size)
		return fail(EINVAL);
	switch (advice) {
	case MADV_DONTNEED:
	case MADV_REMOVE:
		/* The daemon frees the range's memory for every attacher. */
		return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, region_offset, (off_t)size);
	case MADV_WILLNEED:
		if (geometry(fd, &info) < 0)
			return -1;
		if ((__u64)region_offset > info.size || size > info.size - (__u64)region_offset)
			return fail(EINVAL);
		err = posix_fadvise(fd, region_offset, (off_t)size, POSIX_FADV_WILLNEED);
		return err ? fail(err) : 0;
	default:
		return fail(EINVAL);
	}
}

MSHARE_EXPORT int mshare_set_owner(int fd, int pidfd)
{
	struct mshare_owner owner = {.pidfd = pidfd, .flags = 0};

	return ioctl(fd, MSHAREFS_SET_OWNER, &owner) < 0 ? -1 : 0;
}

MSHARE_EXPORT int mshare_release(int fd)
{
	struct mshare_owner owner = {.pidfd = -1, .flags = MSHAREFS_OWNER_RELEASE};

	return ioctl(fd, MSHAREFS_SET_OWNER, &owner) < 0 ? -1 : 0;
}
