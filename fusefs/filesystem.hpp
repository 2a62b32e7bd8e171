// msharefsd's filesystem: the /sys/fs/mshare namespace, the ioctl ABI and the
// compat data path (the FUSE page cache, filled and written back from the
// region's layout).
//
// Locking: registry_lock_ guards the registry and names_ — shared for lookups
// and for resolving a data-path request to its backing objects, exclusive for
// every change. It is never held across I/O on a backing object nor across a
// notification to the kernel: invalidating an inode makes the kernel write
// dirty pages back through this same daemon, which needs the lock shared.
// keeper_lock_ serialises the keeper connection. The owner watch thread and
// the deferred-work thread take registry_lock_ only through orphan_region()
// and never while holding owner_lock_ or deferred_lock_.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "backing_store.hpp"
#include "journal.hpp"
#include "keeper.hpp"
#include "kmod.hpp"
#include "objects.hpp"
#include "registry.hpp"
#include "runtime_service.hpp"
#include "uid_quota.hpp"

#include "msharefs/region_stats.hpp"

#include <atomic>
#include <condition_variable>
#include <functional>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>

struct mshare_owner;
namespace msharefs {
struct OwnerId;
}

namespace msharefs {

struct Options {
	std::string mountpoint;
	uint64_t alignment = 1ULL << 39;
	uint32_t root_mode = 01777;
	std::string state_dir;	     // the mount's private state directory (StateDir)
	std::string runtime_socket; // datapath=uffd: the runtime service's socket
	uint64_t store_size = 0;    // size= of the object tmpfs mounts, 0: default
	uint32_t max_regions_per_uid = kDefaultMaxRegionsPerUid; // 0: unlimited; root never limited
	uint32_t max_attachers_per_uid = kDefaultMaxAttachersPerUid; // runtime connections; likewise
	std::string data_path = "auto"; // resolved to kmod or uffd before the Filesystem is made
	std::string backing = "auto"; // anonymous memory on datapath=uffd (BackingStore)
	// datapath=uffd: lend /dev/userfaultfd to runtime peers holding a region
	// open (-o uffd_device=lend, the default), or not (keep).
	bool lend_uffd_device = true;
	bool foreground = false;
	bool debug = false;
};

class Filesystem {
public:
	Filesystem(Options options, std::unique_ptr<Registry> registry,
		   std::unique_ptr<RequestJournal> journal, std::optional<KeeperClient> keeper,
		   bool restarted);
	~Filesystem();

	static const fuse_lowlevel_ops &operations();
	static const fuse_custom_io &custom_io();

	// After the session exists: reopen backing objects, start watching
	// owners, queue the requests a previous daemon left unanswered.
	void attach(fuse_session *se, std::vector<std::pair<std::string, UniqueFd>> kept);
	void set_mount_device(dev_t dev) { mount_dev_ = dev; }
	void set_keeper(std::optional<KeeperClient> keeper);
	// datapath=kmod: regions live in the fastpath module (see kmod.hpp).
	void set_kmod(std::unique_ptr<KmodRegions> kmod) { kmod_ = std::move(kmod); }
	bool restarted() const { return restarted_; }
	const Options &options() const { return options_; }
	// Frees every region's memory: the mount is going away.
	void destroy_all();

	// FUSE operations.
	void lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
	void getattr(fuse_req_t req, fuse_ino_t ino);
	// Region facts as read-only extended attributes (user.mshare.*).
	void getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
	void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
	void setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set);
	void mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
	void mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
	void unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
	void rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
	void rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		    const char *newname, unsigned flags);
	void create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		    fuse_file_info *fi);
	void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi);
	void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi);
	void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info *fi);
	void write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		   fuse_file_info *fi);
	void fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info *fi);
	void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info *fi);
	void statfs(fuse_req_t req, fuse_ino_t ino);
	void fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		       fuse_file_info *fi);
	void ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg, fuse_file_info *fi,
		   unsigned flags, const void *in_buf, size_t in_bufsz, size_t out_bufsz);
	void init(fuse_conn_info *conn);

	// The custom /dev/fuse I/O: journal, INIT capture and replay.
	ssize_t device_read(int fd, void *buf, size_t len);
	ssize_t device_writev(int fd, iovec *iov, int count);

	struct IoctlCall;
	int ioctl_get_size(IoctlCall &call);
	int ioctl_set_size(IoctlCall &call);
	int ioctl_create_mapping(IoctlCall &call);
	int ioctl_unmap(IoctlCall &call);
	int ioctl_protect(IoctlCall &call);
	int ioctl_lock(IoctlCall &call);
	int ioctl_unlock(IoctlCall &call);
	int ioctl_set_owner(IoctlCall &call);
	int ioctl_runtime(IoctlCall &call);
	int check_object_access(const NodeRecord &node, uint64_t off, uint64_t size, uint32_t prot);

