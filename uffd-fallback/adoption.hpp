// Adoption: an unmodified program's shared memory placed in msharefs
// regions (mshare-run, and MAP_SHARED_PT in any program under the runtime).
//
// A call the program makes for shared memory is answered with a window of a
// region that the runtime creates for it on the mount mshare-run names:
//  - mmap(MAP_SHARED | MAP_ANONYMOUS [| MAP_HUGETLB]) of at least the
//    threshold: a region of one anonymous mapping, released by its creator
//    (MSHAREFS_OWNER_RELEASE) and unlinked at once, so that it lives exactly
//    as long as shared anonymous memory does: until its last window is gone;
//  - mmap(MAP_SHARED | MAP_SHARED_PT, fd, off) of a file (and, under
//    mshare-run, MAP_SHARED of a shm_open file or memfd above the
//    threshold): the implicit region of that file range, named after it, so
//    that every process mapping the same range attaches the same region;
//  - System V segments above the threshold (sysv_segments.cpp).
// A window is mapped at an address aligned to mshare_info. The runtime
// remembers the length the program asked for, so that munmap of that
// length takes the whole window down.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <sys/types.h>

namespace msharefs::runtime {

// What mshare-run asked for, from its environment.
struct AdoptionSettings {
	std::string mount;	 // MSHARE_RUN_MOUNT; empty: mshare-run is not in charge
	uint64_t min_size = 0;	 // MSHARE_RUN_MIN_SIZE
	bool adopt_files = true; // MSHARE_RUN_FILES=0 turns shm_open/memfd adoption off
	bool verbose = false;	 // MSHARE_RUN_VERBOSE=1: one line per adopted segment
	static const AdoptionSettings &get();
};

class Adopter {
public:
	static Adopter &get();
	// With MSHARE_RUN_VERBOSE: one line on stderr for each adopted segment.
	static void note(const char *what, const std::string &name, size_t len);

	// mmap(MAP_SHARED | MAP_ANONYMOUS) under mshare-run. *handled false: not
	// adopted (below the threshold, not shared, or the mount refused), and
	// the caller maps it as asked.
	void *map_anonymous(void *addr, size_t len, int prot, int flags, bool *handled);
	// mmap(MAP_SHARED | MAP_SHARED_PT, fd, off): the implicit region's window,
	// or MAP_FAILED with errno (EINVAL: the call is not one MAP_SHARED_PT
	// accepts; ENODEV: no msharefs mount to place it on).
	void *map_shared_pt(void *addr, size_t len, int prot, int flags, int fd, off_t off);
	// mmap(MAP_SHARED) of a shm_open file or memfd under mshare-run: as
	// map_shared_pt when adopted; *handled false otherwise.
	void *map_shared_file(void *addr, size_t len, int prot, int flags, int fd, off_t off, bool *handled);
	// A window this process mapped for a System V segment; see sysv_segments.
	void *map_region(int region_fd, void *addr, uint64_t region_size, size_t program_len, int prot,
			 bool fixed);

	// munmap(addr, len) of an adopted window with the program's own length:
	// the whole window goes. 1 if addr was such a window (errno set on a
	// failure: -1), 0 if not.
	int unmap(void *addr, size_t len);
	// Whether [addr, addr+len) lies in what the program asked for of one
	// adopted window, where mprotect behaves as on the memory it replaces;
	// *writable: whether that window was mapped writable (else PROT_WRITE
	// fails with EACCES, as for a read-only shmat or descriptor).
	bool within_program_range(const void *addr, size_t len, bool *writable);

	// The mount to place regions on: mshare-run's, else the default one.
	// -1 with errno if there is none.
	int mount_fd();
	uint64_t alignment();

	// Creates region `name` holding len bytes of anonymous memory (huge:
	// MAP_HUGETLB, with huge_size_bits as MAP_HUGE_SHIFT encodes a size),
	// sized and rounded as adopted memory is (adoption_unit, alignment()),
	// released; its descriptor and *region_size, or -1 with errno.
	int create_anonymous_region(const std::string &name, uint64_t len, bool huge, int huge_size_bits,
				    uint64_t *region_size);
	// Creates region `name` of region_size with one mapping, filled in by
	// `mapping` (region_offset 0, size), optionally releases it, and returns
	// its descriptor; -1 with errno.
	int create_region(const std::string &name, uint64_t region_size, uint64_t map_size, uint32_t map_flags,
			  int object_fd, uint64_t object_offset, uint32_t prot, bool release);

private:
	Adopter() = default;
	void *attach(int region_fd, void *addr, uint64_t region_size, size_t program_len, int prot, bool fixed,
		     const std::string &implicit_name);
	// Whether a MAP_SHARED mapping of len bytes with prot and flags is one
	// mshare-run adopts (above the threshold, not fixed in place by
	// MAP_FIXED_NOREPLACE, readable, neither executable nor private).
	static bool adoptable(size_t len, int prot, int flags);
	// Whether this process still has a window of implicit region `name`.
	bool has_window_of(const std::string &name);
	// Unlinks implicit region `name` (open at region) if no process has a
	// window of it once this one, which has none left, has left it.
	void release_implicit(int region, const std::string &name);
	// Unlinks `name` if it still names the region open at region.
	void unlink_named(int region, const std::string &name);

	std::mutex lock_;
	int mount_fd_ = -1;
	uint64_t alignment_ = 0;
	uint64_t sequence_ = 0;
	struct Adopted {
		uint64_t window_size; // the region's: what munmap takes down
		size_t program_len;
		bool writable;
		std::string implicit_name; // implicit regions: unlinked by the last one out
		// A window the kernel maps (datapath=kmod): the region held open
		// while it lives, so that msharefsd keeps the region (and lists
		// its attachers) after its name is gone, as the runtime's windows
		// do. Inherited across fork like the window; -1 for runtime windows.
		int region_fd;
		dev_t region_dev;
		ino_t region_ino;
	};
	std::map<uint64_t, Adopted> adopted_; // by window base
};

// Rounds n up to a multiple of a power of two.
inline uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) & ~(to - 1); }

// The unit an adopted anonymous mapping of len bytes is rounded up to: its
// page size, and 2 MiB for anything that large, so that the daemon can back
// it with huge pages (hugetlb or THP) whole.
inline uint64_t adoption_unit(uint64_t len, uint64_t page_size)
{
	constexpr uint64_t kPmd = 2ULL << 20;
	return len >= kPmd && page_size < kPmd ? kPmd : page_size;
}

} // namespace msharefs::runtime
