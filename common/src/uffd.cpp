#include "msharefs/uffd.hpp"

#include <cerrno>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>

namespace msharefs {

bool uffd_capable_file(int fd)
{
	struct statfs sfs {};
	if (fstatfs(fd, &sfs) < 0)
		return false;
	const auto type = static_cast<unsigned long>(sfs.f_type);
	return type == TMPFS_MAGIC || type == HUGETLBFS_MAGIC;
}

int uffd_write_protect(int uffd, uint64_t addr, uint64_t len, bool protect)
{
	uffdio_writeprotect wp{};
	wp.range.start = addr;
	wp.range.len = len;
	wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
	for (;;) {
		if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) == 0)
			return 0;
		if (errno != EAGAIN && errno != EINTR)
			return errno;
	}
}

} // namespace msharefs