private:
	std::string name_key(uint64_t parent, std::string_view name) const;
	NodeRecord *child(uint64_t parent, std::string_view name);
	fuse_entry_param entry_of(const NodeRecord &node) const;
	struct stat attr_of(const NodeRecord &node) const;
	std::string info_text() const;
	int make_node(fuse_req_t req, uint64_t parent, const char *name, NodeKind kind, mode_t mode,
		      fuse_entry_param *entry);
	int size_region(NodeRecord &node, uint64_t start, uint64_t size);
	int sizing_by_owner(NodeRecord &node, const OwnerId &caller, uint64_t size);
	void drop_name(NodeRecord &node);
	void destroy_region(NodeRecord &node);
	std::string object_file_name(uint64_t ino, uint64_t object_id) const;
	std::string region_attribute(uint64_t ino, const std::string &name, int *err);
	std::string region_attribute_locked(const NodeRecord &node, const std::string &name, int *err);
	const char *effective_data_path() const;
	std::string window_data_paths_locked(const NodeRecord &node);
	// stats.cpp: what the caller of req could open only. The registry is
	// read under registry_lock_ (shared, briefly: a snapshot), the figures
	// are computed outside it, one computation at a time (stats_lock_).
	struct RegionSnapshot;
	std::string stats_attribute(fuse_req_t req, uint64_t ino, const std::string &name, int *err);
	RegionSnapshot snapshot_region_locked(const NodeRecord &node);
	RegionStats region_stats(const RegionSnapshot &snapshot);
	// The pids with a window of the region now (registry_lock_ held).
	std::vector<int32_t> attachers_locked(const NodeRecord &node);
	static std::string object_tag(uint64_t ino, uint64_t object_id);
	void forget_objects(uint64_t ino, const std::vector<uint64_t> &object_ids);
	int map_file(IoctlCall &call, const MappingRequest &req, uint32_t fd, Mapping *m,
		     std::vector<Mapping> *before);
	int add_mapping(IoctlCall &call, MappingRequest req, uint32_t fd);
	// all_or_nothing: fails (EBUSY, ETIMEDOUT) with the layout as it was
	// when an attacher cannot follow the change (see commit_to_attachers);
	// the owner's exit removes the range whatever the attachers do.
	int remove_range(uint64_t ino, uint64_t off, uint64_t size, bool all_or_nothing = true);
	// datapath=uffd: a layout change (`before` -> `after`, already in the
	// registry) reaches every attacher, or is taken back: 0, or EBUSY /
	// ETIMEDOUT with the change undone for everyone (*undone false if a
	// concurrent change left nothing to undo).
	struct LayoutChange {
		std::vector<Mapping> before, after;
		std::function<bool(Layout &)> undo; // on a layout that is no longer `after`
	};
	int commit_to_attachers(uint64_t ino, const LayoutChange &change, bool *undone = nullptr);
	// EBUSY if an attacher of ino is stopped (a change could not reach it).
	int refuse_if_attacher_stopped(uint64_t ino);
	void undo_protection(uint64_t ino, uint64_t off, uint64_t size, const std::vector<Mapping> &before,
			     const std::vector<Mapping> &after);
	int punch_range(uint64_t ino, uint64_t off, uint64_t size); // advice.cpp
	void invalidate(uint64_t ino, uint64_t off, uint64_t len);
	void set_kernel_size(uint64_t ino, uint64_t size);
	int kmod_create(NodeRecord &node, pid_t owner);

	// datapath=uffd: the runtime service and the region's published layout.
	void start_runtime_service();
	void start_module_file_service();
	std::unique_ptr<RuntimeService> start_runtime_socket(RuntimeService::Hooks hooks, bool lend_uffd);
	bool kmod_passthrough() const;
	std::string kmod_window_paths(uint64_t ino);
	// 0 or errno; a no-op without the service. With `mappings`, publishes
	// those instead of the registry's (a layout about to be committed).
	int publish_region(uint64_t ino, const std::vector<Mapping> *mappings = nullptr, FillingRange filling = {});
	// datapath=uffd: moves the huge pages that UNMAP or PROTECT of
	// [off, off+size) would cut to 4 KiB memory (see demote_huge_page).
	int split_huge_pages(uint64_t ino, uint64_t off, uint64_t size);
	int demote_huge_page(uint64_t ino, uint64_t edge);
	int runtime_object_fd(uint64_t ino, uint64_t object_id, UniqueFd *fd);
	int set_lock_holder(IoctlCall &call, bool lock);
	void kmod_patch_reply(iovec *iov, int count);

	// Work that must run outside the request that caused it (it waits on
	// the kernel, which may wait on this daemon): a single worker thread.
	void defer(std::function<void()> work);
	void deferred_work_loop();

	// Owner watch: one pidfd per owner process, whatever the number of its
	// regions.
	void watch_owner(const NodeRecord &node);
	void unwatch_owner(uint64_t ino); // caller holds owner_lock_
	int release_owner(uint64_t ino);
	void add_owner_watch(uint64_t ino, pid_t pid, uint64_t start_time, UniqueFd pidfd); // owner_lock_ held
	void owner_watch_loop();
	void orphan_region(uint64_t ino);
	// ownership.cpp
	int transfer_owner(uint64_t ino, pid_t caller, const struct mshare_owner &arg);
	void follow_owner(uint64_t ino, pid_t pid, uint64_t start_time, UniqueFd pidfd);

	Options options_;
	std::shared_mutex registry_lock_;
	std::unique_ptr<Registry> registry_;	    // guarded by registry_lock_
	std::unordered_map<std::string, uint64_t> names_; // guarded by registry_lock_
	UidQuota region_quota_;				   // guarded by registry_lock_
	ObjectTable objects_;
	std::unique_ptr<BackingStore> store_;
	std::mutex demote_lock_; // one huge page demotion at a time
	std::mutex stats_lock_;	 // one statistics computation at a time
	std::unique_ptr<RequestJournal> journal_;
	std::unique_ptr<KmodRegions> kmod_; // datapath=kmod only
	std::unique_ptr<RuntimeService> runtime_; // datapath=uffd only
	// datapath=kmod without passthrough: the runtime socket, serving
	// module_file only.
	std::unique_ptr<RuntimeService> module_files_;
	uint64_t init_unique_ = 0;	    // the kernel's FUSE_INIT request
	std::mutex keeper_lock_;
	std::optional<KeeperClient> keeper_; // guarded by keeper_lock_
	fuse_session *se_ = nullptr;
	dev_t mount_dev_ = 0;
	bool restarted_ = false;
	uint64_t default_huge_page_size_ = 2 << 20;

	std::mutex replay_lock_;
	std::deque<std::vector<char>> replay_; // guarded by replay_lock_
	// False from a restart until libfuse has answered the replayed INIT.
	bool replayed_init_answered_ = true; // guarded by replay_lock_
	std::condition_variable replayed_init_done_;

	UniqueFd owner_epoll_;
	UniqueFd owner_wakeup_; // eventfd that stops the watch thread
	std::mutex owner_lock_;
	struct OwnerWatch {
		pid_t pid = 0;
		uint64_t start_time = 0;
		UniqueFd pidfd;
		std::set<uint64_t> regions;
	};
	uint64_t next_owner_watch_ = 1; // 0 is the wakeup eventfd in owner_epoll_
	std::unordered_map<uint64_t, OwnerWatch> owner_watches_; // watch id -> watch, guarded by owner_lock_
	std::map<std::pair<pid_t, uint64_t>, uint64_t> owner_watch_of_process_; // guarded by owner_lock_
	std::unordered_map<uint64_t, uint64_t> owner_watch_of_region_; // ino -> watch id, guarded by owner_lock_
	std::thread owner_thread_;

	std::mutex deferred_lock_;
	std::condition_variable deferred_ready_;
	std::deque<std::function<void()>> deferred_; // guarded by deferred_lock_
	bool stopping_ = false;			     // guarded by deferred_lock_
	std::thread deferred_thread_;
};

// Replies for a request re-read from the journal may find their change
// already made by the daemon that died; handlers then answer success.
bool replaying();

} // namespace msharefs
