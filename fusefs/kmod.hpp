// The kmod data path (datapath=kmod): every region is also a region of the
// msharefs_kmod module, whose file the FUSE connection uses as the
// passthrough backing file of the region. A program's mmap() of
// /sys/fs/mshare/NAME then lands in the module, which links the window to
// the region's shared page tables; msharefsd only forwards the layout
// (sizing, mappings, protections, the files mapped) and never sees the data.
//
// Without FUSE passthrough (Linux before 6.9, Debian 12's 6.1) the region
// files are not backing files: programs that use the runtime get a
// descriptor of the module's file from msharefsd (the runtime socket's
// module_file request) and map that, and the FUSE file is the compat path,
// its page cache filled from and written back to region memory through a
// window of msharefsd's own (read_region/write_region).
#pragma once

#include "msharefs/unique_fd.hpp"
#include "region_hosts.hpp"

#include "msharefs_kmod.h"
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace msharefs {

class KmodRegions {
public:
	// Opens the module's device; nullptr with *err set if it is missing.
	static std::unique_ptr<KmodRegions> open(int *err);

	// The /dev/fuse connection the backing files are registered with;
	// finds out whether the kernel takes backing files at all.
	void set_fuse_fd(int fd);
	// True when region files are FUSE passthrough backing files (every
	// mmap() of the FUSE file is a window of the module).
	bool passthrough() const { return passthrough_; }

	// Creates the (unsized) module region of a region node, hosted in its
	// owner's memory cgroup, and registers it as a backing file. Returns 0
	// or errno; *fd_out is the region file, for the keeper.
	int create(uint64_t ino, pid_t owner, int *fd_out);
	// Takes back a region file kept across a daemon restart.
	void adopt(uint64_t ino, UniqueFd file, int backing_id);
	// Forgets the region: unregisters the backing file (the memory goes with
	// the last window).
	void destroy(uint64_t ino);

	int backing_id(uint64_t ino);
	int set_size(uint64_t ino, uint64_t size);
	int map(uint64_t ino, uint64_t offset, uint64_t size, uint32_t prot);
	int map_file(uint64_t ino, uint64_t offset, uint64_t size, uint64_t file_offset, uint32_t prot, int fd);
	// Anonymous memory of huge_page_size pages: a MFD_HUGETLB memfd of its
	// own, mapped with map_file, where the huge page pool can reserve it;
	// else the region's shmem, as map() (the uffd path's backing=auto).
	int map_huge(uint64_t ino, uint64_t offset, uint64_t size, uint64_t huge_page_size, uint32_t prot);
	// Whether map_huge at offset got huge pages.
	bool huge_backed(uint64_t ino, uint64_t offset);
	int unmap(uint64_t ino, uint64_t offset, uint64_t size);
	int protect(uint64_t ino, uint64_t offset, uint64_t size, uint32_t prot);
	int seal(uint64_t ino);
	// Who may store through windows: -1 everyone, else only process pid
	// (the LOCK holder).
	int set_writer(uint64_t ino, int32_t pid);
	// The module's own figures for the region, and the identity (st_dev,
	// st_ino) of its file, which every window of it maps.
	int stats(uint64_t ino, msharefs_kmod_stats *out);
	int identity(uint64_t ino, dev_t *dev, ino_t *file_ino);

	// A new descriptor of the region's module file opened with access
	// (O_RDONLY or O_RDWR: a window of an O_RDONLY one can never store).
	int reopen(uint64_t ino, int access, UniqueFd *out);
	// Copies between buf and region memory at [off, off+len) through
	// msharefsd's own window of the region (not inherited by the hosts it
	// forks later). 0, or EIO where the layout has no memory (or no access:
	// a hole, a read-only range, another process holding LOCK) there, or
	// errno.
	int read_region(uint64_t ino, uint64_t off, void *buf, size_t len);
	int write_region(uint64_t ino, uint64_t off, const void *buf, size_t len);
	// Writes the region's file mappings back (fsync of the module file).
	int sync(uint64_t ino);

	// Keeper tags: "kmod.<ino>.<backing id>".
	static std::string tag(uint64_t ino, int backing_id);
	static bool parse_tag(const std::string &tag, uint64_t *ino, int *backing_id);

private:
	// msharefsd's window of a region (read_region/write_region), unmapped
	// when the last copy through it is done.
	class DaemonWindow {
	public:
		DaemonWindow(void *addr, size_t size) : addr_(addr), size_(size) {}
		DaemonWindow(const DaemonWindow &) = delete;
		DaemonWindow &operator=(const DaemonWindow &) = delete;
		~DaemonWindow();
		uint64_t address() const { return reinterpret_cast<uint64_t>(addr_); }
		size_t size() const { return size_; }

	private:
		void *addr_;
		size_t size_;
	};
	struct Entry {
		UniqueFd file;
		int backing_id = 0;
		std::shared_ptr<DaemonWindow> window; // made at the first copy
		bool hosted_here = false; // msharefsd is the host: it maps no window
	};
	explicit KmodRegions(UniqueFd dev) : dev_(std::move(dev)), hosts_(dev_.get()) {}
	int region_ioctl(uint64_t ino, unsigned long cmd, const void *arg);
	// The region's daemon window (mapped now if need be), or null with *err.
	std::shared_ptr<DaemonWindow> window_of(uint64_t ino, int *err);
	int copy(uint64_t ino, uint64_t off, void *buf, size_t len, bool store);

	UniqueFd dev_;
	RegionHosts hosts_;
	int fuse_fd_ = -1;
	bool passthrough_ = true;
	UniqueFd self_mem_; // /proc/self/mem: copies that fail instead of faulting
	std::mutex lock_;
	std::unordered_map<uint64_t, Entry> regions_; // guarded by lock_
	// A MAP_HUGETLB mapping's own hugetlbfs memfd (the module holds it too).
	struct HugeObject {
		uint64_t size = 0;
		UniqueFd file;
	};
	void release_huge(uint64_t ino, uint64_t start, uint64_t end);
	std::map<std::pair<uint64_t, uint64_t>, HugeObject> huge_backed_; // by (ino, offset); guarded by lock_
};

} // namespace msharefs
