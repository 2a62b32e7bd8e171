#include "journal.hpp"

#include <cstring>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdexcept>
#include <sys/mman.h>
#include <unistd.h>

namespace msharefs {

// Each worker thread leases one slot for its lifetime: replies are written by
// the thread that read the request (msharefsd never defers a reply).
struct SlotLease {
	RequestJournal *journal = nullptr;
	size_t index = SIZE_MAX;
	~SlotLease()
	{
		if (journal && index != SIZE_MAX)
			journal->release_slot(index);
	}
};

namespace {
thread_local SlotLease tls_lease;
} // namespace

std::unique_ptr<RequestJournal> RequestJournal::open(const std::string &shm_name, size_t max_request)
{
	const size_t slot_bytes = (sizeof(Slot) + max_request + 4095) / 4096 * 4096;
	const size_t bytes = slot_bytes * kSlots;
	int fd = shm_open(shm_name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		throw std::runtime_error("journal: shm_open " + shm_name + ": " + strerror(errno));
	if (ftruncate(fd, static_cast<off_t>(bytes)) < 0) {
		::close(fd);
		throw std::runtime_error("journal: ftruncate: " + std::string(strerror(errno)));
	}
	void *base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	::close(fd);
	if (base == MAP_FAILED)
		throw std::runtime_error("journal: mmap: " + std::string(strerror(errno)));
	return std::unique_ptr<RequestJournal>(new RequestJournal(base, bytes, slot_bytes));
}

RequestJournal::RequestJournal(void *base, size_t bytes, size_t slot_bytes)
	: base_(base), bytes_(bytes), slot_bytes_(slot_bytes)
{
	for (size_t i = kSlots; i-- > 0;)
		free_slots_.push_back(i);
}

size_t RequestJournal::acquire_slot()
{
	std::lock_guard<std::mutex> guard(free_lock_);
	if (free_slots_.empty())
		return SIZE_MAX;
	size_t index = free_slots_.back();
	free_slots_.pop_back();
	return index;
}

void RequestJournal::release_slot(size_t index)
{
	slot(index)->unique.store(0, std::memory_order_release);
	std::lock_guard<std::mutex> guard(free_lock_);
	free_slots_.push_back(index);
}

RequestJournal::~RequestJournal() { munmap(base_, bytes_); }

RequestJournal::Slot *RequestJournal::slot(size_t i)
{
	return reinterpret_cast<Slot *>(static_cast<char *>(base_) + i * slot_bytes_);
}

RequestJournal::Slot *RequestJournal::thread_slot()
{
	if (tls_lease.journal != this) {
		tls_lease.journal = this;
		tls_lease.index = acquire_slot();
	}
	return tls_lease.index != SIZE_MAX ? slot(tls_lease.index) : nullptr;
}

void RequestJournal::record(const void *request, size_t len)
{
	Slot *s = thread_slot();
	if (!s || len < sizeof(fuse_in_header) || len > slot_bytes_ - sizeof(Slot))
		return;
	const auto *in = static_cast<const fuse_in_header *>(request);
	s->unique.store(0, std::memory_order_relaxed);
	switch (in->opcode) {
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_INTERRUPT:
	case FUSE_INIT:
	case FUSE_DESTROY:
		return; // nothing waits for a reply, or handled separately
	default:
		break;
	}
	std::memcpy(reinterpret_cast<char *>(s + 1), request, len);
	s->len = static_cast<uint32_t>(len);
	s->unique.store(in->unique, std::memory_order_release);
}

void RequestJournal::complete(uint64_t unique)
{
	if (unique == 0)
		return;
	Slot *own = thread_slot();
	if (own && own->unique.load(std::memory_order_relaxed) == unique) {
		own->unique.store(0, std::memory_order_release);
		return;
	}
	for (size_t i = 0; i < kSlots; i++) {
		uint64_t expected = unique;
		if (slot(i)->unique.compare_exchange_strong(expected, 0))
			return;
	}
}

std::vector<std::vector<char>> RequestJournal::take_unanswered()
{
	std::vector<std::vector<char>> out;
	for (size_t i = 0; i < kSlots; i++) {
		Slot *s = slot(i);
		if (s->unique.load(std::memory_order_acquire) == 0)
			continue;
		const char *data = reinterpret_cast<const char *>(s + 1);
		out.emplace_back(data, data + s->len);
		s->unique.store(0, std::memory_order_release);
	}
	return out;
}

} // namespace msharefs
