// The client runtime of the uffd data path. A window of an msharefs region
// is composed in the attaching process from the region's own objects, each
// mapped directly; holes are PROT_NONE reservations. Objects on shmem and
// hugetlbfs are placed under one userfaultfd per process, so that
//  - first touch is resolved in batches (FaultHandler),
//  - msharefsd, which holds a copy of that userfaultfd, can write-protect
//    the attacher's memory for PROTECT and LOCK without its threads,
//  - an access the region's current layout does not allow raises SIGSEGV
//    with the faulting address, exactly as on the kernel data path.
// Layout changes (CREATE_MAPPING, UNMAP, owner exit) are recomposed by the
// runtime's control thread before the daemon answers the ioctl.
//
// Roles, one class a file: Window (window.cpp) composes one attachment;
// FaultHandler (fault_handler.cpp) resolves faults; Runtime (runtime.cpp)
// owns the per-process userfaultfd, the window table, the control thread and
// fork handling; shim.cpp interposes libc for unmodified programs.
#pragma once

#include "layout_views.hpp"
#include "msharefs/published_layout.hpp"
#include "msharefs/runtime_protocol.hpp"
#include "msharefs/unique_fd.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <sys/mman.h>
#include <vector>

namespace msharefs::runtime {

// System calls that bypass the shim's interposers.
void *raw_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int raw_munmap(void *addr, size_t len);
int raw_mprotect(void *addr, size_t len, int prot);

// One installed run: consecutive mappings of one object at matching offsets.
struct Run {
	uint64_t offset = 0; // window-relative
	uint64_t size = 0;
	uint64_t object_id = 0;
	uint64_t object_offset = 0;
	uint64_t huge_page_size = 0;
	bool capable = false; // under userfaultfd (shmem, hugetlbfs)
	bool operator==(const Run &o) const
	{
		return offset == o.offset && size == o.size && object_id == o.object_id &&
		       object_offset == o.object_offset;
	}
};

class Window {
public:
	Window(uint64_t base, uint64_t size, int prot, uint64_t ino, UniqueFd region_fd, std::string socket_name);
	~Window();

	uint64_t base() const { return base_; }
	uint64_t size() const { return size_; }
	uint64_t ino() const { return ino_; }
	bool contains(uint64_t addr) const { return addr >= base_ && addr - base_ < size_; }
	// The region's published layout, as this process maps it.
	LayoutViews &layout() { return layout_; }
	int socket() const { return sock_.get(); }
	bool writable() const { return prot_ & 2; }

	// Connects to the daemon and composes the window. 0 or errno.
	int attach(int uffd, int ticket_fd);
	// The /dev/userfaultfd descriptor the window's daemon lends to a
	// process holding the region open (lend_uffd); 0 or errno (ENODEV:
	// it lends none).
	int borrow_uffd_device(UniqueFd *device);
	// datapath=kmod without passthrough: the module's file of region ino,
	// with region_fd's access, from the daemon at socket_name. 0 or errno.
	static int module_file(const std::string &socket_name, uint64_t ino, int region_fd, UniqueFd *file);
	// Recomposes from the published layout (control thread). 0 or errno.
	int sync();
	// Re-registers every run with a new userfaultfd (after fork). 0 or errno.
	int reregister(int uffd);
	// The descriptor of an object already installed, -1 if none.
	int object_fd(uint64_t object_id);
	// Tears the window down (munmap of the whole window). Socket closes.
	void detach();
	// The daemon went away: drop the link (data and mappings stay).
	void lose_daemon();
	bool linked() const { return sock_.get() >= 0; }
	// Fork takes every window's lock_ first, while the fault handler runs
	// (a recomposition holding it may wait for the handler to read a remap
	// event), then, with the handler kept out of the windows, the locks
	// the handler itself takes.
	void lock_for_fork() { lock_.lock(); }
	void lock_handler_state_for_fork()
	{
		objects_lock_.lock();
		layout_.lock_for_fork();
	}
	void unlock_after_fork(bool child)
	{
		layout_.unlock_after_fork(child);
		objects_lock_.unlock();
		lock_.unlock();
	}
	// After fork: the inherited socket belongs to the parent's attachment.
	void forget_link() { sock_.reset(); }
	// Answers a sync request after recomposing.
	int answer_sync(uint64_t cookie);

private:
	int request_object(uint64_t object_id, UniqueFd *fd);
	int handshake(int uffd, int ticket_fd);
	static bool served_by_daemon(int sock, int region_fd);
	static int one_shot_request(RuntimeMsgType type, const std::string &socket_name, uint64_t ino, int region_fd,
				    UniqueFd *out);
	int install(const Run &run, uint32_t vma_prot);
	bool register_run(int uffd, const Run &run, bool writable_vma);
	static bool register_range(int uffd, uint64_t start, uint64_t len, bool writable_vma);
	void reserve_uncovered(uint64_t off, uint64_t size);
	int apply_prot(const PublishedState &state);
	int compose(const PublishedState &state);

