// In-flight request journal. Each worker thread reads requests from
// /dev/fuse straight into its own slot of a file in the mount's state
// directory (allocated in full when opened, so that no read from /dev/fuse
// ever needs a page the file system cannot give), so a request
// is in the journal the moment the kernel hands it over: a SIGKILL that lands
// as read() returns cannot lose it. The slot is cleared once the reply has
// been written. If the daemon dies, the kernel still waits for those replies
// (the keeper holds the connection open); the next daemon replays the slots so
// no caller is left waiting forever. Handlers that change state are idempotent
// under replay (see Filesystem::replaying()). A reply written just before a
// crash can be replayed once more; the kernel drops the duplicate answer.
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

	// Sizes, allocates and maps the journal file `fd` (see StateDir). Throws
	// on failure (ENOSPC: no room for it).
	static std::unique_ptr<RequestJournal> open(int fd, size_t max_request);
	~RequestJournal();
	RequestJournal(const RequestJournal &) = delete;
	RequestJournal &operator=(const RequestJournal &) = delete;

	// Reads one request from the FUSE device into the calling thread's slot
	// and copies it to buf. Same result and errno as read(2).
	ssize_t read_request(int fuse_fd, void *buf, size_t len);
	// Puts a replayed request into the calling thread's slot and buf.
	size_t adopt(const std::vector<char> &request, void *buf, size_t len);
	// Forgets the request with this unique id once its reply is written.
	void complete(uint64_t unique);
	// Requests left unanswered by a previous daemon; empties their slots.
	std::vector<std::vector<char>> take_unanswered();

private:
	// A slot is this header followed by the request exactly as the kernel
	// wrote it; the request's own fuse_in_header.unique is 0 when the slot
	// holds nothing that waits for a reply.
	struct Slot {
		uint64_t reserved[2];
	};
	RequestJournal(void *base, size_t bytes, size_t slot_bytes);
	Slot *slot(size_t i);
	static std::atomic<uint64_t> &unique_of(Slot *s);
	static bool needs_reply(uint32_t opcode);
	size_t capacity() const { return slot_bytes_ - sizeof(Slot); }
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
