#include "filesystem.hpp"

#include "ownership.hpp"
#include "process.hpp"

#include <linux/falloc.h>
#include <linux/fuse.h>
#include <linux/limits.h>
#include <linux/msharefs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace msharefs {

namespace {

constexpr double kAttrTimeout = 1.0;
constexpr double kEntryTimeout = 1.0;
// unique id of the FUSE_INIT a restarted daemon feeds itself; its reply is
// swallowed because the kernel finished INIT with the first daemon.
constexpr uint64_t kReplayedInitUnique = ~0ULL - 1;

thread_local bool tls_replaying = false;
// The backing file id an OPEN or CREATE reply of this thread must carry.
thread_local int tls_passthrough_id = 0;

uint32_t fh_access_mode(const fuse_file_info *fi) { return static_cast<uint32_t>(fi->fh) & O_ACCMODE; }

bool fh_writable(const fuse_file_info *fi)
{
	const uint32_t mode = fh_access_mode(fi);
	return mode == O_WRONLY || mode == O_RDWR;
}

} // namespace

bool replaying() { return tls_replaying; }

Filesystem::Filesystem(Options options, std::unique_ptr<Registry> registry,
		       std::unique_ptr<RequestJournal> journal, std::optional<KeeperClient> keeper,
		       bool restarted)
	: options_(std::move(options)), registry_(std::move(registry)), region_quota_(options_.max_regions_per_uid),
	  journal_(std::move(journal)), keeper_(std::move(keeper)), restarted_(restarted)
{
	default_huge_page_size_ = default_huge_page_size();
	store_ = std::make_unique<BackingStore>(options_.state_dir, options_.backing, options_.data_path == "uffd",
						options_.store_size);
	for (auto &[ino, node] : registry_->nodes()) {
		if (ino != kRootIno && !node.unlinked)
			names_[name_key(node.parent, std::string(node.name.begin(), node.name.end()))] = ino;
		if (node.kind == NodeKind::region)
			region_quota_.charge(node.uid);
	}
	owner_epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
	owner_wakeup_.reset(eventfd(0, EFD_CLOEXEC));
	epoll_event ev{};
	ev.events = EPOLLIN;
	ev.data.u64 = 0;
	epoll_ctl(owner_epoll_.get(), EPOLL_CTL_ADD, owner_wakeup_.get(), &ev);
}

Filesystem::~Filesystem()
{
	uint64_t one = 1;
	if (owner_thread_.joinable()) {
		(void)!::write(owner_wakeup_.get(), &one, sizeof(one));
		owner_thread_.join();
	}
	{
		std::lock_guard<std::mutex> guard(deferred_lock_);
		stopping_ = true;
	}
	deferred_ready_.notify_all();
	if (deferred_thread_.joinable())
		deferred_thread_.join();
}

void Filesystem::defer(std::function<void()> work)
{
	{
		std::lock_guard<std::mutex> guard(deferred_lock_);
		deferred_.push_back(std::move(work));
	}
	deferred_ready_.notify_one();
}

void Filesystem::deferred_work_loop()
{
	std::unique_lock<std::mutex> guard(deferred_lock_);
	for (;;) {
		deferred_ready_.wait(guard, [this] { return stopping_ || !deferred_.empty(); });
		if (stopping_)
			return;
		std::function<void()> work = std::move(deferred_.front());
		deferred_.pop_front();
		guard.unlock();
		work();
		guard.lock();
	}
}

void Filesystem::set_keeper(std::optional<KeeperClient> keeper)
{
	std::lock_guard<std::mutex> guard(keeper_lock_);
	keeper_ = std::move(keeper);
}

void Filesystem::attach(fuse_session *se, std::vector<std::pair<std::string, UniqueFd>> kept)
{
	se_ = se;
	std::map<std::string, UniqueFd> kept_files;
	for (auto &[tag, fd] : kept) {
		uint64_t ino = 0;
		int backing_id = 0;
		if (kmod_ && KmodRegions::parse_tag(tag, &ino, &backing_id))
			kmod_->adopt(ino, std::move(fd), backing_id);
		else
			kept_files[tag] = std::move(fd);
	}
	if (kmod_)
		kmod_->set_fuse_fd(fuse_session_fd(se));
	if (options_.data_path == "uffd")
		start_runtime_service();
	else if (kmod_ && !kmod_->passthrough())
		start_module_file_service();

	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	registry_->header().generation++;
	for (auto &[ino, node] : registry_->nodes()) {
		if (node.kind != NodeKind::region)
			continue;
		// On datapath=kmod the module holds every mapping's memory and files.
		if (!kmod_) {
			for (const Mapping &m : node.mappings) {
				ObjectTable::accessor acc;
				if (!objects_.insert(acc, ObjectKey{ino, m.object_id}))
					continue;
				if (!m.has_file) {
					acc->second = store_->open(object_file_name(ino, m.object_id), m.kind);
				} else {
					auto it = kept_files.find(object_tag(ino, m.object_id));
					if (it != kept_files.end())
						acc->second = std::make_shared<BackingObject>(std::move(it->second),
											      m.kind, "");
				}
				if (!acc->second) {
					fprintf(stderr, "msharefsd: region %lu lost the object of a mapping\n",
						static_cast<unsigned long>(ino));
					objects_.erase(acc);
				}
			}
		}
		if (!node.orphaned && node.owner_pid != 0) // 0: released
			watch_owner(node);
	}
	lock.unlock();

	if (restarted_) {
		std::lock_guard<std::mutex> guard(replay_lock_);
		const RegistryHeader &h = registry_->header();
		std::vector<char> init(h.init_request, h.init_request + h.init_request_len);
		if (init.size() >= sizeof(fuse_in_header)) {
			reinterpret_cast<fuse_in_header *>(init.data())->unique = kReplayedInitUnique;
			replay_.push_back(std::move(init));
			replayed_init_answered_ = false;
		}
		for (auto &r : journal_->take_unanswered())
			replay_.push_back(std::move(r));
	}
	deferred_thread_ = std::thread([this] { deferred_work_loop(); });
	owner_thread_ = std::thread([this] { owner_watch_loop(); });
}

// ---- /dev/fuse I/O ---------------------------------------------------------

