// fallocate(PUNCH_HOLE | KEEP_SIZE) of a region file (mshare_advise with
// MADV_DONTNEED or MADV_REMOVE): the anonymous memory of a range is freed for
// every attacher and reads as zeros after. The kernel writes the range's
// dirty pages back before the request and drops the FUSE page cache of it
// after; runtime windows map the objects themselves, whose freed pages leave
// every mapping. Ranges of callers' files keep their data.
#include "filesystem.hpp"

#include <fcntl.h>
#include <linux/falloc.h>

namespace msharefs {

namespace {

struct Hole {
	std::shared_ptr<BackingObject> object;
	uint64_t offset; // in the object
	uint64_t size;
};

} // namespace

int Filesystem::punch_range(uint64_t ino, uint64_t off, uint64_t size)
{
	if (kmod_)
		return EOPNOTSUPP; // the module holds the memory
	std::vector<Hole> holes;
	{
		std::shared_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(ino);
		if (!node)
			return ENOENT;
		if (node->kind != NodeKind::region || !node->geometry.sized)
			return EINVAL;
		if (int err = validate_range(node->geometry, off, size))
			return err;
		for (const Mapping &m : node->mappings) {
			const uint64_t from = std::max(off, m.region_offset);
			const uint64_t to = std::min(off + size, m.end());
			if (m.has_file || from >= to)
				continue;
			ObjectTable::const_accessor acc;
			if (objects_.find(acc, ObjectKey{ino, m.object_id}) && acc->second)
				holes.push_back({acc->second, m.object_offset + (from - m.region_offset), to - from});
		}
	}
	for (const Hole &h : holes)
		if (int err = h.object->punch_hole(h.offset, h.size))
			return err;
	return 0;
}

} // namespace msharefs
