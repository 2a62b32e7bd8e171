// Backing objects: the memory and files that hold a region's data. Anonymous
// mappings are backed by named files in memory file systems (BackingStore), so
// their data outlives the daemon; they are opened only while used, so an idle
// object holds no descriptor. File mappings are backed by the caller's own
// descriptor (held by the keeper too).
#pragma once

#include "msharefs/region.hpp"
#include "msharefs/unique_fd.hpp"

#include <tbb/concurrent_hash_map.h>

#include <memory>
#include <string>

namespace msharefs {

// Where the memory of an anonymous mapping lives (see BackingStore).
enum class Backing : uint8_t { small = 0, thp = 1, hugetlb = 2 };

// The backing of an object file's descriptor.
Backing backing_of_descriptor(int fd);

class BackingObject {
public:
	// memory_path: where the memory of an anonymous mapping lives (see
	// BackingStore); fd is then only looked at, and closed. Empty for a
	// caller's file, whose fd is kept.
	BackingObject(UniqueFd fd, ObjectKind kind, std::string memory_path);

	// 0 or errno. Reads wholly beyond the end of a file fail with EIO (the
	// faulting process gets SIGBUS); the tail of a partial last page reads as
	// zeros, as with mmap.
	int read(char *buf, size_t len, uint64_t offset) const;
	int write(const char *buf, size_t len, uint64_t offset) const;
	int sync() const;
	// Frees [offset, offset+len) of the object (fallocate PUNCH_HOLE). 0 or errno.
	int punch_hole(uint64_t offset, uint64_t len) const;
	// Unlinks the memory of an anonymous object.
	void destroy();

	// A descriptor of the object for the caller to own (O_RDWR for memory,
	// a duplicate of a caller's file); invalid with errno on failure.
	UniqueFd open() const;
	// A caller's file: the descriptor held for it; -1 for memory.
	int file_fd() const { return fd_.get(); }
	ObjectKind kind() const { return kind_; }
	Backing backing() const { return backing_; }
	bool is_memory() const { return !memory_path_.empty(); }

private:
	// The held descriptor of a caller's file, or the memory file opened
	// into *opened. -1 on failure.
	int descriptor(UniqueFd *opened) const;
	int write_through_mapping(int fd, const char *buf, size_t len, uint64_t offset) const;

	UniqueFd fd_; // caller files only
	ObjectKind kind_;
	std::string memory_path_; // empty for caller files
	Backing backing_ = Backing::small;
};

struct ObjectKey {
	uint64_t ino;
	uint64_t object_id;
};

struct ObjectKeyHash {
	static size_t hash(const ObjectKey &k) { return std::hash<uint64_t>()(k.ino * 0x9e3779b97f4a7c15ULL ^ k.object_id); }
	static bool equal(const ObjectKey &a, const ObjectKey &b)
	{
		return a.ino == b.ino && a.object_id == b.object_id;
	}
};

// Read by the data path without the registry lock, so that I/O never holds it.
using ObjectTable = tbb::concurrent_hash_map<ObjectKey, std::shared_ptr<BackingObject>, ObjectKeyHash>;

} // namespace msharefs