ssize_t Filesystem::device_read(int fd, void *buf, size_t len)
{
	tls_replaying = false;
	{
		// After a restart, libfuse refuses (EIO) every request it sees
		// before it has processed the replayed INIT: the thread that takes
		// the INIT goes first, the others wait for its reply.
		std::unique_lock<std::mutex> guard(replay_lock_);
		const auto is_init = [](const std::vector<char> &r) {
			return r.size() >= sizeof(fuse_in_header) &&
			       reinterpret_cast<const fuse_in_header *>(r.data())->unique == kReplayedInitUnique;
		};
		if (replay_.empty() || !is_init(replay_.front()))
			replayed_init_done_.wait(guard, [this] { return replayed_init_answered_; });
		if (!replay_.empty()) {
			std::vector<char> r = std::move(replay_.front());
			replay_.pop_front();
			tls_replaying = true;
			return static_cast<ssize_t>(journal_->adopt(r, buf, len));
		}
	}
	ssize_t n = journal_->read_request(fd, buf, len);
	if (n >= static_cast<ssize_t>(sizeof(fuse_in_header))) {
		const auto *in = static_cast<const fuse_in_header *>(buf);
		if (in->opcode == FUSE_INIT) {
			init_unique_ = in->unique;
			std::unique_lock<std::shared_mutex> lock(registry_lock_);
			RegistryHeader &h = registry_->header();
			h.init_request_len = static_cast<uint32_t>(std::min<size_t>(n, sizeof(h.init_request)));
			std::memcpy(h.init_request, buf, h.init_request_len);
		}
	}
	return n;
}

ssize_t Filesystem::device_writev(int fd, iovec *iov, int count)
{
	size_t total = 0;
	for (int i = 0; i < count; i++)
		total += iov[i].iov_len;
	if (count > 0 && iov[0].iov_len >= sizeof(fuse_out_header)) {
		const auto *out = static_cast<const fuse_out_header *>(iov[0].iov_base);
		if (out->unique == kReplayedInitUnique) {
			{
				std::lock_guard<std::mutex> guard(replay_lock_);
				replayed_init_answered_ = true;
			}
			replayed_init_done_.notify_all();
			return static_cast<ssize_t>(total);
		}
		if (kmod_)
			kmod_patch_reply(iov, count);
		ssize_t n = ::writev(fd, iov, count);
		const int saved = errno;
		journal_->complete(out->unique);
		errno = saved;
		return n;
	}
	return ::writev(fd, iov, count);
}

// ---- helpers -----------------------------------------------------------------

std::string Filesystem::name_key(uint64_t parent, std::string_view name) const
{
	return std::to_string(parent) + '/' + std::string(name);
}

NodeRecord *Filesystem::child(uint64_t parent, std::string_view name)
{
	auto it = names_.find(name_key(parent, name));
	return it == names_.end() ? nullptr : registry_->find(it->second);
}

std::string Filesystem::info_text() const { return std::to_string(options_.alignment) + "\n"; }

struct stat Filesystem::attr_of(const NodeRecord &node) const
{
	struct stat st {};
	st.st_ino = node.ino;
	st.st_mode = node.mode;
	st.st_uid = node.uid;
	st.st_gid = node.gid;
	st.st_blksize = kPageSize;
	st.st_ctim.tv_sec = node.ctime_sec;
	st.st_mtim.tv_sec = node.mtime_sec;
	st.st_atim.tv_sec = node.mtime_sec;
	switch (node.kind) {
	case NodeKind::directory:
		st.st_nlink = 2;
		break;
	case NodeKind::info:
		st.st_nlink = 1;
		st.st_size = static_cast<off_t>(info_text().size());
		break;
	case NodeKind::region: {
		st.st_nlink = node.unlinked ? 0 : 1;
		st.st_size = static_cast<off_t>(node.geometry.size);
		uint64_t mapped = 0;
		for (const auto &m : node.mappings)
			mapped += m.size;
		st.st_blocks = static_cast<blkcnt_t>(mapped / 512);
		break;
	}
	}
	return st;
}

fuse_entry_param Filesystem::entry_of(const NodeRecord &node) const
{
	fuse_entry_param e{};
	e.ino = node.ino;
	e.generation = 1;
	e.attr = attr_of(node);
	e.attr_timeout = kAttrTimeout;
	e.entry_timeout = kEntryTimeout;
	return e;
}

std::string Filesystem::object_file_name(uint64_t ino, uint64_t object_id) const
{
	return object_tag(ino, object_id);
}

std::string Filesystem::object_tag(uint64_t ino, uint64_t object_id)
{
	return "obj." + std::to_string(ino) + "." + std::to_string(object_id);
}

// Drops the kernel's cached pages of a range. On datapath=kmod with
// passthrough region files have no page cache of their own: nothing to do.
void Filesystem::invalidate(uint64_t ino, uint64_t off, uint64_t len)
{
	if (se_ && !kmod_passthrough())
		fuse_lowlevel_notify_inval_inode(se_, ino, static_cast<off_t>(off), static_cast<off_t>(len));
}

void Filesystem::set_kernel_size(uint64_t ino, uint64_t size)
{
	// The kernel takes i_size from a store that ends past it (a store of
	// nothing is ignored). One byte at the end leaves the last page in the
	// cache but not up to date, so the first fault there still reads it
	// from the region's layout.
	if (!se_ || size == 0)
		return;
	char zero = 0;
	fuse_bufvec one = FUSE_BUFVEC_INIT(1);
	one.buf[0].mem = &zero;
	fuse_lowlevel_notify_store(se_, ino, static_cast<off_t>(size - 1), &one, FUSE_BUF_SPLICE_NONBLOCK);
}

// ---- namespace ---------------------------------------------------------------

void Filesystem::init(fuse_conn_info *conn)
{
	// Requests must come through device_read(): no splice.
	conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
	// Cached pages of a region are dropped only when its layout changes.
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	// O_TRUNC arrives as a size change, which sizing rules answer.
	conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

void Filesystem::lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = child(parent, name);
	if (!node) {
		fuse_entry_param e{};
		e.entry_timeout = 0;
		lock.unlock();
		fuse_reply_entry(req, &e); // negative entry, not cached
		return;
	}
	fuse_entry_param e = entry_of(*node);
	lock.unlock();
	fuse_reply_entry(req, &e);
}

void Filesystem::getattr(fuse_req_t req, fuse_ino_t ino)
{
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = registry_->find(ino);
	if (!node) {
		lock.unlock();
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct stat st = attr_of(*node);
	lock.unlock();
	fuse_reply_attr(req, &st, kAttrTimeout);
}

namespace {

constexpr const char *kRegionAttributes[] = {"user.mshare.datapath", "user.mshare.backing"};

void reply_attribute(fuse_req_t req, const std::string &value, size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, value.size());
	else if (size < value.size())
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value.data(), value.size());
}

} // namespace

// user.mshare.datapath: how windows reach the data; user.mshare.backing:
// the memory of the region's anonymous mappings (hugetlb, thp, 4k; several
// joined by '+' in layout order, "none" without any). user.mshare.stats and,
// on the root, user.mshare.unlinked: see stats.cpp.
std::string Filesystem::region_attribute(uint64_t ino, const std::string &name, int *err)
{
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = registry_->find(ino);
	if (!node) {
		*err = ENOENT;
		return {};
	}
	return region_attribute_locked(*node, name, err);
}

