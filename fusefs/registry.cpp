#include "registry.hpp"

#include "msharefs/unique_fd.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace msharefs {

namespace {
constexpr size_t kInitialSegmentSize = 4 << 20;
constexpr size_t kGrowStep = 16 << 20;

// Allocates [offset, offset+len) of the file now (beyond its size too), so
// that no store into the mapping has to. 0 or errno.
int preallocate(const std::string &path, uint64_t offset, uint64_t len)
{
	UniqueFd fd(::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
	if (!fd)
		return errno;
	if (::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(len)) < 0)
		return errno == EOPNOTSUPP ? 0 : errno;
	return 0;
}

uint64_t file_size(const std::string &path)
{
	struct stat st {};
	return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

} // namespace

Registry::Registry(std::string path, bip::managed_mapped_file segment)
	: path_(std::move(path)), segment_(std::move(segment))
{
	bind();
}

void Registry::bind()
{
	header_ = segment_.find_or_construct<RegistryHeader>("header")();
	nodes_ = segment_.find_or_construct<NodeMap>("nodes")(std::less<uint64_t>(),
							      segment_.get_segment_manager());
}

std::unique_ptr<Registry> Registry::create(const std::string &path, uint64_t alignment,
					   uint32_t root_mode)
{
	bip::permissions perm(0600);
	bip::managed_mapped_file seg(bip::create_only, path.c_str(), kInitialSegmentSize, nullptr, perm);
	if (int err = preallocate(path, 0, kInitialSegmentSize))
		throw std::runtime_error("registry " + path + ": " + std::strerror(err));
	std::unique_ptr<Registry> reg(new Registry(path, std::move(seg)));
	reg->header().alignment = alignment;
	NodeRecord &root = reg->add(0, "", NodeKind::directory, S_IFDIR | root_mode, 0, 0);
	NodeRecord &info = reg->add(kRootIno, "mshare_info", NodeKind::info, S_IFREG | 0444, 0, 0);
	if (root.ino != kRootIno || info.ino != kInfoIno)
		throw std::logic_error("registry: reserved inode numbers out of order");
	return reg;
}

std::unique_ptr<Registry> Registry::open(const std::string &path)
{
	bip::managed_mapped_file seg(bip::open_only, path.c_str());
	std::unique_ptr<Registry> reg(new Registry(path, std::move(seg)));
	if (reg->header().magic != RegistryHeader::kMagic ||
	    reg->header().version != RegistryHeader::kVersion)
		throw std::runtime_error("registry " + path + " has an unknown format");
	return reg;
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
	// The new part of the file is allocated first: if there is no room,
	// nothing changes.
	const size_t extra = std::max(bytes, kGrowStep);
	if (preallocate(path_, file_size(path_), extra) != 0)
		return false;
	// Growing needs the segment unmapped; every pointer into it is re-bound.
	segment_ = bip::managed_mapped_file();
	const bool grown = bip::managed_mapped_file::grow(path_.c_str(), extra);
	segment_ = bip::managed_mapped_file(bip::open_only, path_.c_str());
	bind();
	return grown;
}

} // namespace msharefs
