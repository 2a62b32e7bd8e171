// The region registry: the namespace and every region's geometry and layout,
// kept in a Boost.Interprocess managed mapped file in the mount's state
// directory (StateDir), so that a restarted daemon finds the mount exactly as
// its predecessor left it. Every byte of the file is allocated when it is
// created or grown (fallocate): a full file system fails the growth, never a
// store into the mapping.
//
// Locking: the registry is not internally synchronised. msharefsd guards it
// with Filesystem::registry_lock_ (shared for lookups and the data path,
// exclusive for changes). Only the daemon writes it.
#pragma once

#include "msharefs/region.hpp"

#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/containers/string.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <boost/interprocess/managed_mapped_file.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <sys/types.h>

namespace msharefs {

namespace bip = boost::interprocess;

using SegmentManager = bip::managed_mapped_file::segment_manager;
template <class T> using ShmAllocator = bip::allocator<T, SegmentManager>;
using ShmString = bip::basic_string<char, std::char_traits<char>, ShmAllocator<char>>;
using ShmMappings = bip::vector<Mapping, ShmAllocator<Mapping>>;

enum class NodeKind : uint8_t { directory, region, info };

inline constexpr uint64_t kRootIno = 1;
inline constexpr uint64_t kInfoIno = 2;

struct NodeRecord {
	NodeRecord(const ShmAllocator<char> &alloc) : name(alloc), mappings(alloc) {}

	uint64_t ino = 0;
	uint64_t parent = 0;
	ShmString name;
	NodeKind kind = NodeKind::region;
	uint32_t mode = 0; // permission bits and S_IFMT
	uint32_t uid = 0;
	uint32_t gid = 0;
	int64_t ctime_sec = 0;
	int64_t mtime_sec = 0;
	bool unlinked = false;
	uint32_t open_count = 0;

	// Regions only.
	Geometry geometry;
	int32_t owner_pid = 0;	       // thread-group id of the creator
	uint64_t owner_start_time = 0; // /proc/PID/stat field 22, against pid reuse
	bool orphaned = false;	       // the owner exited: no mappings, no new ones
	uint64_t next_object_id = 1;
	int32_t lock_holder = 0; // MSHAREFS_LOCK holder (tgid), 0 if none
	bool handoff = false;	  // LOCK used: only the holder writes
	ShmMappings mappings;
};

using NodeMap = bip::map<uint64_t, NodeRecord, std::less<uint64_t>,
			 ShmAllocator<std::pair<const uint64_t, NodeRecord>>>;

struct RegistryHeader {
	static constexpr uint32_t kMagic = 0x6d736866; // "mshf"
	static constexpr uint32_t kVersion = 3;
	uint32_t magic = kMagic;
	uint32_t version = kVersion;
	uint64_t alignment = 0;
	uint64_t next_ino = 3;
	uint32_t generation = 0; // bumped by each daemon that serves the mount
	uint32_t init_request_len = 0;
	unsigned char init_request[512] = {}; // the kernel's FUSE_INIT, replayed on restart
};

class Registry {
public:
	// Creates a fresh registry file at `path` (O_EXCL: the state directory
	// was emptied first) or opens the existing one. Throw on failure.
	static std::unique_ptr<Registry> create(const std::string &path, uint64_t alignment,
						uint32_t root_mode);
	static std::unique_ptr<Registry> open(const std::string &path);

	RegistryHeader &header() { return *header_; }
	NodeMap &nodes() { return *nodes_; }
	NodeRecord *find(uint64_t ino);
	NodeRecord &add(uint64_t parent, const std::string &name, NodeKind kind, uint32_t mode,
			uint32_t uid, uint32_t gid);
	void erase(uint64_t ino);
	ShmAllocator<char> allocator();
	// Grows the segment if free space runs low; returns false if it cannot
	// (no space for the file: the caller fails with ENOSPC, the registry
	// stays as it was). Invalidates every NodeRecord pointer: call it before
	// looking nodes up.
	bool ensure_space(size_t bytes = 256 << 10);

private:
	Registry(std::string path, bip::managed_mapped_file segment);
	void bind();

	std::string path_;
	bip::managed_mapped_file segment_;
	RegistryHeader *header_ = nullptr;
	NodeMap *nodes_ = nullptr;
};

} // namespace msharefs