std::string Filesystem::region_attribute_locked(const NodeRecord &node, const std::string &name, int *err)
{
	if (node.ino == kRootIno && name == kRegionAttributes[0])
		return effective_data_path();
	if (node.kind != NodeKind::region) {
		*err = ENODATA;
		return {};
	}
	if (name == kRegionAttributes[0])
		return window_data_paths_locked(node);
	if (name != kRegionAttributes[1]) {
		*err = ENODATA;
		return {};
	}
	std::string value;
	const char *last = nullptr;
	for (const Mapping &m : node.mappings) {
		if (m.has_file)
			continue;
		const char *b = backing_name(Backing::small);
		ObjectTable::const_accessor acc;
		if (!kmod_ && objects_.find(acc, ObjectKey{node.ino, m.object_id}) && acc->second)
			b = backing_name(acc->second->backing());
		else if (kmod_ && m.kind == ObjectKind::hugetlb &&
			 (m.has_file || kmod_->huge_backed(node.ino, m.region_offset)))
			b = backing_name(Backing::hugetlb);
		if (last != b)
			value.append(last ? "+" : "").append(b);
		last = b;
	}
	return last ? value : "none";
}

// kmod, uffd (the runtime's socket is up) or pagecache.
const char *Filesystem::effective_data_path() const
{
	return kmod_ ? "kmod" : runtime_ ? "uffd" : "pagecache";
}

// The region's data path, then on datapath=uffd each window as PID=uffd
// (composed by the runtime) or PID=pagecache (a program without it); on
// datapath=kmod without passthrough PID=kmod (a window of the module's
// file) or PID=pagecache (of the FUSE file).
std::string Filesystem::window_data_paths_locked(const NodeRecord &node)
{
	std::string value = effective_data_path();
	if (kmod_ && !kmod_->passthrough())
		return value + kmod_window_paths(node.ino);
	if (kmod_ || !runtime_)
		return value;
	const std::vector<int32_t> runtime = runtime_->attacher_pids(node.ino);
	for (int32_t pid : attachers_locked(node)) {
		const bool composed = std::find(runtime.begin(), runtime.end(), pid) != runtime.end();
		value += " " + std::to_string(pid) + (composed ? "=uffd" : "=pagecache");
	}
	return value;
}

void Filesystem::getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	int err = 0;
	const bool stats = !strcmp(name, kStatsAttribute) || !strcmp(name, kUnlinkedAttribute);
	const std::string value = stats ? stats_attribute(req, ino, name, &err) : region_attribute(ino, name, &err);
	if (err)
		fuse_reply_err(req, err);
	else if (value.size() > XATTR_SIZE_MAX)
		fuse_reply_err(req, E2BIG);
	else
		reply_attribute(req, value, size);
}

void Filesystem::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	int err = 0;
	region_attribute(ino, kRegionAttributes[1], &err); // ENODATA unless a region
	std::string names;
	if (!err) {
		for (const char *n : kRegionAttributes)
			names.append(n).push_back('\0');
		names.append(kStatsAttribute).push_back('\0');
	} else if (ino == kRootIno) {
		names.append(kRegionAttributes[0]).push_back('\0');
		names.append(kUnlinkedAttribute).push_back('\0');
	}
	if (err && err != ENODATA)
		fuse_reply_err(req, err);
	else
		reply_attribute(req, names, size);
}

int Filesystem::size_region(NodeRecord &node, uint64_t start, uint64_t size)
{
	if (node.kind != NodeKind::region)
		return node.kind == NodeKind::directory ? EISDIR : EPERM;
	if (node.geometry.sized && node.geometry.size == size && (replaying() || size == 0))
		return 0;
	if (node.orphaned)
		return EINVAL;
	if (int err = validate_sizing(node.geometry, start, size, options_.alignment))
		return err;
	if (kmod_) {
		if (int err = kmod_->set_size(node.ino, size))
			return err == EBUSY ? EINVAL : err;
	}
	node.geometry = Geometry{start, size, true};
	node.mtime_sec = ::time(nullptr);
	if (runtime_)
		runtime_->publish(node.ino, size, {}, 0, 0);
	return 0;
}

// ftruncate and fallocate: only the owner sizes a region [EPERM].
int Filesystem::sizing_by_owner(NodeRecord &node, const OwnerId &caller, uint64_t size)
{
	if (node.kind == NodeKind::region && !node.orphaned && !is_owner(node, caller))
		return EPERM;
	return size_region(node, 0, size);
}

void Filesystem::setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set)
{
	const OwnerId caller = to_set & FUSE_SET_ATTR_SIZE ? process_of(fuse_req_ctx(req)->pid) : OwnerId{};
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	if (!registry_->ensure_space()) {
		lock.unlock();
		fuse_reply_err(req, ENOSPC);
		return;
	}
	NodeRecord *node = registry_->find(ino);
	if (!node) {
		lock.unlock();
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (node->kind == NodeKind::info && (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
						       FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		lock.unlock();
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		// Truncating an unsized region to nothing (O_TRUNC) changes nothing.
		const bool no_op = !node->geometry.sized && attr->st_size == 0 && node->kind == NodeKind::region;
		if (int err = no_op ? 0 : sizing_by_owner(*node, caller, static_cast<uint64_t>(attr->st_size))) {
			lock.unlock();
			fuse_reply_err(req, err);
			return;
		}
	}
	if (to_set & FUSE_SET_ATTR_MODE)
		node->mode = (node->mode & S_IFMT) | (attr->st_mode & 07777);
	if ((to_set & FUSE_SET_ATTR_UID) && node->kind == NodeKind::region && node->uid != attr->st_uid) {
		region_quota_.release(node->uid); // a region counts for the uid that holds it
		region_quota_.charge(attr->st_uid);
	}
	if (to_set & FUSE_SET_ATTR_UID)
		node->uid = attr->st_uid;
	if (to_set & FUSE_SET_ATTR_GID)
		node->gid = attr->st_gid;
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
		node->mtime_sec = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? ::time(nullptr) : attr->st_mtim.tv_sec;
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		node->ctime_sec = ::time(nullptr);
	struct stat st = attr_of(*node);
	lock.unlock();
	fuse_reply_attr(req, &st, kAttrTimeout);
}

int Filesystem::make_node(fuse_req_t req, uint64_t parent, const char *name, NodeKind kind,
			  mode_t mode, fuse_entry_param *entry)
{
	const fuse_ctx *ctx = fuse_req_ctx(req);
	NodeRecord *dir = registry_->find(parent);
	if (!dir || dir->unlinked)
		return ENOENT;
	if (dir->kind != NodeKind::directory)
		return ENOTDIR;
	if (std::strlen(name) > 255)
		return ENAMETOOLONG;
	if (NodeRecord *existing = child(parent, name)) {
		// A create replayed after the first daemon made the node.
		if (replaying() && existing->kind == kind && existing->uid == ctx->uid) {
			*entry = entry_of(*existing);
			return 0;
		}
		return EEXIST;
	}
	if (kind == NodeKind::region && !region_quota_.admits(ctx->uid))
		return EDQUOT; // -o max_regions_per_uid
	const uint32_t type = kind == NodeKind::directory ? S_IFDIR : S_IFREG;
	NodeRecord &node = registry_->add(parent, name, kind, type | (mode & 07777 & ~ctx->umask),
					  ctx->uid, ctx->gid);
	if (dir->mode & S_ISGID) {
		node.gid = dir->gid;
		if (kind == NodeKind::directory)
			node.mode |= S_ISGID;
	}
	if (kind == NodeKind::region && kmod_) {
		if (int err = kmod_create(node, thread_group_of(ctx->pid))) {
			registry_->erase(node.ino);
			return err;
		}
	}
	if (kind == NodeKind::region) {
		region_quota_.charge(node.uid);
		node.owner_pid = thread_group_of(ctx->pid);
		node.owner_start_time = process_start_time(node.owner_pid);
		watch_owner(node);
	}
	names_[name_key(parent, name)] = node.ino;
	*entry = entry_of(node);
	return 0;
}

void Filesystem::mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM); // only regions and directories live here
		return;
	}
	fuse_entry_param e{};
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	int err = registry_->ensure_space() ? make_node(req, parent, name, NodeKind::region, mode, &e) : ENOSPC;
	lock.unlock();
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_entry(req, &e);
}

