// The daemon's side of the uffd data path: the runtime socket that client
// runtimes attach windows through, each region's published layout, and the
// attachers' userfaultfds, through which a protection change reaches every
// attacher without any of its threads taking part.
//
// Locking: attachers_lock_ guards the attacher table and the published
// pages. The service thread takes it briefly; callers from FUSE workers take
// it while they write-protect or send, and drop it while waiting for
// attachers to answer. No method may be called with Filesystem's
// registry_lock_ held exclusively if it waits for attachers (sync_attachers,
// apply_protection): an attacher recomposing asks the daemon for objects.
#pragma once

#include "msharefs/published_layout.hpp"
#include "msharefs/runtime_protocol.hpp"
#include "msharefs/uffd.hpp"
#include "msharefs/unique_fd.hpp"
#include "uid_quota.hpp"

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace msharefs {

class RuntimeService {
public:
	struct Hooks {
		// Publishes the region's current layout (calls publish()); errno
		// if the region cannot be attached (ENOENT, EINVAL unsized/orphaned).
		std::function<int(uint64_t ino)> republish;
		// A new descriptor for one of the region's objects, or errno.
		std::function<int(uint64_t ino, uint64_t object_id, UniqueFd *fd)> object_fd;
		// The device of the mount the daemon serves (region fds an
		// attacher sends must be on it).
		std::function<dev_t()> mount_device;
		// datapath=kmod without passthrough: a descriptor of the region's
		// module file with access O_RDONLY or O_RDWR, or errno. When set,
		// the service answers module_file and refuses attach (EOPNOTSUPP).
		std::function<int(uint64_t ino, int access, UniqueFd *fd)> module_file;
	};

	RuntimeService(std::string socket_name, Hooks hooks);
	~RuntimeService();
	int start(); // 0 or errno
	// The /dev/userfaultfd descriptor lent to peers that hold a region open
	// (lend_uffd in runtime_protocol.hpp); none (the default): ENODEV.
	void lend_uffd_device(UniqueFd device) { uffd_device_ = std::move(device); }
	// Runtime connections one non-root uid may hold at once (0: unlimited);
	// one more is answered EDQUOT. Call before start().
	void limit_attachers_per_uid(uint32_t limit) { attacher_quota_ = UidQuota(limit); }
	const std::string &socket_name() const { return socket_name_; }

	// Writes the region's layout where its attachers read it (nothing
	// while no one is attached: a region's view lives from its first
	// attach to its last detach).
	int publish(uint64_t ino, uint64_t region_size, std::span<const Mapping> mappings, uint32_t flags,
		    int32_t lock_holder, FillingRange filling = {});
	// Every live attacher of ino recomposes its window from the published
	// layout; returns when all have answered (0), or once each attacher
	// that has not has a stopped thread (EBUSY, seen within 5 ms) or did not
	// answer within the timeout (ETIMEDOUT).
	int sync_attachers(uint64_t ino);
	// True if a live attacher of ino is stopped as a whole (SIGSTOP, a
	// tracer): it cannot recompose its window until it runs again.
	bool has_stopped_attacher(uint64_t ino);
	// After publish(): brings the write protection of [off, off+size) in
	// every attacher in line with the published layout through their
	// userfaultfds, then has attachers recompose where that cannot do it
	// (PROT_NONE, files on other filesystems).
	// 0, or the errno of an attacher that had to recompose and could not
	// (EBUSY: stopped; ETIMEDOUT: mute), as sync_attachers.
	int apply_protection(uint64_t ino, uint64_t off, uint64_t size);
	// The region is gone: drop its page and detach its attachers.
	void forget_region(uint64_t ino);
	// Process ids of the runtimes with a window of ino attached now.
	std::vector<int32_t> attacher_pids(uint64_t ino);

private:
	struct Attacher;
	struct View {
		UniqueFd fd; // read-only, of a memfd sealed against writes and resizing
		PublishedLayoutPage *page = nullptr; // the daemon's writable mapping
		~View();
	};

	void serve();
	void accept_one();
	void handle(std::shared_ptr<Attacher> a);
	int handle_attach(Attacher &a, const RuntimeMessage &msg, std::vector<UniqueFd> &fds);
	int check_attach(Attacher &a, const RuntimeMessage &msg, std::vector<UniqueFd> &fds);
	int check_one_shot(const Attacher &a, const RuntimeMessage &msg, const std::vector<UniqueFd> &fds, int *mode);
	int check_lend(const Attacher &a, const RuntimeMessage &msg, const std::vector<UniqueFd> &fds);
	int module_file_for(const Attacher &a, const RuntimeMessage &msg, const std::vector<UniqueFd> &fds,
			    UniqueFd *file);
	int attacher_object_fd(const Attacher &a, uint64_t object_id, UniqueFd *fd);
	View *view_locked(uint64_t ino, int *err);
	int create_view_locked(uint64_t ino);
	void release_view_locked(uint64_t ino);
	void drop(const std::shared_ptr<Attacher> &a);
	void drop_locked(const std::shared_ptr<Attacher> &a);
	std::vector<std::shared_ptr<Attacher>> live_attachers_locked(uint64_t ino);
	int sync_all(const std::vector<std::shared_ptr<Attacher>> &list);
	// Until a fault install begun on a layout older than seq has ended (or a
	// timeout); with unless_stopped, not for an attacher that is stopped.
	void wait_ticket(const Attacher &a, uint64_t seq, bool unless_stopped = false);

	std::string socket_name_;
	Hooks hooks_;
	UniqueFd listen_;
	UniqueFd epoll_;
	UniqueFd wakeup_;
	std::thread thread_;
	UniqueFd uffd_device_;

	std::mutex lock_;
	std::condition_variable answered_;
	std::map<int, std::shared_ptr<Attacher>> by_socket_; // guarded by lock_
	UidQuota attacher_quota_{kDefaultMaxAttachersPerUid}; // guarded by lock_
	std::map<uint64_t, std::unique_ptr<View>> views_;   // guarded by lock_
	uint64_t next_cookie_ = 1;			     // guarded by lock_
};


} // namespace msharefs
