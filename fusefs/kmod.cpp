#include "kmod.hpp"

#include "msharefs_kmod.h"
#include "runtime_peer.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <iterator>
#include <linux/fuse.h>
#include <linux/memfd.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// FUSE passthrough (Linux 6.9) as the 6.12 uapi defines it; older headers
// lack it.
#ifndef FUSE_DEV_IOC_BACKING_OPEN
struct fuse_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define FUSE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)
#endif

namespace msharefs {

std::unique_ptr<KmodRegions> KmodRegions::open(int *err)
{
	UniqueFd dev(::open(MSHAREFS_KMOD_DEVICE, O_RDWR | O_CLOEXEC));
	if (!dev) {
		*err = errno;
		return nullptr;
	}
	return std::unique_ptr<KmodRegions>(new KmodRegions(std::move(dev)));
}

void KmodRegions::set_fuse_fd(int fd)
{
	fuse_fd_ = fd;
	// A kernel without passthrough does not know the ioctl (ENOTTY) or
	// was built without it (EOPNOTSUPP); one with it refuses fd -1.
	fuse_backing_map probe{};
	probe.fd = -1;
	const int id = ioctl(fuse_fd_, FUSE_DEV_IOC_BACKING_OPEN, &probe);
	passthrough_ = !(id < 0 && (errno == ENOTTY || errno == EOPNOTSUPP));
	if (id > 0) {
		uint32_t unexpected = static_cast<uint32_t>(id);
		ioctl(fuse_fd_, FUSE_DEV_IOC_BACKING_CLOSE, &unexpected);
	}
	if (!passthrough_)
		self_mem_.reset(::open("/proc/self/mem", O_RDWR | O_CLOEXEC));
}

int KmodRegions::create(uint64_t ino, pid_t owner, int *fd_out)
{
	UniqueFd file;
	bool here = false;
	if (int err = hosts_.create(owner, &file, &here))
		return err;
	int id = 0;
	if (passthrough_) {
		fuse_backing_map map{};
		map.fd = file.get();
		id = ioctl(fuse_fd_, FUSE_DEV_IOC_BACKING_OPEN, &map);
		if (id <= 0)
			return id < 0 ? errno : EIO;
	}
	*fd_out = file.get();
	std::lock_guard<std::mutex> guard(lock_);
	regions_[ino] = Entry{std::move(file), id, nullptr, here};
	return 0;
}

void KmodRegions::adopt(uint64_t ino, UniqueFd file, int backing_id)
{
	std::lock_guard<std::mutex> guard(lock_);
	regions_[ino] = Entry{std::move(file), backing_id, nullptr, false};
}

void KmodRegions::destroy(uint64_t ino)
{
	std::lock_guard<std::mutex> guard(lock_);
	auto it = regions_.find(ino);
	if (it == regions_.end())
		return;
	uint32_t id = static_cast<uint32_t>(it->second.backing_id);
	if (id && ioctl(fuse_fd_, FUSE_DEV_IOC_BACKING_CLOSE, &id) < 0)
		std::fprintf(stderr, "msharefsd: closing the backing file of region %llu: %m\n",
			     static_cast<unsigned long long>(ino));
	regions_.erase(it);
	huge_backed_.erase(huge_backed_.lower_bound({ino, 0}), huge_backed_.upper_bound({ino, UINT64_MAX}));
}

int KmodRegions::backing_id(uint64_t ino)
{
	std::lock_guard<std::mutex> guard(lock_);
	auto it = regions_.find(ino);
	return it == regions_.end() ? 0 : it->second.backing_id;
}

int KmodRegions::region_ioctl(uint64_t ino, unsigned long cmd, const void *arg)
{
	std::lock_guard<std::mutex> guard(lock_);
	auto it = regions_.find(ino);
	if (it == regions_.end())
		return EIO;
	return ioctl(it->second.file.get(), cmd, arg) == 0 ? 0 : errno;
}

int KmodRegions::set_size(uint64_t ino, uint64_t size)
{
	return region_ioctl(ino, MSHAREFS_KMOD_SET_SIZE, &size);
}

int KmodRegions::stats(uint64_t ino, msharefs_kmod_stats *out)
{
	std::lock_guard<std::mutex> guard(lock_);
	auto it = regions_.find(ino);
	if (it == regions_.end())
		return EIO;
	if (ioctl(it->second.file.get(), MSHAREFS_KMOD_STATS, out) < 0)
		return errno;
	if (it->second.window && out->windows)
		out->windows--; // msharefsd's own is nobody's attachment
	return 0;
}

int KmodRegions::reopen(uint64_t ino, int access, UniqueFd *out)
{
	std::lock_guard<std::mutex> guard(lock_);
	auto it = regions_.find(ino);
	if (it == regions_.end())
		return ENOENT;
	// A new open: the peer shares no file description with msharefsd.
	out->reset(::open(fd_path(it->second.file.get()).c_str(), (access == O_RDWR ? O_RDWR : O_RDONLY) | O_CLOEXEC));
	return *out ? 0 : errno;
}

KmodRegions::DaemonWindow::~DaemonWindow() { munmap(addr_, size_); }

std::shared_ptr<KmodRegions::DaemonWindow> KmodRegions::window_of(uint64_t ino, int *err)
{
	std::lock_guard<std::mutex> guard(lock_);
	auto it = regions_.find(ino);
	if (it == regions_.end() || it->second.hosted_here) {
		*err = EIO; // a host must not fault in windows of its own regions
		return nullptr;
	}
	if (!it->second.window) {
		msharefs_kmod_stats st{};
		if (ioctl(it->second.file.get(), MSHAREFS_KMOD_STATS, &st) < 0 || !st.size) {
			*err = EIO;
			return nullptr;
		}
		// The module places it (PUD aligned) where this process has room.
		void *addr = mmap(nullptr, st.size, PROT_READ | PROT_WRITE, MAP_SHARED, it->second.file.get(), 0);
		if (addr == MAP_FAILED) {
			*err = EIO; // sealed: the owner is gone, and with it the layout
			return nullptr;
		}
		// The region hosts msharefsd forks later must not inherit it.
		if (madvise(addr, st.size, MADV_DONTFORK) != 0) {
			munmap(addr, st.size);
			*err = EIO;
			return nullptr;
		}
		it->second.window = std::make_shared<DaemonWindow>(addr, st.size);
	}
	return it->second.window;
}

// Through /proc/self/mem, so that a range the layout leaves without memory
// or access fails the copy (EIO) instead of faulting msharefsd.
int KmodRegions::copy(uint64_t ino, uint64_t off, void *buf, size_t len, bool store)
{
	int err = 0;
	std::shared_ptr<DaemonWindow> w = window_of(ino, &err);
	if (!w)
		return err;
	if (!self_mem_ || off > w->size() || len > w->size() - off)
		return EIO;
	size_t done = 0;
	while (done < len) {
		const off_t at = static_cast<off_t>(w->address() + off + done);
		char *p = static_cast<char *>(buf) + done;
		const ssize_t n = store ? pwrite(self_mem_.get(), p, len - done, at)
					: pread(self_mem_.get(), p, len - done, at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return EIO;
		done += static_cast<size_t>(n);
	}
	return 0;
}

int KmodRegions::read_region(uint64_t ino, uint64_t off, void *buf, size_t len)
{
	return copy(ino, off, buf, len, false);
}

int KmodRegions::write_region(uint64_t ino, uint64_t off, const void *buf, size_t len)
{
	return copy(ino, off, const_cast<void *>(buf), len, true);
}

int KmodRegions::sync(uint64_t ino)
{
	UniqueFd file;
	{
		std::lock_guard<std::mutex> guard(lock_);
		auto it = regions_.find(ino);
		if (it == regions_.end())
			return 0;
		file.reset(fcntl(it->second.file.get(), F_DUPFD_CLOEXEC, 0));
	}
	// Writing the region's files back may take long: not under lock_.
	return file && fsync(file.get()) == 0 ? 0 : errno;
}

int KmodRegions::identity(uint64_t ino, dev_t *dev, ino_t *file_ino)
{
	std::lock_guard<std::mutex> guard(lock_);
	auto it = regions_.find(ino);
	struct stat st {};
	if (it == regions_.end() || fstat(it->second.file.get(), &st) < 0)
		return ENOENT;
	*dev = st.st_dev;
	*file_ino = st.st_ino;
	return 0;
}

int KmodRegions::map(uint64_t ino, uint64_t offset, uint64_t size, uint32_t prot)
{
	msharefs_kmod_range r{offset, size, prot, 0};
	return region_ioctl(ino, MSHAREFS_KMOD_MAP, &r);
}

int KmodRegions::map_file(uint64_t ino, uint64_t offset, uint64_t size, uint64_t file_offset, uint32_t prot,
			  int fd)
{
	msharefs_kmod_map_file m{offset, size, file_offset, prot, fd};
	return region_ioctl(ino, MSHAREFS_KMOD_MAP_FILE, &m);
}

int KmodRegions::map_huge(uint64_t ino, uint64_t offset, uint64_t size, uint64_t huge_page_size, uint32_t prot)
{
	const unsigned int shift = static_cast<unsigned int>(__builtin_ctzll(huge_page_size));
	UniqueFd file(memfd_create("msharefs-huge", MFD_CLOEXEC | MFD_HUGETLB | (shift << MFD_HUGE_SHIFT)));
	int err = !file || ftruncate(file.get(), static_cast<off_t>(size)) < 0 ? ENOMEM
									       : map_file(ino, offset, size, 0, prot, file.get());
	if (err == ENOMEM || err == EOPNOTSUPP) // no pool for it: shmem
		err = map(ino, offset, size, prot);
	else if (!err) {
		std::lock_guard<std::mutex> guard(lock_);
		huge_backed_[{ino, offset}] = HugeObject{size, std::move(file)};
		return 0;
	}
	std::lock_guard<std::mutex> guard(lock_);
	huge_backed_.erase({ino, offset});
	return err;
}

bool KmodRegions::huge_backed(uint64_t ino, uint64_t offset)
{
	std::lock_guard<std::mutex> guard(lock_);
	return huge_backed_.count({ino, offset}) != 0;
}

int KmodRegions::unmap(uint64_t ino, uint64_t offset, uint64_t size)
{
	msharefs_kmod_range r{offset, size, 0, 0};
	if (int err = region_ioctl(ino, MSHAREFS_KMOD_UNMAP, &r))
		return err;
	release_huge(ino, offset, offset + size);
	return 0;
}

// The module punches only the region's own shmem on UNMAP: the huge pages of
// a MAP_HUGETLB mapping's memfd (and their reservation, once all of it is
// unmapped) go back to the pool here.
void KmodRegions::release_huge(uint64_t ino, uint64_t start, uint64_t end)
{
	std::lock_guard<std::mutex> guard(lock_);
	for (auto it = huge_backed_.lower_bound({ino, 0}); it != huge_backed_.end() && it->first.first == ino;) {
		const uint64_t at = it->first.second, lo = std::max(start, at),
			       hi = std::min(end, at + it->second.size);
		if (lo >= hi) {
			++it;
			continue;
		}
		// A punch frees the pages it finds and their reservations; only a
		// truncation gives back those of pages never touched.
		const bool whole = lo == at && hi == at + it->second.size;
		const int fd = it->second.file.get();
		if ((whole ? ftruncate(fd, 0)
			   : fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(lo - at),
				       static_cast<off_t>(hi - lo))) < 0)
			std::fprintf(stderr, "msharefsd: freeing the huge pages of region %llu at %llu: %m\n",
				     static_cast<unsigned long long>(ino), static_cast<unsigned long long>(lo));
		it = whole ? huge_backed_.erase(it) : std::next(it);
	}
}

int KmodRegions::protect(uint64_t ino, uint64_t offset, uint64_t size, uint32_t prot)
{
	msharefs_kmod_range r{offset, size, prot, 0};
	return region_ioctl(ino, MSHAREFS_KMOD_PROTECT, &r);
}

int KmodRegions::seal(uint64_t ino) { return region_ioctl(ino, MSHAREFS_KMOD_SEAL, nullptr); }

int KmodRegions::set_writer(uint64_t ino, int32_t pid) { return region_ioctl(ino, MSHAREFS_KMOD_SET_WRITER, &pid); }

std::string KmodRegions::tag(uint64_t ino, int backing_id)
{
	return "kmod." + std::to_string(ino) + "." + std::to_string(backing_id);
}

bool KmodRegions::parse_tag(const std::string &tag, uint64_t *ino, int *backing_id)
{
	unsigned long long i = 0;
	int id = 0;
	char extra = 0;
	if (std::sscanf(tag.c_str(), "kmod.%llu.%d%c", &i, &id, &extra) != 2)
		return false;
	*ino = i;
	*backing_id = id;
	return true;
}

} // namespace msharefs
