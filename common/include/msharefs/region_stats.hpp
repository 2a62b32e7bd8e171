// Per-region figures as msharefsd reports them (the user.mshare.stats
// extended attribute of each region file) and msharectl shows them: one JSON
// object per region, the schema of which lives here only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace msharefs {

// On each region file: one RegionStats object. On the mount root: an array of
// the regions that have no name any more but are still held.
inline constexpr const char *kStatsAttribute = "user.mshare.stats";
inline constexpr const char *kUnlinkedAttribute = "user.mshare.unlinked";

struct MappingStats {
	uint64_t offset = 0; // window-relative
	uint64_t size = 0;
	std::string prot;   // "rw-", "---", ...
	std::string object; // anonymous, file, hugetlb
	bool operator==(const MappingStats &) const = default;
};

struct RegionStats {
	std::string name; // path below the mount; the last name once unlinked
	bool unlinked = false;
	uint64_t size = 0; // 0 until sized
	uint64_t start = 0;
	int32_t owner_pid = 0; // 0 once the owner has exited
	uint32_t owner_uid = 0;
	uint32_t mode = 0; // permission bits
	std::string backend; // compat, uffd or kmod
	std::string backing; // as user.mshare.backing
	std::vector<MappingStats> mappings;
	std::vector<int32_t> attachers; // pids with a window mapped now, ascending
	uint64_t resident_bytes = 0;
	uint64_t page_table_bytes_used = 0;
	uint64_t page_table_bytes_saved = 0;
	std::string page_table_figures; // "exact" (module) or "estimated"
	bool operator==(const RegionStats &) const = default;
};

std::string to_json(const RegionStats &s);
// nullopt if text is not a region stats object.
std::optional<RegionStats> region_stats_from_json(std::string_view text);
// A JSON array of objects (as the mount root's user.mshare.unlinked).
std::optional<std::vector<RegionStats>> region_stats_list_from_json(std::string_view text);
std::string to_json(const std::vector<RegionStats> &list);

std::string prot_string(uint32_t prot);

// Page-table memory of a region's windows without the module, estimated from
// what is resident (see msharefs(5), "Statistics"). Per attacher, plain 4 KiB
// shared memory needs one PTE table (4 KiB) per 2 MiB range with resident
// pages and one PMD table per 1 GiB range with resident pages. Memory mapped
// with huge pages needs no PTE table; hugetlb memory that covers a whole
// 1 GiB-aligned range of the window has its PMD table shared by the kernel
// (one for all attachers). `saved` is the plain-shm figure minus `used`.
struct ResidentChunks {
	uint64_t base_page_chunks = 0; // 2 MiB ranges with resident 4 KiB pages
	uint64_t huge_page_chunks = 0; // 2 MiB ranges held by huge pages (THP, hugetlb)
	uint64_t private_pmd_tables = 0; // 1 GiB ranges each attacher needs a PMD table for
	uint64_t shared_pmd_tables = 0;	 // 1 GiB ranges of hugetlb whose PMD table is shared
};
struct PageTableFigures {
	uint64_t used = 0;
	uint64_t saved = 0;
};
PageTableFigures estimate_page_tables(const ResidentChunks &chunks, uint64_t attachers);

} // namespace msharefs
