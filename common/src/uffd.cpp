#include "msharefs/uffd.hpp"

#include <cerrno>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>

namespace msharefs {

bool uffd_capable_file(int fd)
{
	struct statfs sfs {};
	if (fstatfs(fd, &sfs) < 0)
		return false;
	struct stat st {};
	if (static_cast<unsigned long>(sfs.f_type) != TMPFS_MAGIC || fstat(fd, &st) < 0)
		return false;
	// shmem with transparent huge pages (st_blksize 2 MiB) is mapped by
	// PMD entries only when no userfaultfd intercepts its faults.
	return st.st_blksize < (2 << 20);
}

int uffd_write_protect(int uffd, uint64_t addr, uint64_t len, bool protect, bool retry_busy)
{
	uffdio_writeprotect wp{};
	wp.range.start = addr;
	wp.range.len = len;
	wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
	for (;;) {
		if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) == 0)
			return 0;
		if ((errno != EAGAIN || !retry_busy) && errno != EINTR)
			return errno;
	}
}

} // namespace msharefs
