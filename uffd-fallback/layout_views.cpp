// The views of a window's published layout (see layout_views.hpp).
#include "layout_views.hpp"

#include "runtime.hpp"

#include <algorithm>
#include <cerrno>
#include <sys/mman.h>
#include <sys/stat.h>
#include <utility>

namespace msharefs::runtime {

LayoutViews::~LayoutViews()
{
	for (View &v : views_)
		if (v.page)
			raw_munmap(const_cast<PublishedLayoutPage *>(v.page), v.bytes);
}

// Readers count themselves before they load the view (both sequentially
// consistent): a release that finds no reader inside knows that every later
// reader loads the view it keeps.
const LayoutViews::View *LayoutViews::enter()
{
	readers_.fetch_add(1, std::memory_order_seq_cst);
	const View *v = current_.load(std::memory_order_seq_cst);
	if (!v)
		leave();
	return v;
}

// Unmaps every view but the current one if no reader is inside; else they
// wait for the next adoption or growth. Caller holds lock_.
void LayoutViews::release_replaced_locked()
{
	if (readers_.load(std::memory_order_seq_cst) != 0)
		return;
	const View *keep = current_.load(std::memory_order_relaxed);
	for (View &v : views_) {
		if (!v.page || &v == keep)
			continue;
		raw_munmap(const_cast<PublishedLayoutPage *>(v.page), v.bytes);
		v = View{};
		count_--;
	}
}

// Maps a view of fd_ holding capacity mappings into a free slot and reads
// from it from now on. Caller holds lock_. The last free slot gets the
// whole page set, so a view is always there to grow to. 0 or errno.
int LayoutViews::map_locked(uint32_t capacity)
{
	auto slot = std::find_if(views_.begin(), views_.end(), [](const View &v) { return !v.page; });
	if (slot == views_.end())
		return ENOMEM;
	if (count_ == kSlots - 1)
		capacity = PublishedLayoutPage::kMaxMappings;
	struct stat st {};
	if (fstat(fd_.get(), &st) < 0 || st.st_dev != fd_dev_ || st.st_ino != fd_ino_)
		return EBADF; // the program closed the descriptor (and reused it)
	const size_t bytes = published_layout_bytes(capacity);
	void *p = raw_mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd_.get(), 0);
	if (p == MAP_FAILED)
		return errno;
	*slot = View{static_cast<const PublishedLayoutPage *>(p), bytes, published_capacity(bytes)};
	count_++;
	current_.store(&*slot, std::memory_order_seq_cst);
	release_replaced_locked();
	return 0;
}

int LayoutViews::adopt(UniqueFd fd)
{
	struct stat st {};
	if (fstat(fd.get(), &st) < 0)
		return errno;
	std::lock_guard<std::mutex> guard(lock_);
	UniqueFd previous = std::exchange(fd_, std::move(fd));
	const dev_t previous_dev = std::exchange(fd_dev_, st.st_dev);
	const ino_t previous_ino = std::exchange(fd_ino_, st.st_ino);
	if (int err = map_locked(0)) {
		fd_ = std::move(previous);
		fd_dev_ = previous_dev;
		fd_ino_ = previous_ino;
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
	const View *v = current_.load(std::memory_order_relaxed);
	if (v->capacity >= needed)
		return true; // another reader grew it
	const uint64_t want = std::max<uint64_t>(uint64_t{needed} * 2, uint64_t{v->capacity} * 2);
	return map_locked(static_cast<uint32_t>(std::min<uint64_t>(want, PublishedLayoutPage::kMaxMappings))) == 0 &&
	       current_.load(std::memory_order_relaxed)->capacity >= needed;
}

int LayoutViews::read(PublishedState *state)
{
	for (;;) {
		const View *v = enter();
		if (!v) {
			*state = PublishedState{};
			return ENOENT;
		}
		*state = read_published(v->page, v->capacity);
		leave();
		if (!state->needed_capacity)
			return 0;
		if (!grow(state->needed_capacity))
			return ENOMEM;
	}
}

PublishedLookup LayoutViews::lookup(uint64_t region_offset)
{
	for (;;) {
		const View *v = enter();
		if (!v)
			return PublishedLookup{};
		PublishedLookup r = lookup_published(v->page, region_offset, v->capacity);
		leave();
		if (!r.needed_capacity || !grow(r.needed_capacity))
			return r;
	}
}

uint64_t LayoutViews::seq()
{
	const View *v = enter();
	if (!v)
		return 0;
	const uint64_t seq = published_seq(v->page);
	leave();
	return seq;
}

} // namespace msharefs::runtime
