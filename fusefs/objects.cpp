#include "objects.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace msharefs {

namespace {
constexpr uint64_t kPmdSize = 2ULL << 20;
} // namespace

Backing backing_of_descriptor(int fd)
{
	struct statfs sfs {};
	struct stat st {};
	if (fstatfs(fd, &sfs) < 0 || fstat(fd, &st) < 0)
		return Backing::small;
	if (static_cast<unsigned long>(sfs.f_type) == HUGETLBFS_MAGIC)
		return Backing::hugetlb;
	if (static_cast<unsigned long>(sfs.f_type) == TMPFS_MAGIC && static_cast<uint64_t>(st.st_blksize) >= kPmdSize)
		return Backing::thp;
	return Backing::small;
}

BackingObject::BackingObject(UniqueFd fd, ObjectKind kind, std::string memory_path)
	: fd_(std::move(fd)), kind_(kind), memory_path_(std::move(memory_path))
{
	if (!memory_path_.empty()) {
		backing_ = backing_of_descriptor(fd_.get());
		fd_.reset();
	}
}

int BackingObject::descriptor(UniqueFd *opened) const
{
	if (memory_path_.empty())
		return fd_.get();
	opened->reset(::open(memory_path_.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
	return opened->get();
}

UniqueFd BackingObject::open() const
{
	if (memory_path_.empty())
		return UniqueFd(fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
	return UniqueFd(::open(memory_path_.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
}

int BackingObject::read(char *buf, size_t len, uint64_t offset) const
{
	UniqueFd opened;
	const int fd = descriptor(&opened);
	if (fd < 0)
		return EIO;
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, buf + done, len - done, static_cast<off_t>(offset + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return EIO;
		}
		if (n == 0)
			break;
		done += static_cast<size_t>(n);
	}
	if (done == len)
		return 0;
	// Past the end of the file: like mmap, the rest of the page holding the
	// last byte reads as zeros and whole pages beyond it fault.
	const uint64_t eof = offset + done;
	const uint64_t page_end = (eof + kPageSize - 1) / kPageSize * kPageSize;
	if (offset + len > page_end)
		return EIO;
	std::memset(buf + done, 0, len - done);
	return 0;
}

int BackingObject::write_through_mapping(int fd, const char *buf, size_t len, uint64_t offset) const
{
	// hugetlbfs has no write(): map the huge pages concerned and copy.
	struct stat st {};
	if (fstat(fd, &st) < 0)
		return EIO;
	const uint64_t unit = static_cast<uint64_t>(st.st_blksize);
	const uint64_t start = offset / unit * unit;
	const uint64_t end = (offset + len + unit - 1) / unit * unit;
	void *p = mmap(nullptr, end - start, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		       static_cast<off_t>(start));
	if (p == MAP_FAILED)
		return EIO;
	std::memcpy(static_cast<char *>(p) + (offset - start), buf, len);
	munmap(p, end - start);
	return 0;
}

int BackingObject::write(const char *buf, size_t len, uint64_t offset) const
{
	UniqueFd opened;
	const int fd = descriptor(&opened);
	if (fd < 0)
		return EIO;
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(fd, buf + done, len - done, static_cast<off_t>(offset + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EINVAL && done == 0) // hugetlbfs
				return write_through_mapping(fd, buf, len, offset);
			// The store is full: the caller's request fails, as on any
			// file system, and nothing else changes.
			return errno == ENOSPC || errno == EDQUOT ? ENOSPC : EIO;
		}
		done += static_cast<size_t>(n);
	}
	return 0;
}

int BackingObject::punch_hole(uint64_t offset, uint64_t len) const
{
	UniqueFd opened;
	const int fd = descriptor(&opened);
	if (fd < 0)
		return errno;
	if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
			static_cast<off_t>(len)) < 0)
		return errno;
	return 0;
}

int BackingObject::sync() const
{
	if (is_memory())
		return 0;
	return fdatasync(fd_.get()) < 0 && errno != EINVAL ? EIO : 0;
}

void BackingObject::destroy()
{
	if (!memory_path_.empty())
		unlink(memory_path_.c_str());
}

} // namespace msharefs
