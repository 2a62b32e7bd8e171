#include "msharefs/published_layout.hpp"

#include <cerrno>
#include <sys/mman.h>

namespace msharefs {

int publish_layout(PublishedLayoutPage *page, uint64_t region_size, std::span<const Mapping> mappings,
		   uint32_t flags, int32_t lock_holder, FillingRange filling)
{
	if (mappings.size() > PublishedLayoutPage::kMaxMappings)
		return EOVERFLOW;
	const uint64_t seq = page->seq.load(std::memory_order_relaxed);
	page->seq.store(seq + 1, std::memory_order_relaxed);
	std::atomic_thread_fence(std::memory_order_release);
	page->magic = PublishedLayoutPage::kMagic;
	page->flags = flags;
	page->region_size = region_size;
	page->lock_holder = lock_holder;
	page->count = static_cast<uint32_t>(mappings.size());
	for (size_t i = 0; i < mappings.size(); i++) {
		const Mapping &m = mappings[i];
		const bool in_filling = m.region_offset < filling.offset + filling.size &&
				     m.end() > filling.offset;
		page->mappings[i] = PublishedMapping{m.region_offset, m.size, m.object_offset, m.object_id,
						     m.huge_page_size, m.prot, static_cast<uint8_t>(m.kind),
						     static_cast<uint8_t>(m.has_file),
						     static_cast<uint16_t>(in_filling ? kMappingFilling : 0)};
	}
	std::atomic_thread_fence(std::memory_order_release);
	page->seq.store(seq + 2, std::memory_order_release);
	return 0;
}

namespace {

uint64_t read_begin(const PublishedLayoutPage *page)
{
	for (;;) {
		const uint64_t seq = page->seq.load(std::memory_order_acquire);
		if (!(seq & 1))
			return seq;
		__builtin_ia32_pause();
	}
}

bool read_retry(const PublishedLayoutPage *page, uint64_t seq)
{
	std::atomic_thread_fence(std::memory_order_acquire);
	return page->seq.load(std::memory_order_relaxed) != seq;
}

// The count, if a reader whose mapping holds capacity mappings can read
// them; else 0, with *needed set when the count is valid but beyond it.
uint32_t bounded_count(const PublishedLayoutPage *page, uint32_t capacity, uint32_t *needed)
{
	// Read once: every read of the mappings is bounded by this value, not
	// by the count the writer may be changing.
	const uint32_t n = __atomic_load_n(&page->count, __ATOMIC_RELAXED);
	*needed = 0;
	if (n > PublishedLayoutPage::kMaxMappings)
		return 0; // torn: the sequence check retries
	if (n > capacity) {
		*needed = n;
		return 0;
	}
	return n;
}

} // namespace

uint64_t published_seq(const PublishedLayoutPage *page)
{
	return read_begin(page);
}

PublishedState read_published(const PublishedLayoutPage *page, uint32_t capacity)
{
	PublishedState st;
	do {
		st.seq = read_begin(page);
		st.flags = page->flags;
		st.lock_holder = page->lock_holder;
		st.region_size = page->region_size;
		const uint32_t n = bounded_count(page, capacity, &st.needed_capacity);
		st.mappings.assign(page->mappings, page->mappings + n);
	} while (read_retry(page, st.seq));
	return st;
}

PublishedLookup lookup_published(const PublishedLayoutPage *page, uint64_t region_offset, uint32_t capacity)
{
	PublishedLookup r;
	do {
		r.seq = read_begin(page);
		r.flags = page->flags;
		r.lock_holder = page->lock_holder;
		r.mapping.reset();
		uint32_t lo = 0;
		uint32_t hi = bounded_count(page, capacity, &r.needed_capacity);
		while (lo < hi) {
			const uint32_t mid = lo + (hi - lo) / 2;
			const PublishedMapping m = page->mappings[mid];
			if (region_offset < m.region_offset) {
				hi = mid;
			} else if (region_offset >= m.region_offset + m.size) {
				lo = mid + 1;
			} else {
				r.mapping = m;
				break;
			}
		}
	} while (read_retry(page, r.seq));
	return r;
}

bool published_writable(const PublishedMapping &m, uint32_t flags, int32_t lock_holder, int32_t tgid)
{
	if (!(m.prot & PROT_WRITE))
		return false;
	return !(flags & kPublishedHandoff) || lock_holder == tgid;
}

} // namespace msharefs