	const uint64_t base_;
	const uint64_t size_;
	const int prot_;
	const uint64_t ino_;
	UniqueFd region_fd_; // holds the region open while the window lives
	std::string socket_name_;
	UniqueFd sock_;
	int uffd_ = -1;
	LayoutViews layout_;
	std::mutex lock_; // runs_, objects_, recomposition
	std::map<uint64_t, Run> runs_;
	std::mutex objects_lock_;
	std::map<uint64_t, UniqueFd> objects_;
	uint64_t pending_cookie_ = 0; // a sync that arrived while composing
	// Set by detach() under lock_: the address range is no longer the
	// window's, and a sync that was already on its way must not map there.
	bool detached_ = false;
};

class FaultHandler {
public:
	explicit FaultHandler(class Runtime &rt) : rt_(rt) {}
	void run(int uffd, int stop_fd); // until stop_fd is readable

private:
	void resolve(uint64_t addr, uint64_t flags, pid_t tid);
	int fill(Window &w, uint64_t addr, const PublishedMapping &m, bool writable);
	Runtime &rt_;
};

class Runtime {
public:
	// What reservations (address space for windows) are mapped as.
	static constexpr int kReservation = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	// PROT_NONE address space for len bytes: at hint if it is aligned and
	// free, else anywhere aligned to align. MAP_FAILED if none.
	static void *reserve_aligned(uint64_t hint, size_t len, uint64_t align);
	static Runtime &get();
	// The real-time signal by which the fault handler has a faulting thread
	// raise its own SIGSEGV (SIGRTMAX - 1, or $MSHAREFS_FAULT_SIGNAL).
	static int fault_signal();

	// mmap of an msharefs region file: the composed window, or MAP_FAILED
	// with errno. *handled is false if fd is not a region this runtime
	// serves (the caller then maps it normally).
	void *map_window(void *addr, size_t len, int prot, int flags, int fd, off_t off, bool *handled);
	// munmap/mprotect/mremap of a range: -1 with errno EINVAL if it touches
	// a window other than as a whole; 1 if it unmapped whole windows (and
	// the rest of the range); 0 if no window is involved.
	int unmap(void *addr, size_t len);
	bool touches_window(const void *addr, size_t len);
	// True if fd is on an msharefs mount this process attached a window
	// from, and no daemon serves that mount now: requests would wait for a
	// restart, so they fail at once with ENOTCONN instead.
	bool daemon_gone(int fd);
	static dev_t cached_device(int fd);

	std::shared_ptr<Window> window_at(uint64_t addr);
	RuntimeTicket *ticket() { return ticket_; }
	int uffd() const { return uffd_.get(); }
	pid_t tgid() const { return tgid_; }

	void before_fork();
	void after_fork_parent();
	void after_fork_child();

private:
	void *map_kernel_window(void *addr, size_t len, int prot, int flags, int fd, const msharefs_runtime_info &info,
				uint64_t hint);
	Runtime() = default;
	// uffd, ticket, threads; first (may be null): a window being attached,
	// whose daemon may lend the device a full userfaultfd is made from.
	int start_locked(Window *first);
	void control_loop();
	void add_to_control(const std::shared_ptr<Window> &w);

	std::mutex lock_; // attach/detach/fork
	std::shared_mutex windows_lock_;
	std::vector<std::shared_ptr<Window>> windows_; // guarded by windows_lock_
	std::vector<std::shared_ptr<Window>> forking_;  // the windows a fork locked
	// The runtime socket of each msharefs mount (by device) a window was
	// attached from; guarded by windows_lock_.
	std::map<dev_t, std::string> daemon_sockets_;
	UniqueFd uffd_;
	UniqueFd uffd_device_; // lent by a daemon; kept for the userfaultfd of a fork child
	UniqueFd ticket_fd_;
	RuntimeTicket *ticket_ = nullptr;
	UniqueFd stop_;	     // eventfd: stops both threads
	UniqueFd control_epoll_;
	pid_t tgid_ = 0;
};

} // namespace msharefs::runtime