void Filesystem::mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	fuse_entry_param e{};
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	int err = registry_->ensure_space() ? make_node(req, parent, name, NodeKind::directory, mode, &e) : ENOSPC;
	lock.unlock();
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_entry(req, &e);
}

void Filesystem::create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			fuse_file_info *fi)
{
	fuse_entry_param e{};
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	int err = registry_->ensure_space() ? make_node(req, parent, name, NodeKind::region, mode, &e) : ENOSPC;
	if (!err) {
		NodeRecord *node = registry_->find(e.ino);
		node->open_count++;
	}
	lock.unlock();
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = static_cast<uint64_t>(fi->flags & O_ACCMODE);
	fi->keep_cache = !kmod_passthrough();
	fi->direct_io = 0;
	tls_passthrough_id = kmod_ ? kmod_->backing_id(e.ino) : 0;
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		// The caller was interrupted: it will never release this open.
		std::unique_lock<std::shared_mutex> relock(registry_lock_);
		if (NodeRecord *node = registry_->find(e.ino))
			node->open_count--;
	}
}

void Filesystem::drop_name(NodeRecord &node)
{
	names_.erase(name_key(node.parent, std::string(node.name.begin(), node.name.end())));
}

void Filesystem::unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = child(parent, name);
	int err = 0;
	if (!node)
		err = replaying() ? 0 : ENOENT;
	else if (node->kind == NodeKind::info)
		err = EPERM;
	else if (node->kind == NodeKind::directory)
		err = EISDIR;
	if (!err && node) {
		drop_name(*node);
		node->unlinked = true;
		if (node->open_count == 0)
			destroy_region(*node);
	}
	lock.unlock();
	fuse_reply_err(req, err);
}

void Filesystem::rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = child(parent, name);
	int err = 0;
	if (!node)
		err = replaying() ? 0 : ENOENT;
	else if (node->kind != NodeKind::directory)
		err = ENOTDIR;
	else if (std::any_of(registry_->nodes().begin(), registry_->nodes().end(),
			     [&](const auto &kv) { return kv.second.parent == node->ino && !kv.second.unlinked; }))
		err = ENOTEMPTY;
	if (!err && node) {
		drop_name(*node);
		registry_->erase(node->ino);
	}
	lock.unlock();
	fuse_reply_err(req, err);
}

void Filesystem::rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
			const char *newname, unsigned flags)
{
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	auto answer = [&](int err) {
		lock.unlock();
		fuse_reply_err(req, err);
	};
	if (!registry_->ensure_space())
		return answer(ENOSPC);
	if (flags & ~RENAME_NOREPLACE)
		return answer(EINVAL); // RENAME_EXCHANGE and whiteouts are not supported
	NodeRecord *node = child(parent, name);
	NodeRecord *target = child(newparent, newname);
	NodeRecord *dest_dir = registry_->find(newparent);
	if (!node)
		return answer(replaying() && target ? 0 : ENOENT);
	if (!dest_dir || dest_dir->kind != NodeKind::directory)
		return answer(ENOTDIR);
	if (node->kind == NodeKind::info || (target && target->kind == NodeKind::info))
		return answer(EPERM);
	if (std::strlen(newname) > 255)
		return answer(ENAMETOOLONG);
	if (target == node)
		return answer(0);
	if (target) {
		if (flags & RENAME_NOREPLACE)
			return answer(EEXIST);
		if (target->kind == NodeKind::directory) {
			if (node->kind != NodeKind::directory)
				return answer(EISDIR);
			if (std::any_of(registry_->nodes().begin(), registry_->nodes().end(),
					[&](const auto &kv) { return kv.second.parent == target->ino && !kv.second.unlinked; }))
				return answer(ENOTEMPTY);
			drop_name(*target);
			registry_->erase(target->ino);
			node = child(parent, name);
		} else {
			if (node->kind == NodeKind::directory)
				return answer(ENOTDIR);
			drop_name(*target);
			target->unlinked = true;
			if (target->open_count == 0)
				destroy_region(*target);
		}
	}
	drop_name(*node);
	node->parent = newparent;
	node->name.assign(newname, newname + std::strlen(newname));
	node->ctime_sec = ::time(nullptr);
	names_[name_key(newparent, newname)] = node->ino;
	answer(0);
}

void Filesystem::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi)
{
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = registry_->find(ino);
	const NodeKind kind = node ? node->kind : NodeKind::region;
	int err = 0;
	if (!node)
		err = ENOENT;
	else if (node->kind == NodeKind::directory)
		err = EISDIR;
	else if (node->kind == NodeKind::info && (fi->flags & O_ACCMODE) != O_RDONLY)
		err = EACCES; // read-only even for root
	else if (node->kind == NodeKind::region)
		node->open_count++;
	lock.unlock();
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = static_cast<uint64_t>(fi->flags & O_ACCMODE);
	fi->keep_cache = !(kmod_passthrough() && kind == NodeKind::region);
	fi->direct_io = kind == NodeKind::info;
	tls_passthrough_id = kmod_ && kind == NodeKind::region ? kmod_->backing_id(ino) : 0;
	if (fuse_reply_open(req, fi) == -ENOENT && kind == NodeKind::region) {
		std::unique_lock<std::shared_mutex> relock(registry_lock_);
		if (NodeRecord *n = registry_->find(ino))
			n->open_count--;
	}
}

