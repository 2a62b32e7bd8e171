// The views of a window's published layout (see layout_views.hpp).
#include "layout_views.hpp"

#include "runtime.hpp"

#include <algorithm>
#include <cerrno>
#include <sys/mman.h>
#include <utility>

namespace msharefs::runtime {

LayoutViews::~LayoutViews()
{
	for (size_t i = 0; i < count_; i++)
		raw_munmap(const_cast<PublishedLayoutPage *>(views_[i].page), views_[i].bytes);
}

// Maps a view of fd_ holding capacity mappings and reads from it from now
// on. Caller holds lock_. The last free slot gets the whole page set, so a
// view is always there to grow to. 0 or errno.
int LayoutViews::map_locked(uint32_t capacity)
{
	if (count_ == kSlots)
		return ENOMEM;
	if (count_ == kSlots - 1)
		capacity = PublishedLayoutPage::kMaxMappings;
	const size_t bytes = published_layout_bytes(capacity);
	void *p = raw_mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd_.get(), 0);
	if (p == MAP_FAILED)
		return errno;
	View &v = views_[count_++];
	v.page = static_cast<const PublishedLayoutPage *>(p);
	v.bytes = bytes;
	v.capacity = published_capacity(bytes);
	current_.store(&v, std::memory_order_release);
	return 0;
}

int LayoutViews::adopt(UniqueFd fd)
{
	std::lock_guard<std::mutex> guard(lock_);
	UniqueFd previous = std::exchange(fd_, std::move(fd));
	if (int err = map_locked(0)) {
		fd_ = std::move(previous);
		return err;
	}
	return 0;
}

// A reader found needed mappings in a view with fewer: maps one that holds
// them (twice as many, for what comes next). True if the view read now
// holds them.
bool LayoutViews::grow(uint32_t needed)
{
	std::lock_guard<std::mutex> guard(lock_);
	const View *v = current();
	if (v->capacity >= needed)
		return true; // another reader grew it
	const uint64_t want = std::max<uint64_t>(uint64_t{needed} * 2, uint64_t{v->capacity} * 2);
	return map_locked(static_cast<uint32_t>(std::min<uint64_t>(want, PublishedLayoutPage::kMaxMappings))) == 0 &&
	       current()->capacity >= needed;
}

int LayoutViews::read(PublishedState *state)
{
	for (;;) {
		const View *v = current();
		*state = read_published(v->page, v->capacity);
		if (!state->needed_capacity)
			return 0;
		if (!grow(state->needed_capacity))
			return ENOMEM;
	}
}

PublishedLookup LayoutViews::lookup(uint64_t region_offset)
{
	for (;;) {
		const View *v = current();
		PublishedLookup r = lookup_published(v->page, region_offset, v->capacity);
		if (!r.needed_capacity || !grow(r.needed_capacity))
			return r;
	}
}

uint64_t LayoutViews::seq() const
{
	return published_seq(current()->page);
}

void LayoutViews::release_earlier()
{
	std::lock_guard<std::mutex> guard(lock_);
	const View *keep = current();
	if (!keep || count_ < 2)
		return;
	const View kept = *keep;
	for (size_t i = 0; i < count_; i++)
		if (&views_[i] != keep)
			raw_munmap(const_cast<PublishedLayoutPage *>(views_[i].page), views_[i].bytes);
	views_[0] = kept;
	count_ = 1;
	current_.store(&views_[0], std::memory_order_release);
}

} // namespace msharefs::runtime
