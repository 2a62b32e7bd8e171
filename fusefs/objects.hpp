// Backing objects: the memory and files that hold a region's data. Anonymous
// mappings are backed by named files in memory file systems (BackingStore), so
// their data outlives the daemon; file mappings by the caller's own descriptor
// (held by the keeper).
#pragma once

#include "msharefs/region.hpp"
#include "msharefs/unique_fd.hpp"

#include <tbb/concurrent_hash_map.h>

#include <memory>
#include <string>

namespace msharefs {

class BackingObject {
public:
	// memory_path: where the memory of an anonymous mapping lives (see
	// BackingStore); empty for a caller's file.
	BackingObject(UniqueFd fd, ObjectKind kind, std::string memory_path)
		: fd_(std::move(fd)), kind_(kind), memory_path_(std::move(memory_path))
	{
	}

	// 0 or errno. Reads wholly beyond the end of a file fail with EIO (the
	// faulting process gets SIGBUS); the tail of a partial last page reads as
	// zeros, as with mmap.
	int read(char *buf, size_t len, uint64_t offset) const;
	int write(const char *buf, size_t len, uint64_t offset) const;
	int sync() const;
	// Unlinks the memory of an anonymous object.
	void destroy();

	int fd() const { return fd_.get(); }
	ObjectKind kind() const { return kind_; }
	bool is_memory() const { return !memory_path_.empty(); }

private:
	int write_through_mapping(const char *buf, size_t len, uint64_t offset) const;

	UniqueFd fd_;
	ObjectKind kind_;
	std::string memory_path_; // empty for caller files
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
