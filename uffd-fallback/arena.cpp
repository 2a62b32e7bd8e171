#include "arena.hpp"

#include "runtime.hpp"

#include <cerrno>
#include <sys/mman.h>

namespace msharefs::runtime {

int RuntimeArena::reserve()
{
	if (base_)
		return 0;
	// Twice the size, then the aligned range kept and the rest given back.
	void *area = raw_mmap(nullptr, 2 * kBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (area == MAP_FAILED)
		return errno;
	const uintptr_t start = reinterpret_cast<uintptr_t>(area);
	const uintptr_t aligned = (start + kBytes - 1) & ~(uintptr_t{kBytes} - 1);
	if (aligned > start)
		raw_munmap(area, aligned - start);
	if (aligned + kBytes < start + 2 * kBytes)
		raw_munmap(reinterpret_cast<void *>(aligned + kBytes), start + 2 * kBytes - aligned - kBytes);
	base_ = reinterpret_cast<uint8_t *>(aligned);
	return 0;
}

void *RuntimeArena::take_layout_slot()
{
	bool expected = false;
	if (!base_ || !layout_taken_.compare_exchange_strong(expected, true))
		return nullptr;
	return base_;
}

void RuntimeArena::release_layout_slot()
{
	raw_mmap(base_, kLayoutSlotBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
	layout_taken_.store(false);
}

} // namespace msharefs::runtime
