// Where the memory of anonymous mappings lives. On datapath=uffd the daemon
// chooses, per mapping, the backing that costs attachers the least page-table
// memory on a stock kernel:
//  - hugetlb: a file on the daemon's own hugetlbfs mount, when the huge page
//    pool can reserve the whole mapping. Attachers map it at 1 GiB-aligned
//    windows, where mainline shares the PMD tables between them;
//  - thp: a file on the daemon's own tmpfs mount with huge=within_size, when
//    shmem THP is allowed (transparent_hugepage/shmem_enabled is not never
//    or deny, or backing=thp was asked for): one PMD entry per 2 MiB;
//  - small: a file on the daemon's own tmpfs mount, 4 KiB pages.
// The mounts live in the mount's state directory (objects, thp, hugetlb; see
// StateDir), so that a restarted daemon reopens every object by name and no
// one else can create or see a name there; they are taken down with the
// mount's state. store_size= caps the two tmpfs mounts (size=): a store that
// does not fit fails with ENOSPC for the request that needed the room.
#pragma once

#include "objects.hpp"

#include <memory>
#include <string>

namespace msharefs {

const char *backing_name(Backing b);

class BackingStore {
public:
	// policy: auto, hugetlb, thp or 4k. Throws std::invalid_argument for
	// anything else. Without huge_objects (data paths whose windows do not
	// map the objects themselves) everything is 4 KiB shared memory.
	// state_dir: the mount's state directory; store_size: size= of each tmpfs
	// mount in bytes (0: the tmpfs default, half of RAM).
	BackingStore(std::string state_dir, const std::string &policy, bool huge_objects, uint64_t store_size = 0);

	// Creates the object of anonymous mapping m (kind hugetlb: MAP_HUGETLB),
	// in the cheapest backing the policy and the machine allow. nullptr
	// with *err set on failure.
	std::shared_ptr<BackingObject> create(const std::string &name, const Mapping &m, int *err);
	// 4 KiB shared memory of `size` bytes, whatever the policy.
	std::shared_ptr<BackingObject> create_small(const std::string &name, uint64_t size, int *err)
	{
		return create_in(Backing::small, name, size, ObjectKind::anonymous, kPageSize, err);
	}
	// Reopens an object a previous daemon created, wherever it lives.
	std::shared_ptr<BackingObject> open(const std::string &name, ObjectKind kind);

	static bool valid_policy(const std::string &policy);

private:
	std::string dir(Backing b) const;
	bool ensure_mounted(Backing b);
	bool thp_allowed() const;
	std::shared_ptr<BackingObject> create_in(Backing b, const std::string &name, uint64_t size,
						 ObjectKind kind, uint64_t unit, int *err);

	std::string state_dir_;
	std::string policy_;
	uint64_t store_size_;
	bool huge_objects_;
	uint64_t default_huge_page_size_;
};

} // namespace msharefs
