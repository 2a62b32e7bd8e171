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
// Lifetime: a reader holds a view only inside lookup(), read() or seq(),
// counted in readers_. A view that a larger one or a new handshake's
// replaced is unmapped by the next adopt() once no reader is inside (each
// growth at least doubles the capacity, so a descriptor has few views);
// until then it stays mapped. All views go with the window.
#pragma once

#include "msharefs/published_layout.hpp"
#include "msharefs/unique_fd.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <sys/types.h>

namespace msharefs::runtime {

class LayoutViews {
public:
	LayoutViews() = default;
	~LayoutViews();
	LayoutViews(const LayoutViews &) = delete;
	LayoutViews &operator=(const LayoutViews &) = delete;

	// Reads from now on the page set of fd (a read-only memfd from the
	// daemon's handshake), keeping the descriptor to grow views from; the
	// views replaced before go if no reader is inside. 0 or errno.
	int adopt(UniqueFd fd);
	// The whole layout at one sequence number. 0, or ENOMEM if it has more
	// mappings than a view could be mapped for, ENOENT before adopt()
	// (then *state is empty).
	int read(PublishedState *state);
	// The mapping at region_offset (none before adopt()); needed_capacity
	// is set only if the layout had more mappings than a view could be
	// mapped for.
	PublishedLookup lookup(uint64_t region_offset);
	// 0 before adopt().
	uint64_t seq();
	void lock_for_fork() { lock_.lock(); }
	// In the child no reader is inside: its readers were other threads.
	void unlock_after_fork(bool child)
	{
		if (child)
			readers_.store(0, std::memory_order_relaxed);
		lock_.unlock();
	}

private:
	struct View {
		const PublishedLayoutPage *page = nullptr;
		size_t bytes = 0;
		uint32_t capacity = 0;
	};
	// The current descriptor's views (one per growth, at most 9), those
	// of earlier ones not yet released, and room to spare.
	static constexpr size_t kSlots = 24;

	// The view read now, counted as a reader until leave(); nullptr (and
	// not counted) before adopt().
	const View *enter();
	void leave() { readers_.fetch_sub(1, std::memory_order_release); }
	bool grow(uint32_t needed);
	int map_locked(uint32_t capacity);
	void release_replaced_locked();

	std::mutex lock_; // views_, count_, fd_: adoption, growth and release
	std::array<View, kSlots> views_{};
	size_t count_ = 0;
	std::atomic<const View *> current_{nullptr};
	std::atomic<uint32_t> readers_{0};
	UniqueFd fd_;
	dev_t fd_dev_ = 0; // what fd_ is: a closed and reused number is not it
	ino_t fd_ino_ = 0;
};

} // namespace msharefs::runtime
