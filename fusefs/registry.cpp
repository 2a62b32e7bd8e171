#include "registry.hpp"

#include <ctime>
#include <stdexcept>
#include <sys/stat.h>

namespace msharefs {

namespace {
constexpr size_t kInitialSegmentSize = 4 << 20;
constexpr size_t kGrowStep = 16 << 20;
} // namespace

Registry::Registry(std::string name, bip::managed_shared_memory segment)
	: name_(std::move(name)), segment_(std::move(segment))
{
	bind();
}

void Registry::bind()
{
	header_ = segment_.find_or_construct<RegistryHeader>("header")();
	nodes_ = segment_.find_or_construct<NodeMap>("nodes")(std::less<uint64_t>(),
							      segment_.get_segment_manager());
}

std::unique_ptr<Registry> Registry::create(const std::string &shm_name, uint64_t alignment,
					   uint32_t root_mode)
{
	bip::shared_memory_object::remove(shm_name.c_str());
	bip::permissions perm(0600);
	bip::managed_shared_memory seg(bip::create_only, shm_name.c_str(), kInitialSegmentSize,
				       nullptr, perm);
	std::unique_ptr<Registry> reg(new Registry(shm_name, std::move(seg)));
	reg->header().alignment = alignment;
	NodeRecord &root = reg->add(0, "", NodeKind::directory, S_IFDIR | root_mode, 0, 0);
	NodeRecord &info = reg->add(kRootIno, "mshare_info", NodeKind::info, S_IFREG | 0444, 0, 0);
	if (root.ino != kRootIno || info.ino != kInfoIno)
		throw std::logic_error("registry: reserved inode numbers out of order");
	return reg;
}

std::unique_ptr<Registry> Registry::open(const std::string &shm_name)
{
	bip::managed_shared_memory seg(bip::open_only, shm_name.c_str());
	std::unique_ptr<Registry> reg(new Registry(shm_name, std::move(seg)));
	if (reg->header().magic != RegistryHeader::kMagic ||
	    reg->header().version != RegistryHeader::kVersion)
		throw std::runtime_error("registry " + shm_name + " has an unknown format");
	return reg;
}

void Registry::remove(const std::string &shm_name)
{
	bip::shared_memory_object::remove(shm_name.c_str());
}

ShmAllocator<char> Registry::allocator() { return ShmAllocator<char>(segment_.get_segment_manager()); }

NodeRecord *Registry::find(uint64_t ino)
{
	auto it = nodes_->find(ino);
	return it == nodes_->end() ? nullptr : &it->second;
}

NodeRecord &Registry::add(uint64_t parent, const std::string &name, NodeKind kind, uint32_t mode,
			  uint32_t uid, uint32_t gid)
{
	const uint64_t ino = parent == 0 ? kRootIno : header_->next_ino++;
	if (parent == 0)
		header_->next_ino = 2;
	NodeRecord rec(allocator());
	rec.ino = ino;
	rec.parent = parent;
	rec.name.assign(name.begin(), name.end());
	rec.kind = kind;
	rec.mode = mode;
	rec.uid = uid;
	rec.gid = gid;
	rec.ctime_sec = rec.mtime_sec = ::time(nullptr);
	auto [it, inserted] = nodes_->emplace(ino, std::move(rec));
	if (!inserted)
		throw std::logic_error("registry: inode number reused");
	return it->second;
}

void Registry::erase(uint64_t ino) { nodes_->erase(ino); }

bool Registry::ensure_space(size_t bytes)
{
	if (segment_.get_free_memory() > bytes)
		return true;
	// Growing needs the segment unmapped; every pointer into it is re-bound.
	segment_ = bip::managed_shared_memory();
	if (!bip::managed_shared_memory::grow(name_.c_str(), std::max(bytes, kGrowStep)))
		return false;
	segment_ = bip::managed_shared_memory(bip::open_only, name_.c_str());
	bind();
	return true;
}

} // namespace msharefs
