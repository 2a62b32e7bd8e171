#include "object_access.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

namespace msharefs {

namespace {

bool write_sealed(int fd)
{
	const int seals = fcntl(fd, F_GET_SEALS);
	return seals > 0 && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE));
}

// FS_APPEND_FL / FS_IMMUTABLE_FL (chattr +a / +i).
bool append_only_or_immutable(int fd)
{
	int flags = 0;
	return ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && (flags & (FS_APPEND_FL | FS_IMMUTABLE_FL));
}

} // namespace

uint32_t object_max_prot(int fd)
{
	const int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_PATH))
		return 0;
	const int mode = fl & O_ACCMODE;
	if (mode == O_WRONLY)
		return 0;
	uint32_t prot = PROT_READ | PROT_EXEC;
	if (mode == O_RDWR && !(fl & O_APPEND) && !write_sealed(fd) && !append_only_or_immutable(fd))
		prot |= PROT_WRITE;
	return prot;
}

} // namespace msharefs