void Filesystem::release(fuse_req_t req, fuse_ino_t ino, fuse_file_info *)
{
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = registry_->find(ino);
	if (node && node->kind == NodeKind::region && node->open_count > 0) {
		node->open_count--;
		if (node->unlinked && node->open_count == 0)
			destroy_region(*node);
	}
	lock.unlock();
	fuse_reply_err(req, 0);
}

void Filesystem::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info *)
{
	std::vector<char> buf(size);
	size_t used = 0;
	auto add = [&](const char *name, const struct stat &st, off_t next) {
		size_t n = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, next);
		if (n > size - used)
			return false;
		used += n;
		return true;
	};
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *dir = registry_->find(ino);
	if (!dir || dir->kind != NodeKind::directory) {
		lock.unlock();
		fuse_reply_err(req, dir ? ENOTDIR : ENOENT);
		return;
	}
	// Offsets: 1 after ".", 2 after "..", ino + 2 after a child: stable
	// while entries come and go.
	struct stat st {};
	st.st_mode = S_IFDIR;
	st.st_ino = ino;
	bool room = true;
	if (off < 1)
		room = add(".", st, 1);
	if (room && off < 2) {
		st.st_ino = dir->parent ? dir->parent : ino;
		room = add("..", st, 2);
	}
	for (auto it = registry_->nodes().begin(); room && it != registry_->nodes().end(); ++it) {
		const NodeRecord &n = it->second;
		if (n.parent != ino || n.unlinked || n.ino == kRootIno ||
		    static_cast<off_t>(n.ino + 2) <= off)
			continue;
		struct stat cst {};
		cst.st_ino = n.ino;
		cst.st_mode = n.mode;
		room = add(std::string(n.name.begin(), n.name.end()).c_str(), cst,
			   static_cast<off_t>(n.ino + 2));
	}
	lock.unlock();
	fuse_reply_buf(req, buf.data(), used);
}

void Filesystem::statfs(fuse_req_t req, fuse_ino_t)
{
	struct statvfs st {};
	st.f_bsize = kPageSize;
	st.f_frsize = kPageSize;
	st.f_namemax = 255;
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	st.f_files = registry_->nodes().size();
	lock.unlock();
	fuse_reply_statfs(req, &st);
}

// ---- regions -----------------------------------------------------------------

void Filesystem::forget_objects(uint64_t ino, const std::vector<uint64_t> &object_ids)
{
	for (uint64_t id : object_ids) {
		std::shared_ptr<BackingObject> obj;
		{
			ObjectTable::accessor acc;
			if (!objects_.find(acc, ObjectKey{ino, id}))
				continue;
			obj = std::move(acc->second);
			objects_.erase(acc);
		}
		if (obj && obj->is_memory()) {
			obj->destroy();
		} else if (obj) {
			std::lock_guard<std::mutex> guard(keeper_lock_);
			if (keeper_)
				keeper_->drop(object_tag(ino, id));
		}
	}
}

// Caller holds registry_lock_ exclusively.
void Filesystem::destroy_region(NodeRecord &node)
{
	const uint64_t ino = node.ino;
	std::vector<uint64_t> ids;
	for (const Mapping &m : node.mappings)
		if (std::find(ids.begin(), ids.end(), m.object_id) == ids.end())
			ids.push_back(m.object_id);
	forget_objects(ino, ids);
	if (kmod_) {
		std::lock_guard<std::mutex> guard(keeper_lock_);
		if (keeper_)
			keeper_->drop(KmodRegions::tag(ino, kmod_->backing_id(ino)));
		kmod_->destroy(ino);
	}
	{
		std::lock_guard<std::mutex> guard(owner_lock_);
		unwatch_owner(ino);
	}
	if (runtime_)
		runtime_->forget_region(ino);
	region_quota_.release(node.uid);
	registry_->erase(ino);
}

void Filesystem::destroy_all()
{
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	std::vector<uint64_t> regions;
	for (auto &[ino, node] : registry_->nodes())
		if (node.kind == NodeKind::region)
			regions.push_back(ino);
	for (uint64_t ino : regions)
		destroy_region(*registry_->find(ino));
}

void Filesystem::fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			   fuse_file_info *fi)
{
	if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
		fuse_reply_err(req, fh_writable(fi) ? punch_range(ino, static_cast<uint64_t>(offset),
								 static_cast<uint64_t>(length))
						    : EBADF);
		return;
	}
	if (mode != 0) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (!fh_writable(fi)) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (offset != 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	const OwnerId caller = process_of(fuse_req_ctx(req)->pid);
	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = registry_->find(ino);
	int err = node ? sizing_by_owner(*node, caller, static_cast<uint64_t>(length)) : ENOENT;
	lock.unlock();
	fuse_reply_err(req, err);
}

// ---- the compat data path ----------------------------------------------------

namespace {

struct IoSlice {
	std::shared_ptr<BackingObject> object;
	uint64_t object_offset;
	uint64_t buffer_offset;
	uint64_t size;
};

} // namespace

