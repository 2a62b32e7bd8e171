#include "msharefs/region.hpp"

#include <linux/msharefs.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <sys/mman.h>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_MASK
#define MAP_HUGE_MASK 0x3f
#endif
#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

namespace msharefs {

namespace {

constexpr uint32_t kMapType = 0x0f;
constexpr uint32_t kAllowedProt = PROT_READ | PROT_WRITE | PROT_EXEC;
constexpr uint32_t kAllowedFlags = kMapType | MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_ANONYMOUS |
				   MAP_HUGETLB | (uint32_t{MAP_HUGE_MASK} << MAP_HUGE_SHIFT) | MAP_NORESERVE |
				   MAP_POPULATE | MAP_LOCKED;

bool page_aligned(uint64_t v, uint64_t unit = kPageSize) { return v % unit == 0; }

uint64_t round_up(uint64_t v, uint64_t unit) { return (v + unit - 1) / unit * unit; }

} // namespace

const char *object_kind_name(ObjectKind kind)
{
	switch (kind) {
	case ObjectKind::anonymous:
		return "anonymous";
	case ObjectKind::file:
		return "file";
	case ObjectKind::hugetlb:
		return "hugetlb";
	}
	return "unknown";
}

bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

int check_alignment(uint64_t align)
{
	if (!is_power_of_two(align) || align < kPageSize || align > kUserAddressLimit / 2)
		return EINVAL;
	return 0;
}

int validate_sizing(const Geometry &current, uint64_t start, uint64_t size, uint64_t align)
{
	if (current.sized)
		return EINVAL;
	if (size == 0 || start % align != 0 || size % align != 0)
		return EINVAL;
	if (add_overflows(start, size) || start + size > kUserAddressLimit)
		return EINVAL;
	return 0;
}

uint64_t requested_huge_page_size(uint32_t flags, uint64_t default_huge_page_size)
{
	const uint32_t shift = (flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK;
	if (shift == 0)
		return default_huge_page_size;
	return 1ULL << shift;
}

int validate_create(const Geometry &geo, const MappingRequest &req,
		    uint64_t default_huge_page_size, Mapping *out)
{
	if (!geo.sized)
		return EINVAL;
	const uint32_t type = req.flags & kMapType;
	if (type != MAP_SHARED && type != MAP_SHARED_VALIDATE)
		return EINVAL; // MAP_PRIVATE objects are not supported
	if (!(req.flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)))
		return EINVAL;
	if (req.flags & ~kAllowedFlags)
		return EINVAL;
	if (req.prot & ~kAllowedProt)
		return EINVAL;
	const bool anonymous = req.flags & MAP_ANONYMOUS;
	const bool huge_anon = anonymous && (req.flags & MAP_HUGETLB);
	if (!anonymous && (req.flags & MAP_HUGETLB) && !req.file_is_hugetlbfs)
		return EINVAL; // MAP_HUGETLB on a file that is not on hugetlbfs
	if (req.size == 0)
		return EINVAL;

	uint64_t unit = kPageSize;
	if (huge_anon)
		unit = requested_huge_page_size(req.flags, default_huge_page_size);
	else if (req.file_is_hugetlbfs)
		unit = req.file_huge_page_size;
	if (!is_power_of_two(unit) || unit < kPageSize)
		return EINVAL;
	if (!page_aligned(req.region_offset, unit) || !page_aligned(req.object_offset, unit))
		return EINVAL;
	if (add_overflows(req.size, unit - 1))
		return EINVAL;
	const uint64_t size = round_up(req.size, unit);
	if (add_overflows(req.region_offset, size) || req.region_offset + size > geo.size)
		return EINVAL;
	if (add_overflows(req.object_offset, size))
		return EINVAL;

	Mapping m;
	m.region_offset = req.region_offset;
	m.size = size;
	m.object_offset = anonymous ? 0 : req.object_offset;
	m.prot = req.prot;
	m.flags = req.flags;
	m.has_file = !anonymous;
	m.kind = (huge_anon || req.file_is_hugetlbfs) ? ObjectKind::hugetlb
		 : anonymous			      ? ObjectKind::anonymous
						      : ObjectKind::file;
	m.huge_page_size = unit == kPageSize && m.kind != ObjectKind::hugetlb ? 0 : unit;
	*out = m;
	return 0;
}

int validate_range(const Geometry &geo, uint64_t region_offset, uint64_t size)
{
	if (!geo.sized)
		return EINVAL;
	if (size == 0 || !page_aligned(region_offset) || !page_aligned(size))
		return EINVAL;
	if (add_overflows(region_offset, size) || region_offset + size > geo.size)
		return EINVAL;
	return 0;
}

int absolute_to_offset(const Geometry &geo, uint64_t addr, uint64_t *offset)
{
	if (!geo.sized)
		return EINVAL;
	if (addr < geo.start || addr - geo.start > geo.size)
		return EINVAL;
	*offset = addr - geo.start;
	return 0;
}

Layout::Layout(std::vector<Mapping> mappings) : mappings_(std::move(mappings))
{
	std::sort(mappings_.begin(), mappings_.end(),
		  [](const Mapping &a, const Mapping &b) { return a.region_offset < b.region_offset; });
}

uint64_t Layout::mapped_bytes() const
{
	uint64_t total = 0;
	for (const auto &m : mappings_)
		total += m.size;
	return total;
}

int Layout::can_insert(const Mapping &m) const
{
	for (const auto &e : mappings_)
		if (m.region_offset < e.end() && e.region_offset < m.end())
			return EEXIST;
	return 0;
}

int Layout::insert(const Mapping &m)
{
	if (int err = can_insert(m))
		return err;
	auto pos = std::lower_bound(mappings_.begin(), mappings_.end(), m,
				    [](const Mapping &a, const Mapping &b) {
					    return a.region_offset < b.region_offset;
				    });
	mappings_.insert(pos, m);
	return 0;
}

const Mapping *Layout::find(uint64_t off) const
{
	for (const auto &m : mappings_)
		if (off >= m.region_offset && off < m.end())
			return &m;
	return nullptr;
}

int Layout::split_at(uint64_t off)
{
	for (size_t i = 0; i < mappings_.size(); i++) {
		Mapping &m = mappings_[i];
		if (off <= m.region_offset || off >= m.end())
			continue;
		if (m.huge_page_size && (off - m.region_offset) % m.huge_page_size)
			return EINVAL;
		Mapping tail = m;
		const uint64_t head_size = off - m.region_offset;
		tail.region_offset = off;
		tail.size = m.size - head_size;
		tail.object_offset = m.object_offset + head_size;
		m.size = head_size;
		mappings_.insert(mappings_.begin() + static_cast<std::ptrdiff_t>(i) + 1, tail);
		return 0;
	}
	return 0;
}

int Layout::remove_range(uint64_t off, uint64_t size, std::vector<Mapping> *removed)
{
	if (size == 0 || add_overflows(off, size))
		return EINVAL;
	// Check both edges before changing anything.
	for (uint64_t edge : {off, off + size}) {
		const Mapping *m = find(edge);
		if (m && m->huge_page_size && (edge - m->region_offset) % m->huge_page_size)
			return EINVAL;
	}
	split_at(off);
	split_at(off + size);
	auto inside = [&](const Mapping &m) { return m.region_offset >= off && m.end() <= off + size; };
	if (removed)
		for (const auto &m : mappings_)
			if (inside(m))
				removed->push_back(m);
	std::erase_if(mappings_, inside);
	return 0;
}

std::vector<uint64_t> Layout::orphaned_objects(std::span<const Mapping> removed) const
{
	std::vector<uint64_t> ids;
	for (const auto &r : removed) {
		bool used = std::any_of(mappings_.begin(), mappings_.end(),
					[&](const Mapping &m) { return m.object_id == r.object_id; });
		if (!used && std::find(ids.begin(), ids.end(), r.object_id) == ids.end())
			ids.push_back(r.object_id);
	}
	return ids;
}

int Layout::protect(uint64_t off, uint64_t size, uint32_t prot)
{
	if (prot & ~kAllowedProt)
		return EINVAL;
	if (size == 0 || add_overflows(off, size))
		return EINVAL;
	for (uint64_t edge : {off, off + size}) {
		const Mapping *m = find(edge);
		if (m && m->huge_page_size && (edge - m->region_offset) % m->huge_page_size)
			return EINVAL;
	}
	split_at(off);
	split_at(off + size);
	for (auto &m : mappings_)
		if (m.region_offset >= off && m.end() <= off + size)
			m.prot = prot;
	return 0;
}

std::vector<Piece> Layout::pieces(uint64_t off, uint64_t len) const
{
	std::vector<Piece> out;
	if (len == 0)
		return out;
	uint64_t pos = off;
	const uint64_t end = add_overflows(off, len) ? UINT64_MAX : off + len;
	for (const auto &m : mappings_) {
		if (m.end() <= pos)
			continue;
		if (m.region_offset >= end)
			break;
		if (m.region_offset > pos) {
			out.push_back({pos, m.region_offset - pos, nullptr});
			pos = m.region_offset;
		}
		const uint64_t piece_end = std::min(end, m.end());
		out.push_back({pos, piece_end - pos, &m});
		pos = piece_end;
	}
	if (pos < end)
		out.push_back({pos, end - pos, nullptr});
	return out;
}

bool Layout::covers(uint64_t off, uint64_t len) const
{
	for (const auto &p : pieces(off, len))
		if (!p.mapping)
			return false;
	return true;
}

IoctlOp classify_ioctl(uint32_t cmd, bool sized)
{
	switch (cmd) {
	case MSHAREFS_GET_SIZE:
		return IoctlOp::get_size;
	case MSHAREFS_SET_SIZE: // == MSHAREFS_UNMAP_V3
		return sized ? IoctlOp::unmap_v3 : IoctlOp::set_size;
	case MSHAREFS_CREATE_MAPPING:
		return IoctlOp::create_mapping;
	case MSHAREFS_UNMAP:
		return IoctlOp::unmap;
	case MSHAREFS_CREATE_MAPPING_V3:
		return IoctlOp::create_mapping_v3;
	case MSHAREFS_PROTECT:
		return IoctlOp::protect;
	case MSHAREFS_LOCK:
		return IoctlOp::lock;
	case MSHAREFS_UNLOCK:
		return IoctlOp::unlock;
	case MSHAREFS_SET_OWNER:
		return IoctlOp::set_owner;
	default:
		return IoctlOp::unknown;
	}
}

const char *ioctl_name(IoctlOp op)
{
	static const char *const names[] = {"GET_SIZE",		 "SET_SIZE", "CREATE_MAPPING",
					    "UNMAP",		 "CREATE_MAPPING_V3",
					    "UNMAP_V3",		 "PROTECT",  "LOCK",
					    "UNLOCK",		 "SET_OWNER", "unknown"};
	return names[static_cast<int>(op)];
}

std::optional<uint64_t> parse_bytes(std::string_view text)
{
	uint64_t value = 0;
	auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
	if (ec != std::errc() || ptr == text.data())
		return std::nullopt;
	std::string_view rest(ptr, text.data() + text.size() - ptr);
	int shift = 0;
	if (rest == "K" || rest == "k" || rest == "KiB")
		shift = 10;
	else if (rest == "M" || rest == "MiB")
		shift = 20;
	else if (rest == "G" || rest == "GiB")
		shift = 30;
	else if (rest == "T" || rest == "TiB")
		shift = 40;
	else if (!rest.empty())
		return std::nullopt;
	if (shift && value > (UINT64_MAX >> shift))
		return std::nullopt;
	return value << shift;
}

} // namespace msharefs
