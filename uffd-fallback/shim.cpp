// libmshare-preload.so: LD_PRELOAD it and an unmodified program's windows
// of msharefs regions are composed by the runtime. mmap, munmap, mprotect,
// pkey_mprotect and mremap are interposed, and ioctl for msharefs requests
// (which fail with ENOTCONN while no daemon serves the mount); under
// mshare-run, mmap of shared memory and shmget, shmat, shmdt and shmctl
// adopt large segments into regions (adoption.hpp). Everything else is
// untouched.
// mmap and mmap64 are both defined here: no large-file renaming.
#undef _FILE_OFFSET_BITS

#include "mshare_runtime.h"
#include "sysv_segments.hpp"

#include <linux/msharefs.h>

#include <cerrno>
#include <cstdarg>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SHIM_EXPORT extern "C" __attribute__((visibility("default")))

SHIM_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mshare_runtime_mmap(addr, len, prot, flags, fd, off);
}

SHIM_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mshare_runtime_mmap(addr, len, prot, flags, fd, off);
}

SHIM_EXPORT int munmap(void *addr, size_t len)
{
	return mshare_runtime_munmap(addr, len);
}

SHIM_EXPORT int mprotect(void *addr, size_t len, int prot)
{
	return mshare_runtime_mprotect(addr, len, prot);
}

SHIM_EXPORT int pkey_mprotect(void *addr, size_t len, int prot, int pkey)
{
	if (const int err = mshare_runtime_protect_allowed(addr, len, prot)) {
		errno = err;
		return -1;
	}
	return static_cast<int>(syscall(SYS_pkey_mprotect, addr, len, prot, pkey));
}

SHIM_EXPORT int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	va_start(ap, request);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (_IOC_TYPE(request) == MSHAREFS_MAGIC && mshare_runtime_daemon_gone(fd)) {
		errno = ENOTCONN;
		return -1;
	}
	return static_cast<int>(syscall(SYS_ioctl, fd, request, arg));
}

SHIM_EXPORT void *mremap(void *old_addr, size_t old_size, size_t new_size, int flags, ...)
{
	void *new_addr = nullptr;
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	if (mshare_runtime_windows_touch(old_addr, old_size) ||
	    ((flags & MREMAP_FIXED) && mshare_runtime_windows_touch(new_addr, new_size))) {
		errno = EINVAL; // windows are not split, moved or resized
		return MAP_FAILED;
	}
	const long r = syscall(SYS_mremap, old_addr, old_size, new_size, flags, new_addr);
	return r < 0 && r > -4096 ? MAP_FAILED : reinterpret_cast<void *>(r);
}

SHIM_EXPORT int shmget(key_t key, size_t size, int flags)
{
	return msharefs::runtime::sysv::shmget(key, size, flags);
}

SHIM_EXPORT void *shmat(int shmid, const void *addr, int flags)
{
	return msharefs::runtime::sysv::shmat(shmid, addr, flags);
}

SHIM_EXPORT int shmdt(const void *addr)
{
	return msharefs::runtime::sysv::shmdt(addr);
}

SHIM_EXPORT int shmctl(int shmid, int cmd, struct shmid_ds *buf)
{
	return msharefs::runtime::sysv::shmctl(shmid, cmd, buf);
}