void Filesystem::read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info *)
{
	std::vector<IoSlice> slices;
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = registry_->find(ino);
	if (!node) {
		lock.unlock();
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (node->kind == NodeKind::info) {
		std::string text = info_text();
		lock.unlock();
		const size_t start = std::min<size_t>(static_cast<size_t>(off), text.size());
		fuse_reply_buf(req, text.data() + start, std::min(size, text.size() - start));
		return;
	}
	const uint64_t region_size = node->geometry.size;
	if (static_cast<uint64_t>(off) >= region_size) {
		lock.unlock();
		fuse_reply_buf(req, nullptr, 0);
		return;
	}
	size = std::min<uint64_t>(size, region_size - static_cast<uint64_t>(off));
	Layout layout(std::vector<Mapping>(node->mappings.begin(), node->mappings.end()));
	int err = 0;
	for (const Piece &p : layout.pieces(static_cast<uint64_t>(off), size)) {
		// A hole, or a mapping without PROT_READ: the faulting process
		// gets SIGBUS.
		if (!p.mapping || !(p.mapping->prot & (PROT_READ | PROT_WRITE | PROT_EXEC))) {
			err = EIO;
			break;
		}
		if (kmod_)
			continue; // region memory, read below
		ObjectTable::const_accessor acc;
		if (!objects_.find(acc, ObjectKey{ino, p.mapping->object_id})) {
			err = EIO;
			break;
		}
		slices.push_back({acc->second, p.object_offset(), p.region_offset - static_cast<uint64_t>(off),
				  p.size});
	}
	std::vector<char> buf(err ? 0 : size);
	// Region memory is read under the lock: no layout change meanwhile.
	if (!err && kmod_)
		err = kmod_->read_region(ino, static_cast<uint64_t>(off), buf.data(), size);
	lock.unlock();
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	for (const IoSlice &s : slices) {
		if ((err = s.object->read(buf.data() + s.buffer_offset, s.size, s.object_offset))) {
			fuse_reply_err(req, err);
			return;
		}
	}
	fuse_reply_buf(req, buf.data(), size);
}

void Filesystem::write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		       fuse_file_info *)
{
	std::vector<IoSlice> slices;
	std::vector<std::pair<uint64_t, uint64_t>> refused; // region offset, size
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = registry_->find(ino);
	int err = 0;
	if (!node)
		err = ENOENT;
	else if (node->kind != NodeKind::region)
		err = EBADF;
	else if (static_cast<uint64_t>(off) >= node->geometry.size ||
		 size > node->geometry.size - static_cast<uint64_t>(off))
		err = EFBIG;
	if (!err) {
		Layout layout(std::vector<Mapping>(node->mappings.begin(), node->mappings.end()));
		for (const Piece &p : layout.pieces(static_cast<uint64_t>(off), size)) {
			ObjectTable::const_accessor acc;
			// Stores to a hole or to a mapping without PROT_WRITE are
			// not kept (the compat path cannot refuse them earlier).
			if (!p.mapping || !(p.mapping->prot & PROT_WRITE) ||
			    (!kmod_ && !objects_.find(acc, ObjectKey{ino, p.mapping->object_id}))) {
				refused.emplace_back(p.region_offset, p.size);
				continue;
			}
			// Region memory is written under the lock (no layout
			// change meanwhile); a store the module refuses there (a
			// LOCK held by another process) is refused as above.
			const char *from = buf + (p.region_offset - static_cast<uint64_t>(off));
			if (kmod_ && kmod_->write_region(ino, p.region_offset, from, p.size) != 0)
				refused.emplace_back(p.region_offset, p.size);
			else if (!kmod_)
				slices.push_back({acc->second, p.object_offset(),
						  p.region_offset - static_cast<uint64_t>(off), p.size});
		}
	}
	lock.unlock();
	for (const IoSlice &s : slices) {
		if (err)
			break;
		err = s.object->write(buf + s.buffer_offset, s.size, s.object_offset);
	}
	if (!err && !refused.empty()) {
		// The refused bytes still sit in the page cache, where every
		// attacher sees them: drop those pages once this writeback is
		// over, so the next access reads what the mapping really holds.
		err = EIO;
		defer([this, ino, refused = std::move(refused)] {
			for (auto [at, len] : refused)
				invalidate(ino, at, len);
		});
	}
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_write(req, size);
}

void Filesystem::fsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info *)
{
	std::vector<std::shared_ptr<BackingObject>> objects;
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	if (NodeRecord *node = registry_->find(ino))
		for (const Mapping &m : node->mappings) {
			ObjectTable::const_accessor acc;
			if (objects_.find(acc, ObjectKey{ino, m.object_id}))
				objects.push_back(acc->second);
		}
	lock.unlock();
	int err = kmod_ ? kmod_->sync(ino) : 0;
	for (const auto &o : objects)
		if (int e = o->sync())
			err = e;
	fuse_reply_err(req, err);
}

// ---- owners ------------------------------------------------------------------

// Caller holds registry_lock_. Regions of one owner process share its pidfd.
void Filesystem::watch_owner(const NodeRecord &node)
{
	std::lock_guard<std::mutex> guard(owner_lock_);
	const auto process = std::make_pair(static_cast<pid_t>(node.owner_pid), node.owner_start_time);
	if (auto it = owner_watch_of_process_.find(process); it != owner_watch_of_process_.end()) {
		owner_watches_[it->second].regions.insert(node.ino);
		owner_watch_of_region_[node.ino] = it->second;
		return;
	}
	UniqueFd pidfd(pidfd_of(node.owner_pid, node.owner_start_time));
	if (!pidfd) {
		// The owner is already gone (it exited while no daemon ran).
		defer([this, ino = node.ino] { orphan_region(ino); });
		return;
	}
	add_owner_watch(node.ino, process.first, process.second, std::move(pidfd));
}

// Watches the process (pid, start_time) of pidfd for region ino; a process
// already watched keeps its one pidfd. Caller holds owner_lock_.
void Filesystem::add_owner_watch(uint64_t ino, pid_t pid, uint64_t start_time, UniqueFd pidfd)
{
	const auto process = std::make_pair(pid, start_time);
	if (auto it = owner_watch_of_process_.find(process); it != owner_watch_of_process_.end()) {
		owner_watches_[it->second].regions.insert(ino);
		owner_watch_of_region_[ino] = it->second;
		return;
	}
	const uint64_t id = next_owner_watch_++;
	epoll_event ev{};
	ev.events = EPOLLIN;
	ev.data.u64 = id;
	epoll_ctl(owner_epoll_.get(), EPOLL_CTL_ADD, pidfd.get(), &ev);
	OwnerWatch &watch = owner_watches_[id];
	watch.pid = pid;
	watch.start_time = start_time;
	watch.pidfd = std::move(pidfd);
	watch.regions.insert(ino);
	owner_watch_of_process_[process] = id;
	owner_watch_of_region_[ino] = id;
}

// The region no longer needs its owner watched; the owner's pidfd goes with
// its last region. Caller holds owner_lock_.
void Filesystem::unwatch_owner(uint64_t ino)
{
	auto of_region = owner_watch_of_region_.find(ino);
	if (of_region == owner_watch_of_region_.end())
		return;
	auto it = owner_watches_.find(of_region->second);
	owner_watch_of_region_.erase(of_region);
	if (it == owner_watches_.end())
		return;
	it->second.regions.erase(ino);
	if (!it->second.regions.empty())
		return;
	epoll_ctl(owner_epoll_.get(), EPOLL_CTL_DEL, it->second.pidfd.get(), nullptr);
	owner_watch_of_process_.erase(std::make_pair(it->second.pid, it->second.start_time));
	owner_watches_.erase(it);
}

