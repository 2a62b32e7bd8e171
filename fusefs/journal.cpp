#include "journal.hpp"

#include <algorithm>
#include <cstddef>
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

std::unique_ptr<RequestJournal> RequestJournal::open(int fd, size_t max_request)
{
	const size_t slot_bytes = (sizeof(Slot) + max_request + 4095) / 4096 * 4096;
	const size_t bytes = slot_bytes * kSlots;
	if (ftruncate(fd, static_cast<off_t>(bytes)) < 0)
		throw std::runtime_error("journal: ftruncate: " + std::string(strerror(errno)));
	if (::fallocate(fd, 0, 0, static_cast<off_t>(bytes)) < 0 && errno != EOPNOTSUPP)
		throw std::runtime_error("journal: cannot allocate it: " + std::string(strerror(errno)));
	void *base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
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
	unique_of(slot(index)).store(0, std::memory_order_release);
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

std::atomic<uint64_t> &RequestJournal::unique_of(Slot *s)
{
	static_assert(offsetof(fuse_in_header, unique) % alignof(std::atomic<uint64_t>) == 0);
	auto *in = reinterpret_cast<fuse_in_header *>(s + 1);
	return *reinterpret_cast<std::atomic<uint64_t> *>(&in->unique);
}

bool RequestJournal::needs_reply(uint32_t opcode)
{
	switch (opcode) {
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_INTERRUPT:
	case FUSE_INIT:	   // kept in the registry header instead
	case FUSE_DESTROY: // nothing waits for it
		return false;
	default:
		return true;
	}
}

ssize_t RequestJournal::read_request(int fuse_fd, void *buf, size_t len)
{
	Slot *s = thread_slot();
	if (!s || len > capacity())
		return ::read(fuse_fd, buf, len);
	unique_of(s).store(0, std::memory_order_release);
	auto *area = reinterpret_cast<char *>(s + 1);
	const ssize_t n = ::read(fuse_fd, area, len);
	if (n < 0) {
		const int saved = errno;
		unique_of(s).store(0, std::memory_order_release);
		errno = saved;
		return n;
	}
	std::memcpy(buf, area, static_cast<size_t>(n));
	if (static_cast<size_t>(n) < sizeof(fuse_in_header) ||
	    !needs_reply(reinterpret_cast<fuse_in_header *>(area)->opcode))
		unique_of(s).store(0, std::memory_order_release);
	return n;
}

size_t RequestJournal::adopt(const std::vector<char> &request, void *buf, size_t len)
{
	const size_t n = std::min(len, request.size());
	Slot *s = thread_slot();
	if (s && n <= capacity() && n >= sizeof(fuse_in_header)) {
		unique_of(s).store(0, std::memory_order_release);
		auto *area = reinterpret_cast<char *>(s + 1);
		std::memcpy(area + sizeof(uint64_t) * 2, request.data() + sizeof(uint64_t) * 2,
			    n - sizeof(uint64_t) * 2);
		std::memcpy(area, request.data(), sizeof(uint64_t)); // len, opcode
		const auto *in = reinterpret_cast<const fuse_in_header *>(request.data());
		unique_of(s).store(in->unique, std::memory_order_release);
	}
	std::memcpy(buf, request.data(), n);
	return n;
}

void RequestJournal::complete(uint64_t unique)
{
	if (unique == 0)
		return;
	Slot *own = thread_slot();
	if (own) {
		uint64_t expected = unique;
		if (unique_of(own).compare_exchange_strong(expected, 0))
			return;
	}
	for (size_t i = 0; i < kSlots; i++) {
		uint64_t expected = unique;
		if (unique_of(slot(i)).compare_exchange_strong(expected, 0))
			return;
	}
}

std::vector<std::vector<char>> RequestJournal::take_unanswered()
{
	std::vector<std::vector<char>> out;
	for (size_t i = 0; i < kSlots; i++) {
		Slot *s = slot(i);
		if (unique_of(s).load(std::memory_order_acquire) == 0)
			continue;
		const auto *in = reinterpret_cast<const fuse_in_header *>(s + 1);
		if (in->len >= sizeof(fuse_in_header) && in->len <= capacity() && needs_reply(in->opcode)) {
			const char *data = reinterpret_cast<const char *>(s + 1);
			out.emplace_back(data, data + in->len);
		}
		unique_of(s).store(0, std::memory_order_release);
	}
	return out;
}

} // namespace msharefs
