// The published layout of one window's region as this process maps it.
//
// The daemon's page set has room for 16384 mappings (772 KiB); a process
// maps only its first bytes, as many as the region's mappings need: one
// page holds 84, which is what nearly every region has. When the daemon
// publishes more, the reader that notices maps a larger view of the same
// descriptor and reads again. Every byte the runtime maps is address space
// among the program's own mappings, and in a process that maps little else
// (a database backend) it decides how many page tables the process needs.
//
// Lifetime: a view stays mapped while the window lives, since a thread may
// still read it after a larger one replaced it; views are few (each growth
// at least doubles the capacity). The exception is a child of fork: once it
// has its own view, it unmaps the ones it inherited (release_earlier()).
#pragma once

#include "msharefs/published_layout.hpp"
#include "msharefs/unique_fd.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace msharefs::runtime {

class LayoutViews {
public:
	LayoutViews() = default;
	~LayoutViews();
	LayoutViews(const LayoutViews &) = delete;
	LayoutViews &operator=(const LayoutViews &) = delete;

	// Reads from now on the page set of fd (a read-only memfd from the
	// daemon's handshake), keeping the descriptor to grow views from.
	// 0 or errno.
	int adopt(UniqueFd fd);
	// The whole layout at one sequence number. 0, or ENOMEM if it has more
	// mappings than a view could be mapped for (then *state is empty).
	int read(PublishedState *state);
	// The mapping at region_offset; needed_capacity is set only if the
	// layout had more mappings than a view could be mapped for.
	PublishedLookup lookup(uint64_t region_offset);
	uint64_t seq() const;
	// Unmaps every view but the one read now. Only while no other thread
	// of the process can be reading one (a child of fork, before its
	// runtime threads see the window).
	void release_earlier();
	void lock_for_fork() { lock_.lock(); }
	void unlock_after_fork() { lock_.unlock(); }

private:
	struct View {
		const PublishedLayoutPage *page = nullptr;
		size_t bytes = 0;
		uint32_t capacity = 0;
	};
	// Inherited views (at most one per growth) plus the child's own.
	static constexpr size_t kSlots = 24;

	const View *current() const { return current_.load(std::memory_order_acquire); }
	bool grow(uint32_t needed);
	int map_locked(uint32_t capacity);

	std::mutex lock_; // views_, count_, fd_: adoption and growth
	std::array<View, kSlots> views_{};
	size_t count_ = 0;
	std::atomic<const View *> current_{nullptr};
	UniqueFd fd_;
};

} // namespace msharefs::runtime