void Filesystem::owner_watch_loop()
{
	for (;;) {
		epoll_event events[16];
		int n = epoll_wait(owner_epoll_.get(), events, 16, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return;
		for (int i = 0; i < n; i++) {
			if (events[i].data.u64 == 0)
				return; // shutting down
			std::set<uint64_t> regions;
			{
				std::lock_guard<std::mutex> guard(owner_lock_);
				auto it = owner_watches_.find(events[i].data.u64);
				if (it == owner_watches_.end() || !owner_has_exited(it->second.pidfd.get()))
					continue;
				epoll_ctl(owner_epoll_.get(), EPOLL_CTL_DEL, it->second.pidfd.get(), nullptr);
				regions = std::move(it->second.regions);
				for (uint64_t ino : regions)
					owner_watch_of_region_.erase(ino);
				owner_watch_of_process_.erase(std::make_pair(it->second.pid, it->second.start_time));
				owner_watches_.erase(it);
			}
			for (uint64_t ino : regions)
				orphan_region(ino);
		}
	}
}

// The owner exited: every mapping goes, for every attacher.
void Filesystem::orphan_region(uint64_t ino)
{
	uint64_t size = 0;
	{
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(ino);
		if (!node || node->orphaned)
			return;
		node->orphaned = true;
		size = node->geometry.size;
	}
	if (kmod_)
		kmod_->seal(ino);
	if (size)
		remove_range(ino, 0, size, false);
}

// Removes [off, off+size) from a region's layout for every attacher. Dirty
// pages are written back to their objects first, so data written through
// the window before the call reaches the files mapped there.
int Filesystem::remove_range(uint64_t ino, uint64_t off, uint64_t size, bool all_or_nothing)
{
	invalidate(ino, off, size);
	std::vector<uint64_t> freed;
	LayoutChange change;
	std::vector<Mapping> removed;
	{
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		registry_->ensure_space();
		NodeRecord *node = registry_->find(ino);
		if (!node)
			return ENOENT;
		change.before.assign(node->mappings.begin(), node->mappings.end());
		Layout layout(change.before);
		if (int err = layout.remove_range(off, size, &removed))
			return err;
		if (all_or_nothing)
			if (int err = refuse_if_attacher_stopped(ino))
				return err;
		freed = layout.orphaned_objects(removed);
		change.after.assign(layout.mappings().begin(), layout.mappings().end());
		node->mappings.assign(change.after.begin(), change.after.end());
	}
	// Only a range the layout accepted reaches the module, which changes
	// the shared entries and flushes every attacher before it returns.
	if (kmod_) {
		if (int err = kmod_->unmap(ino, off, size))
			return err;
	}
	// Pages faulted in again meanwhile go too: every attacher faults now.
	invalidate(ino, off, size);
	if (all_or_nothing) {
		change.undo = [&removed](Layout &now) {
			for (const Mapping &m : removed)
				if (now.can_insert(m))
					return false;
			for (const Mapping &m : removed)
				now.insert(m);
			return true;
		};
		bool undone = false;
		if (int err = commit_to_attachers(ino, change, &undone)) {
			if (!undone)
				forget_objects(ino, freed);
			return err;
		}
	} else if (runtime_) {
		publish_region(ino);
		runtime_->sync_attachers(ino);
	}
	forget_objects(ino, freed);
	return 0;
}

// Caller holds registry_lock_.
int Filesystem::refuse_if_attacher_stopped(uint64_t ino)
{
	return runtime_ && !replaying() && runtime_->has_stopped_attacher(ino) ? EBUSY : 0;
}

// Publishes the new layout and waits for every attacher to recompose. If one
// cannot (it was stopped meanwhile, or does not answer), the change is taken
// back in the registry (the old layout, or the undo step if the region
// changed again meanwhile) and published, and the others recompose to it.
int Filesystem::commit_to_attachers(uint64_t ino, const LayoutChange &change, bool *undone)
{
	if (undone)
		*undone = false;
	if (!runtime_)
		return 0;
	publish_region(ino);
	const int err = runtime_->sync_attachers(ino);
	if (!err)
		return 0;
	{
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		registry_->ensure_space();
		NodeRecord *node = registry_->find(ino);
		if (node && std::equal(change.after.begin(), change.after.end(), node->mappings.begin(),
				       node->mappings.end())) {
			node->mappings.assign(change.before.begin(), change.before.end());
			if (undone)
				*undone = true;
		} else if (node) {
			Layout now(std::vector<Mapping>(node->mappings.begin(), node->mappings.end()));
			if (change.undo(now)) {
				node->mappings.assign(now.mappings().begin(), now.mappings().end());
				if (undone)
					*undone = true;
			}
		}
	}
	invalidate(ino, 0, 0); // to the end: pages a compat window read of `after`
	publish_region(ino);
	runtime_->sync_attachers(ino);
	return err;
}

// ---- huge page demotion (datapath=uffd) -------------------------------------

int Filesystem::split_huge_pages(uint64_t ino, uint64_t off, uint64_t size)
{
	if (!runtime_)
		return 0;
	for (const uint64_t edge : {off, off + size}) {
		int err = EAGAIN;
		for (int tries = 0; err == EAGAIN && tries < 100; tries++)
			err = demote_huge_page(ino, edge);
		if (err)
			return err;
	}
	return 0;
}

// An anonymous mapping the store put on hugetlbfs keeps the API's 4 KiB
// granularity: when an edit would cut one of its huge pages at `edge`, that
// page's data moves to a 4 KiB object first. Attachers are switched to the
// new object with its mapping published as filling, so their accesses there
// wait; the copy is made and committed under registry_lock_ (no FUSE read or
// write can touch the page meanwhile), then the finished layout is
// published, which wakes them. The huge page is freed last.
int Filesystem::demote_huge_page(uint64_t ino, uint64_t edge)
{
	std::lock_guard<std::mutex> serial(demote_lock_);
	const uint64_t unit = default_huge_page_size_;
	std::vector<Mapping> before;
	std::vector<Mapping> after;
	std::shared_ptr<BackingObject> huge;
	std::shared_ptr<BackingObject> small;
	uint64_t page_off = 0;
	uint64_t huge_offset = 0;
	uint64_t small_id = 0;
	{
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		if (!registry_->ensure_space())
			return ENOSPC;
		NodeRecord *node = registry_->find(ino);
		if (!node)
			return ENOENT;
		before.assign(node->mappings.begin(), node->mappings.end());
		Layout layout(before);
		const Mapping *m = layout.find(edge);
		if (!m || m->has_file || m->kind != ObjectKind::anonymous)
			return 0;
		const uint64_t object_offset = m->object_offset + (edge - m->region_offset);
		if (object_offset % unit == 0)
			return 0;
		{
			ObjectTable::const_accessor acc;
			if (!objects_.find(acc, ObjectKey{ino, m->object_id}) || !acc->second ||
			    acc->second->backing() != Backing::hugetlb)
				return 0;
			huge = acc->second;
		}
		page_off = edge - object_offset % unit;
		huge_offset = object_offset - object_offset % unit;
		small_id = node->next_object_id++;
		int err = 0;
		small = store_->create_small(object_file_name(ino, small_id), unit, &err);
		if (!small)
			return err;
		std::vector<Mapping> removed;
		if (int rm = layout.remove_range(page_off, unit, &removed))
			return rm;
		for (Mapping piece : removed) {
			piece.object_id = small_id;
			piece.object_offset = piece.region_offset - page_off;
			piece.huge_page_size = 0;
			layout.insert(piece);
		}
		after.assign(layout.mappings().begin(), layout.mappings().end());
		ObjectTable::accessor acc;
		objects_.insert(acc, ObjectKey{ino, small_id});
		acc->second = small;
	}
	publish_region(ino, &after, FillingRange{page_off, unit});
	// An attacher that cannot follow keeps the huge page: nothing moves.
	int err = runtime_->sync_attachers(ino);
	if (!err) {
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(ino);
		if (!node || !std::equal(before.begin(), before.end(), node->mappings.begin(), node->mappings.end())) {
			err = EAGAIN; // the layout changed meanwhile: put it back
		} else {
			std::vector<char> data(unit);
			err = huge->read(data.data(), unit, huge_offset);
			if (!err)
				err = small->write(data.data(), unit, 0);
			if (!err)
				node->mappings.assign(after.begin(), after.end());
		}
	}
	publish_region(ino);
	const bool all_followed = runtime_->sync_attachers(ino) == 0;
	if (err) {
		forget_objects(ino, {small_id});
		return err;
	}
	// One that did not follow may still map the huge page: it stays.
	if (all_followed)
		huge->punch_hole(huge_offset, unit);
	return 0;
}

// ---- datapath=kmod -----------------------------------------------------------

// Caller holds registry_lock_ exclusively.
int Filesystem::kmod_create(NodeRecord &node, pid_t owner)
{
	int file = -1;
	if (int err = kmod_->create(node.ino, owner, &file))
		return err;
	std::lock_guard<std::mutex> guard(keeper_lock_);
	if (keeper_)
		keeper_->put(KmodRegions::tag(node.ino, kmod_->backing_id(node.ino)), file);
	return 0;
}

// Turns libfuse 3.14's replies into passthrough ones: the INIT reply offers
// FUSE_PASSTHROUGH, and the OPEN/CREATE reply of a region names its backing
// file (the fuse_open_out at the end of the reply).
void Filesystem::kmod_patch_reply(iovec *iov, int count)
{
	auto *out = static_cast<fuse_out_header *>(iov[0].iov_base);
	if (out->error != 0 || count < 2) {
		tls_passthrough_id = 0;
		return;
	}
	iovec &arg = iov[count - 1];
	if (init_unique_ && out->unique == init_unique_ && arg.iov_len >= 40) {
		auto *words = static_cast<uint32_t *>(arg.iov_base);
		words[3] |= 1U << 30;	   // flags: FUSE_INIT_EXT
		words[3] &= ~(1U << 16);   // no FUSE_WRITEBACK_CACHE
		words[8] |= 1U << (37 - 32); // flags2: FUSE_PASSTHROUGH
		words[9] = 1;		   // max_stack_depth
		return;
	}
	if (tls_passthrough_id && arg.iov_len >= sizeof(fuse_open_out)) {
		auto *open_out = reinterpret_cast<fuse_open_out *>(static_cast<char *>(arg.iov_base) +
								    arg.iov_len - sizeof(fuse_open_out));
		open_out->open_flags = 1U << 7; // FOPEN_PASSTHROUGH, nothing else
		open_out->padding = static_cast<uint32_t>(tls_passthrough_id);
	}
	tls_passthrough_id = 0;
}

bool Filesystem::kmod_passthrough() const { return kmod_ && kmod_->passthrough(); }

// The runtime socket with hooks (plus the mount's device, which every
// request's region descriptor is checked against), serving; null if it
// cannot start.
std::unique_ptr<RuntimeService> Filesystem::start_runtime_socket(RuntimeService::Hooks hooks, bool lend_uffd)
{
	hooks.mount_device = [this] { return mount_dev_; };
	auto service = std::make_unique<RuntimeService>(options_.runtime_socket, std::move(hooks));
	service->limit_attachers_per_uid(options_.max_attachers_per_uid);
	if (lend_uffd) // absent before Linux 6.1, root's only
		service->lend_uffd_device(UniqueFd(::open(kUserfaultfdDevice, O_RDWR | O_CLOEXEC)));
	if (int err = service->start()) {
		fprintf(stderr, "msharefsd: runtime socket: %s; programs fall back to the page cache\n",
			strerror(err));
		return nullptr;
	}
	return service;
}

// The runtime socket on datapath=kmod without passthrough: it hands
// programs that use the runtime the module's file of a region they hold open.
void Filesystem::start_module_file_service()
{
	RuntimeService::Hooks hooks;
	hooks.module_file = [this](uint64_t ino, int access, UniqueFd *fd) { return kmod_->reopen(ino, access, fd); };
	module_files_ = start_runtime_socket(std::move(hooks), false);
}

// ---- datapath=uffd -----------------------------------------------------------

void Filesystem::start_runtime_service()
{
	RuntimeService::Hooks hooks;
	hooks.republish = [this](uint64_t ino) { return publish_region(ino); };
	hooks.object_fd = [this](uint64_t ino, uint64_t id, UniqueFd *fd) { return runtime_object_fd(ino, id, fd); };
	runtime_ = start_runtime_socket(std::move(hooks), options_.lend_uffd_device);
}

// Publishes the region's layout for its attachers; takes registry_lock_ shared.
int Filesystem::publish_region(uint64_t ino, const std::vector<Mapping> *layout, FillingRange filling)
{
	if (!runtime_)
		return 0;
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = registry_->find(ino);
	if (!node || node->kind != NodeKind::region)
		return ENOENT;
	if (!node->geometry.sized)
		return EINVAL;
	std::vector<Mapping> mappings(node->mappings.begin(), node->mappings.end());
	if (layout)
		mappings = *layout;
	uint32_t flags = node->orphaned ? kPublishedOrphaned : 0;
	if (node->handoff)
		flags |= kPublishedHandoff;
	int err = runtime_->publish(ino, node->geometry.size, mappings, flags, node->lock_holder, filling);
	if (!err && node->orphaned)
		err = EINVAL;
	return err;
}

int Filesystem::runtime_object_fd(uint64_t ino, uint64_t object_id, UniqueFd *fd)
{
	ObjectTable::const_accessor acc;
	if (!objects_.find(acc, ObjectKey{ino, object_id}) || !acc->second)
		return ENOENT;
	*fd = acc->second->open();
	return *fd ? 0 : errno;
}

} // namespace msharefs
