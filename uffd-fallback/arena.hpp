// The runtime's own memory, in one place.
//
// A process that attaches through the runtime maps a few things of the
// runtime's own: the ticket page, the stacks of the fault-handler and control
// threads, and each window's published layout page. Placed by the kernel,
// they land in two or three 2 MiB ranges, each needing a page table in every
// attaching process. The arena is one 2 MiB-aligned 2 MiB range that holds
// them all, so the runtime costs one page table: the first window's layout
// page at its start, the ticket after it, the two stacks at its end (each
// above a guard page). Slots not in use stay reserved (PROT_NONE); a second
// window's layout page, or one that replaces it, is mapped where the kernel
// puts it.
#pragma once

#include "msharefs/published_layout.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace msharefs::runtime {

class RuntimeArena {
public:
	static constexpr size_t kBytes = 2 << 20;
	static constexpr size_t kStackBytes = 256 << 10;
	static constexpr size_t kGuardBytes = 4096;
	static constexpr size_t kLayoutSlotBytes = (kPublishedLayoutBytes + 4095) & ~size_t{4095};
	static constexpr size_t kThreads = 2;

	// Reserves the range, once per process (a fork child keeps its copy).
	// 0 or errno.
	int reserve();
	void *ticket_slot() const { return base_ + kLayoutSlotBytes; }
	// The lowest address of thread i's stack (kStackBytes).
	void *stack_slot(size_t i) const { return base_ + kBytes - (i + 1) * (kStackBytes + kGuardBytes) + kGuardBytes; }
	// The layout slot if it is free (then taken), else nullptr.
	void *take_layout_slot();
	// Whether p is the layout slot.
	bool is_layout_slot(const void *p) const { return base_ && p == base_; }
	// Unmaps what is in the layout slot and frees it.
	void release_layout_slot();

private:
	uint8_t *base_ = nullptr;
	std::atomic<bool> layout_taken_{false};
};

static_assert(RuntimeArena::kLayoutSlotBytes + 4096 + RuntimeArena::kThreads *
	      (RuntimeArena::kStackBytes + RuntimeArena::kGuardBytes) <= RuntimeArena::kBytes,
	      "the runtime's memory fits in one 2 MiB range");

} // namespace msharefs::runtime
