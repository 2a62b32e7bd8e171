// In-flight request journal. Every request msharefsd reads from /dev/fuse is
// copied into a slot of a shared-memory file until its reply has been written.
// If the daemon dies, the kernel still waits for those replies (the keeper
// holds the connection open); the next daemon replays the slots so no caller
// is left waiting forever. Handlers that change state are idempotent under
// replay (see Filesystem::replaying()).
#pragma once

#include <atomic>
#include <mutex>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace msharefs {

class RequestJournal {
public:
	static constexpr size_t kSlots = 64;

	// Opens the journal file, creating it if needed.
	static std::unique_ptr<RequestJournal> open(const std::string &shm_name, size_t max_request);
	~RequestJournal();
	RequestJournal(const RequestJournal &) = delete;
	RequestJournal &operator=(const RequestJournal &) = delete;

	// Records the request the calling thread has just read.
	void record(const void *request, size_t len);
	// Forgets the request with this unique id once its reply is written.
	void complete(uint64_t unique);
	// Requests left unanswered by a previous daemon; empties their slots.
	std::vector<std::vector<char>> take_unanswered();

private:
	struct Slot {
		std::atomic<uint64_t> unique; // 0 when free
		uint32_t len;
		uint32_t pad;
	};
	RequestJournal(void *base, size_t bytes, size_t slot_bytes);
	Slot *slot(size_t i);
	Slot *thread_slot();
	size_t acquire_slot();
	void release_slot(size_t index);
	friend struct SlotLease;

	void *base_;
	size_t bytes_;
	size_t slot_bytes_;
	std::mutex free_lock_;
	std::vector<size_t> free_slots_; // guarded by free_lock_
};

} // namespace msharefs
