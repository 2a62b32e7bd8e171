// The runtime's C entry points, used by libmshare and by the shim.
#include "adoption.hpp"
#include "runtime.hpp"

#include <linux/msharefs.h>

#include "mshare_runtime.h"

#include <cerrno>
#include <cstdarg>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

using msharefs::runtime::Adopter;
using msharefs::runtime::Runtime;

extern "C" {

__attribute__((visibility("default"))) void *mshare_runtime_mmap(void *addr, size_t len, int prot, int flags,
								 int fd, off_t off)
{
	if (flags & MAP_SHARED_PT)
		return Adopter::get().map_shared_pt(addr, len, prot, flags, fd, off);
	bool handled = false;
	if ((flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_SHARED) {
		void *p = Adopter::get().map_anonymous(addr, len, prot, flags, &handled);
		if (handled)
			return p;
	} else if (fd >= 0 && !(flags & MAP_ANONYMOUS)) {
		void *p = Runtime::get().map_window(addr, len, prot, flags, fd, off, &handled);
		if (!handled)
			p = Adopter::get().map_shared_file(addr, len, prot, flags, fd, off, &handled);
		if (handled)
			return p;
	}
	return msharefs::runtime::raw_mmap(addr, len, prot, flags, fd, off);
}

__attribute__((visibility("default"))) void *mshare_runtime_mmap_shared_pt(void *addr, size_t len, int prot,
									   int flags, int fd, off_t off)
{
	if (flags & MAP_SHARED_PT)
		return Adopter::get().map_shared_pt(addr, len, prot, flags, fd, off);
	return msharefs::runtime::raw_mmap(addr, len, prot, flags, fd, off);
}

__attribute__((visibility("default"))) int mshare_runtime_munmap(void *addr, size_t len)
{
	if (const int a = Adopter::get().unmap(addr, len))
		return a == 1 ? 0 : -1;
	const int r = Runtime::get().unmap(addr, len);
	if (r < 0)
		return -1;
	return r == 1 ? 0 : msharefs::runtime::raw_munmap(addr, len);
}

__attribute__((visibility("default"))) int mshare_runtime_protect_allowed(const void *addr, size_t len, int prot)
{
	// Adopted memory (mshare-run) takes mprotect as the memory it replaces
	// would; a region's window takes its protections from the region.
	if (!Runtime::get().touches_window(addr, len))
		return 0;
	bool writable = false;
	if (!Adopter::get().within_program_range(addr, len, &writable))
		return EINVAL;
	return (prot & PROT_WRITE) && !writable ? EACCES : 0;
}

__attribute__((visibility("default"))) int mshare_runtime_mprotect(void *addr, size_t len, int prot)
{
	if (const int err = mshare_runtime_protect_allowed(addr, len, prot)) {
		errno = err;
		return -1;
	}
	return msharefs::runtime::raw_mprotect(addr, len, prot);
}

__attribute__((visibility("default"))) int mshare_runtime_daemon_gone(int fd)
{
	return Runtime::get().daemon_gone(fd);
}

__attribute__((visibility("default"))) int mshare_runtime_windows_touch(const void *addr, size_t len)
{
	return Runtime::get().touches_window(addr, len);
}

} // extern "C"
