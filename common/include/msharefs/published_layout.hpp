// A region's layout as published by msharefsd for the client runtime: a
// small shared-memory page set the daemon writes and every attacher reads
// without locks (a sequence lock). The runtime's fault handler reads it on
// every fault, so a change the daemon publishes before answering an ioctl is
// seen by every attacher's next fault, with no attacher thread taking part.
#pragma once

#include "msharefs/region.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace msharefs {

struct PublishedMapping {
	uint64_t region_offset;
	uint64_t size;
	uint64_t object_offset;
	uint64_t object_id;
	uint64_t huge_page_size;
	uint32_t prot;
	uint8_t kind; // ObjectKind
	uint8_t has_file;
	uint16_t state; // kMappingFilling
};

// The daemon is copying the mapping's data into its object: faults there
// wait (the runtime does not resolve them) until a layout without the flag
// is published and the attacher has recomposed.
inline constexpr uint16_t kMappingFilling = 1;

// A window range whose mappings are published with kMappingFilling.
struct FillingRange {
	uint64_t offset = 0;
	uint64_t size = 0;
};

// Region-wide state flags.
inline constexpr uint32_t kPublishedOrphaned = 1; // owner gone: no mappings, no attach
inline constexpr uint32_t kPublishedHandoff = 2;  // LOCK/UNLOCK in use: only the holder writes

struct PublishedLayoutPage {
	static constexpr uint32_t kMagic = 0x6d73706c; // "mspl"
	static constexpr size_t kMaxMappings = 16384;

	std::atomic<uint64_t> seq; // odd while the daemon writes
	uint32_t magic;
	uint32_t flags;
	uint64_t region_size;
	int32_t lock_holder; // tgid holding MSHAREFS_LOCK, 0 if none
	uint32_t count;
	PublishedMapping mappings[kMaxMappings];
};

inline constexpr size_t kPublishedLayoutBytes = sizeof(PublishedLayoutPage);

// A reader maps only the first bytes of the page set, enough for the
// mappings a region has (one page holds 84): the bytes that hold capacity
// mappings, and the mappings that many bytes hold.
inline constexpr size_t kPublishedLayoutPageBytes = 4096;
inline constexpr size_t published_layout_bytes(uint32_t capacity)
{
	const size_t want = offsetof(PublishedLayoutPage, mappings) + size_t{capacity} * sizeof(PublishedMapping);
	const size_t bytes = (want + kPublishedLayoutPageBytes - 1) / kPublishedLayoutPageBytes * kPublishedLayoutPageBytes;
	return bytes < kPublishedLayoutBytes ? bytes : kPublishedLayoutBytes;
}
inline constexpr uint32_t published_capacity(size_t bytes)
{
	const size_t n = (bytes - offsetof(PublishedLayoutPage, mappings)) / sizeof(PublishedMapping);
	return static_cast<uint32_t>(n < PublishedLayoutPage::kMaxMappings ? n : PublishedLayoutPage::kMaxMappings);
}

// What a reader sees at one sequence number. needed_capacity is non-zero
// when the layout had more mappings than the reader could read (then
// mappings is empty): that many.
struct PublishedState {
	uint64_t seq = 0;
	uint32_t flags = 0;
	int32_t lock_holder = 0;
	uint64_t region_size = 0;
	uint32_t needed_capacity = 0;
	std::vector<PublishedMapping> mappings;
};

// The mapping covering one window offset, read consistently (see
// PublishedState for needed_capacity; mapping is then empty).
struct PublishedLookup {
	uint64_t seq = 0;
	uint32_t flags = 0;
	int32_t lock_holder = 0;
	uint32_t needed_capacity = 0;
	std::optional<PublishedMapping> mapping;
};

// Writer side (msharefsd). Caller serialises writers. Returns EOVERFLOW if
// the layout has more mappings than a page set holds.
int publish_layout(PublishedLayoutPage *page, uint64_t region_size, std::span<const Mapping> mappings,
		   uint32_t flags, int32_t lock_holder, FillingRange filling = {});

// Reader side (runtime). Never blocks on the writer for long: a writer
// holds the odd sequence only while copying the layout. capacity: how many
// mappings the reader's mapping of the page set holds.
PublishedState read_published(const PublishedLayoutPage *page,
			      uint32_t capacity = PublishedLayoutPage::kMaxMappings);
PublishedLookup lookup_published(const PublishedLayoutPage *page, uint64_t region_offset,
				 uint32_t capacity = PublishedLayoutPage::kMaxMappings);
uint64_t published_seq(const PublishedLayoutPage *page);

// True if the mapping may be written by process `tgid` under this state.
bool published_writable(const PublishedMapping &m, uint32_t flags, int32_t lock_holder, int32_t tgid);

} // namespace msharefs
