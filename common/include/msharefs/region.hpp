// The region model shared by msharefsd, the client runtime and the module's
// user side: geometry, the layout of mappings inside a region, and every rule
// of the API that does not depend on the data path. Each rule answers with the
// errno the API documents (0 when the request is valid).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace msharefs {

inline constexpr uint64_t kPageSize = 4096;
// Highest user address on x86-64 with 4-level paging (128 TiB).
inline constexpr uint64_t kUserAddressLimit = 1ULL << 47;

enum class ObjectKind : uint8_t {
	anonymous = 0, // shared anonymous memory owned by the region
	file = 1,      // a caller's file descriptor
	hugetlb = 2,   // MAP_HUGETLB anonymous memory, or a hugetlbfs file
};

const char *object_kind_name(ObjectKind kind);

// One object mapped into a region. Offsets are window-relative: the seed ABI's
// absolute address minus the region start, or the v3 region_offset.
struct Mapping {
	uint64_t region_offset = 0;
	uint64_t size = 0;
	uint64_t object_offset = 0; // offset into the object (file offset)
	uint64_t object_id = 0;     // the daemon's id for the backing object
	uint64_t huge_page_size = 0; // 0 unless hugetlb
	uint32_t prot = 0;
	uint32_t flags = 0;
	ObjectKind kind = ObjectKind::anonymous;
	bool has_file = false; // backed by a caller's file rather than memory owned by the region
	// The most the object itself allows (a file's access mode, seals, append
	// only), as found at CREATE_MAPPING: PROTECT grants no more [EACCES].
	uint32_t max_prot = 7; // PROT_READ | PROT_WRITE | PROT_EXEC

	uint64_t end() const { return region_offset + size; }
	bool operator==(const Mapping &) const = default;
};

struct Geometry {
	uint64_t start = 0;
	uint64_t size = 0;
	bool sized = false;
};

// Alignment of regions: a power of two, at least a page.
int check_alignment(uint64_t align);

// SET_SIZE / ftruncate / fallocate: start and size multiples of align, size
// non-zero, the window inside the user address space. Once only.
int validate_sizing(const Geometry &current, uint64_t start, uint64_t size, uint64_t align);

// What a caller asks CREATE_MAPPING for, window-relative.
struct MappingRequest {
	uint64_t region_offset = 0;
	uint64_t size = 0;
	uint64_t object_offset = 0;
	uint32_t prot = 0;
	uint32_t flags = 0;
	// For file-backed requests: filled in by the caller after resolving fd.
	bool file_is_hugetlbfs = false;
	uint64_t file_huge_page_size = 0;
};

// Huge page size a MAP_HUGETLB request names (MAP_HUGE_2MB, ...) or the
// system default when it names none.
uint64_t requested_huge_page_size(uint32_t flags, uint64_t default_huge_page_size);

// Checks flags, prot, alignment and bounds; on success fills *out with the
// normalised mapping (hugetlb sizes rounded up) but leaves object_id unset.
// Overlap with existing mappings is checked by Layout::can_insert.
int validate_create(const Geometry &geo, const MappingRequest &req,
		    uint64_t default_huge_page_size, Mapping *out);

// UNMAP and PROTECT ranges: page aligned, non-empty, inside the region.
int validate_range(const Geometry &geo, uint64_t region_offset, uint64_t size);

// Seed ABI addresses are absolute: convert to window-relative.
int absolute_to_offset(const Geometry &geo, uint64_t addr, uint64_t *offset);

// A piece of a window range: either a slice of a mapping or a hole.
struct Piece {
	uint64_t region_offset;
	uint64_t size;
	const Mapping *mapping; // nullptr for a hole
	uint64_t object_offset() const
	{
		return mapping->object_offset + (region_offset - mapping->region_offset);
	}
};

// The mappings of one region: sorted, non-overlapping, inside the region.
class Layout {
public:
	Layout() = default;
	explicit Layout(std::vector<Mapping> mappings);

	std::span<const Mapping> mappings() const { return mappings_; }
	bool empty() const { return mappings_.empty(); }
	uint64_t mapped_bytes() const;

	// 0, or EEXIST when the new mapping overlaps an existing one.
	int can_insert(const Mapping &m) const;
	int insert(const Mapping &m);

	// Removes [off, off+size), splitting mappings at the edges like munmap.
	// Returns the parts removed; a hugetlb mapping cut off its huge page
	// boundary makes the call fail with EINVAL and change nothing.
	int remove_range(uint64_t off, uint64_t size, std::vector<Mapping> *removed);

	// Ids of objects no mapping refers to any more, from a removed list.
	std::vector<uint64_t> orphaned_objects(std::span<const Mapping> removed) const;

	// Changes the protection of every mapped page in [off, off+size),
	// splitting at the edges. EINVAL if prot has unknown bits.
	int protect(uint64_t off, uint64_t size, uint32_t prot);

	// The pieces covering [off, off+len) in order, holes included.
	std::vector<Piece> pieces(uint64_t off, uint64_t len) const;
	// True if every byte of [off, off+len) is mapped.
	bool covers(uint64_t off, uint64_t len) const;
	const Mapping *find(uint64_t off) const;

	void clear() { mappings_.clear(); }

private:
	int split_at(uint64_t off); // makes off a mapping boundary
	std::vector<Mapping> mappings_;
};

// Which operation an ioctl number means. The v3 UNMAP shares the seed
// SET_SIZE number: before the region is sized it is SET_SIZE, afterwards UNMAP.
enum class IoctlOp {
	get_size,
	set_size,
	create_mapping,
	unmap,
	create_mapping_v3,
	unmap_v3,
	protect,
	lock,
	unlock,
	set_owner,
	unknown,
};
IoctlOp classify_ioctl(uint32_t cmd, bool sized);
const char *ioctl_name(IoctlOp op);

// Bytes of page tables (last level, 8 bytes per 4 KiB page) one process needs
// to map `bytes` of memory with base pages.
inline uint64_t pte_bytes_for(uint64_t bytes) { return bytes / kPageSize * 8; }

bool is_power_of_two(uint64_t v);
inline bool add_overflows(uint64_t a, uint64_t b) { return a + b < a; }
// Parses a byte count with an optional K/M/G/T suffix (powers of 1024).
std::optional<uint64_t> parse_bytes(std::string_view text);

} // namespace msharefs
