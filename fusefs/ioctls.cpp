// The ioctl ABI as a table of small handlers. Each handler gets a call whose
// argument has already been checked for size and access mode, and answers
// with the errno the API documents.
#include "filesystem.hpp"

#include "object_access.hpp"
#include "ownership.hpp"
#include "process.hpp"

#include <linux/magic.h>
#include <linux/msharefs.h>
#include <msharefs/runtime_protocol.hpp>

#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>

namespace msharefs {

struct Filesystem::IoctlCall {
	fuse_req_t req;
	uint64_t ino;
	IoctlOp op;
	const void *in;
	char out[64];
	size_t out_size;

	template <class T> T arg() const
	{
		T value;
		std::memcpy(&value, in, sizeof(T));
		return value;
	}
	template <class T> void reply(const T &value)
	{
		static_assert(sizeof(T) <= sizeof(out));
		std::memcpy(out, &value, sizeof(T));
		out_size = sizeof(T);
	}
};

namespace {

struct IoctlHandler {
	IoctlOp op;
	size_t in_size;
	size_t out_size;
	bool needs_write; // the region file must be open for writing [EBADF]
	bool owner_only;  // only the region's owner may [EPERM]
	int (Filesystem::*handle)(Filesystem::IoctlCall &);
};

const IoctlHandler kIoctlHandlers[] = {
	{IoctlOp::get_size, 0, sizeof(mshare_info), false, false, &Filesystem::ioctl_get_size},
	{IoctlOp::set_size, sizeof(mshare_info), 0, true, true, &Filesystem::ioctl_set_size},
	{IoctlOp::create_mapping, sizeof(mshare_create), 0, true, true, &Filesystem::ioctl_create_mapping},
	{IoctlOp::unmap, sizeof(mshare_unmap), 0, true, true, &Filesystem::ioctl_unmap},
	{IoctlOp::create_mapping_v3, sizeof(mshare_create_v3), 0, true, true, &Filesystem::ioctl_create_mapping},
	{IoctlOp::unmap_v3, sizeof(mshare_unmap_v3), 0, true, true, &Filesystem::ioctl_unmap},
	{IoctlOp::protect, sizeof(mshare_protect), 0, true, true, &Filesystem::ioctl_protect},
	{IoctlOp::lock, 0, 0, true, false, &Filesystem::ioctl_lock},
	{IoctlOp::unlock, 0, 0, true, false, &Filesystem::ioctl_unlock},
	{IoctlOp::set_owner, sizeof(mshare_owner), 0, true, true, &Filesystem::ioctl_set_owner},
};

const IoctlHandler *handler_for(IoctlOp op)
{
	for (const auto &h : kIoctlHandlers)
		if (h.op == op)
			return &h;
	return nullptr;
}

} // namespace

void Filesystem::ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *, fuse_file_info *fi,
		       unsigned flags, const void *in_buf, size_t in_bufsz, size_t)
{
	if (flags & FUSE_IOCTL_DIR) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	bool sized = false;
	OwnerId owner;
	bool orphaned = false;
	{
		std::shared_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(ino);
		if (!node || node->kind != NodeKind::region) {
			lock.unlock();
			fuse_reply_err(req, node ? ENOTTY : ENOENT);
			return;
		}
		sized = node->geometry.sized;
		owner = owner_of(*node);
		orphaned = node->orphaned;
	}
	if (cmd == MSHAREFS_IOC_RUNTIME) {
		struct msharefs_runtime_info info {};
		const RuntimeService *service = runtime_ ? runtime_.get() : module_files_.get();
		if (int err = service || kmod_ ? 0 : ENOTTY) {
			fuse_reply_err(req, err);
			return;
		}
		info.ino = ino;
		info.alignment = options_.alignment;
		info.flags = module_files_ ? kRuntimeModuleFiles : kmod_ ? kRuntimeKernelWindows : 0;
		if (service)
			std::strncpy(info.socket_path, service->socket_name().c_str(), sizeof(info.socket_path) - 1);
		fuse_reply_ioctl(req, 0, &info, sizeof(info));
		return;
	}
	const IoctlOp op = classify_ioctl(cmd, sized);
	const IoctlHandler *h = handler_for(op);
	if (!h) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	if (in_bufsz < h->in_size) {
		fuse_reply_err(req, EFAULT);
		return;
	}
	if (h->needs_write && !(fi->fh == O_WRONLY || fi->fh == O_RDWR)) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (h->owner_only && (owner.pid == 0 || process_of(fuse_req_ctx(req)->pid) != owner)) {
		// An orphaned region takes no changes from anyone [EINVAL].
		fuse_reply_err(req, orphaned ? EINVAL : EPERM);
		return;
	}
	IoctlCall call{req, ino, op, in_buf, {}, 0};
	int err = (this->*h->handle)(call);
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_ioctl(req, 0, call.out_size ? call.out : nullptr, call.out_size);
}

int Filesystem::ioctl_get_size(IoctlCall &call)
{
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = registry_->find(call.ino);
	if (!node || !node->geometry.sized)
		return EINVAL;
	call.reply(mshare_info{node->geometry.start, node->geometry.size});
	return 0;
}

int Filesystem::ioctl_set_size(IoctlCall &call)
{
	const auto info = call.arg<mshare_info>();
	{
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(call.ino);
		if (!node)
			return ENOENT;
		if (int err = size_region(*node, info.start, info.size))
			return err;
	}
	set_kernel_size(call.ino, info.size);
	return 0;
}

// Resolves the caller's descriptor and checks it may be mapped as asked.
int Filesystem::map_file(IoctlCall &call, const MappingRequest &req, uint32_t fd, Mapping *m,
			 std::vector<Mapping> *before)
{
	UniqueFd file(steal_fd(fuse_req_ctx(call.req)->pid, static_cast<int>(fd)));
	if (!file)
		return errno == EBADF || errno == ESRCH ? EBADF : errno;
	struct stat st {};
	struct statfs sfs {};
	if (fstat(file.get(), &st) < 0 || fstatfs(file.get(), &sfs) < 0)
		return EBADF;
	if (mount_dev_ && st.st_dev == mount_dev_)
		return EINVAL; // msharefs regions do not nest
	if (!S_ISREG(st.st_mode))
		return ENODEV;
	if (fcntl(file.get(), F_GETFL) & O_PATH)
		return EBADF;
	const uint32_t allowed = object_max_prot(file.get());
	if (!allowed || (req.prot & ~allowed))
		return EACCES;
	MappingRequest checked = req;
	checked.file_is_hugetlbfs = static_cast<unsigned long>(sfs.f_type) == HUGETLBFS_MAGIC;
	checked.file_huge_page_size = checked.file_is_hugetlbfs ? static_cast<uint64_t>(sfs.f_bsize) : 0;

	std::unique_lock<std::shared_mutex> lock(registry_lock_);
	if (!registry_->ensure_space())
		return ENOSPC;
	NodeRecord *node = registry_->find(call.ino);
	if (!node || node->orphaned)
		return EINVAL;
	if (int err = validate_create(node->geometry, checked, default_huge_page_size_, m))
		return err;
	m->max_prot = allowed;
	Layout layout(std::vector<Mapping>(node->mappings.begin(), node->mappings.end()));
	if (int err = layout.can_insert(*m))
		return replaying() ? 0 : err;
	if (int err = refuse_if_attacher_stopped(call.ino))
		return err;
	before->assign(layout.mappings().begin(), layout.mappings().end());
	if (kmod_) {
		// A hugetlbfs file its owner may truncate or punch under the
		// region is root's only: a window's madvise(COLD/PAGEOUT) over
		// part of a huge page racing with that could split it
		// (fastpath-kmod/DESIGN.md, Limits). MAP_HUGETLB memory is a
		// memfd of msharefsd's own, which nobody else holds.
		if (checked.file_is_hugetlbfs && fuse_req_ctx(call.req)->uid != 0)
			return EOPNOTSUPP;
		// The module takes its own reference to the file (hugetlbfs
		// too: 2 MiB pages, 2 MiB aligned, or EOPNOTSUPP/EINVAL).
		if (int err = kmod_->map_file(call.ino, m->region_offset, m->size, m->object_offset, m->prot,
					      file.get()))
			return err;
		m->object_id = node->next_object_id++;
		layout.insert(*m);
		node->mappings.assign(layout.mappings().begin(), layout.mappings().end());
		return 0;
	}
	m->object_id = node->next_object_id++;
	{
		std::lock_guard<std::mutex> guard(keeper_lock_);
		if (keeper_)
			keeper_->put(object_tag(call.ino, m->object_id), file.get());
	}
	ObjectTable::accessor acc;
	objects_.insert(acc, ObjectKey{call.ino, m->object_id});
	acc->second = std::make_shared<BackingObject>(std::move(file), m->kind, "");
	layout.insert(*m);
	node->mappings.assign(layout.mappings().begin(), layout.mappings().end());
	return 0;
}

int Filesystem::add_mapping(IoctlCall &call, MappingRequest req, uint32_t fd)
{
	Mapping m;
	LayoutChange change;
	if (!(req.flags & MAP_ANONYMOUS)) {
		if (int err = map_file(call, req, fd, &m, &change.before))
			return err;
	} else {
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		if (!registry_->ensure_space())
			return ENOSPC;
		NodeRecord *node = registry_->find(call.ino);
		if (!node || node->orphaned)
			return EINVAL;
		if (int err = validate_create(node->geometry, req, default_huge_page_size_, &m))
			return err;
		Layout layout(std::vector<Mapping>(node->mappings.begin(), node->mappings.end()));
		if (int err = layout.can_insert(m)) {
			const Mapping *existing = layout.find(m.region_offset);
			// Replayed after the first daemon made this very mapping.
			if (replaying() && existing && existing->region_offset == m.region_offset &&
			    existing->size == m.size && !existing->has_file)
				return 0;
			return err;
		}
		if (int err = refuse_if_attacher_stopped(call.ino))
			return err;
		change.before.assign(layout.mappings().begin(), layout.mappings().end());
		m.object_id = node->next_object_id++;
		if (kmod_) {
			// The module holds the memory itself; huge pages come from a
			// hugetlbfs file of the mapping's own, which it holds.
			const int err = m.kind == ObjectKind::hugetlb
						? kmod_->map_huge(call.ino, m.region_offset, m.size, m.huge_page_size, m.prot)
						: kmod_->map(call.ino, m.region_offset, m.size, m.prot);
			if (err)
				return err;
		} else {
			int err = 0;
			auto object = store_->create(object_file_name(call.ino, m.object_id), m, &err);
			if (!object)
				return err;
			ObjectTable::accessor acc;
			objects_.insert(acc, ObjectKey{call.ino, m.object_id});
			acc->second = std::move(object);
		}
		layout.insert(m);
		node->mappings.assign(layout.mappings().begin(), layout.mappings().end());
	}
	// Nothing of the range can be cached (it was a hole), but make sure.
	invalidate(call.ino, m.region_offset, m.size);
	Layout after(change.before);
	after.insert(m);
	change.after.assign(after.mappings().begin(), after.mappings().end());
	change.undo = [&m](Layout &now) {
		const Mapping *there = now.find(m.region_offset);
		std::vector<Mapping> removed;
		return there && there->object_id == m.object_id && there->region_offset == m.region_offset &&
		       there->size == m.size && now.remove_range(m.region_offset, m.size, &removed) == 0;
	};
	bool undone = false;
	if (int err = commit_to_attachers(call.ino, change, &undone)) {
		if (undone)
			forget_objects(call.ino, {m.object_id});
		return err;
	}
	return 0;
}

int Filesystem::ioctl_create_mapping(IoctlCall &call)
{
	MappingRequest req;
	uint32_t fd;
	if (call.op == IoctlOp::create_mapping) {
		const auto a = call.arg<mshare_create>();
		std::shared_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(call.ino);
		if (!node)
			return ENOENT;
		if (int err = absolute_to_offset(node->geometry, a.addr, &req.region_offset))
			return err;
		req.size = a.size;
		req.object_offset = a.offset;
		req.prot = a.prot;
		req.flags = a.flags;
		fd = a.fd;
	} else {
		const auto a = call.arg<mshare_create_v3>();
		req.region_offset = a.region_offset;
		req.size = a.size;
		req.object_offset = a.offset;
		req.prot = a.prot;
		req.flags = a.flags;
		fd = a.fd;
	}
	return add_mapping(call, req, fd);
}

int Filesystem::ioctl_unmap(IoctlCall &call)
{
	uint64_t off = 0;
	uint64_t size = 0;
	{
		std::shared_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(call.ino);
		if (!node)
			return ENOENT;
		const Geometry geo = node->geometry;
		if (call.op == IoctlOp::unmap) {
			const auto a = call.arg<mshare_unmap>();
			if (int err = absolute_to_offset(geo, a.addr, &off))
				return err;
			size = a.size;
		} else {
			const auto a = call.arg<mshare_unmap_v3>();
			// The same number sized a seed region: a replayed SET_SIZE.
			if (replaying() && geo.start != 0 && a.region_offset == geo.start && a.size == geo.size)
				return 0;
			off = a.region_offset;
			size = a.size;
		}
		if (int err = validate_range(geo, off, size))
			return err;
	}
	if (int err = split_huge_pages(call.ino, off, size))
		return err;
	return remove_range(call.ino, off, size);
}

// Checks a PROTECT argument against the region: 0 and its region offset,
// or the errno.
static int check_protect(const NodeRecord *node, const mshare_protect &a, uint64_t *off)
{
	if (!node || !node->geometry.sized)
		return EINVAL;
	if (int err = absolute_to_offset(node->geometry, a.addr, off))
		return err;
	if (int err = validate_range(node->geometry, *off, a.size))
		return err;
	return a.prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC) ? EINVAL : 0;
}

// PROTECT never grants more than a file mapped in the range allows [EACCES]:
// what it allowed at CREATE_MAPPING and, where the daemon holds the file
// (not on datapath=kmod, where the module does), what it allows now (seals
// added since). Caller holds registry_lock_.
int Filesystem::check_object_access(const NodeRecord &node, uint64_t off, uint64_t size, uint32_t prot)
{
	for (const Mapping &m : node.mappings) {
		if (!m.has_file || m.end() <= off || m.region_offset >= off + size)
			continue;
		uint32_t allowed = m.max_prot;
		ObjectTable::const_accessor acc;
		if (objects_.find(acc, ObjectKey{node.ino, m.object_id}) && acc->second)
			allowed &= object_max_prot(acc->second->file_fd());
		if (prot & ~allowed)
			return EACCES;
	}
	return 0;
}

// PROTECT: the module changes the shared entries for every attacher at once;
// the page cache path cannot change protections in other processes.
int Filesystem::ioctl_protect(IoctlCall &call)
{
	const auto a = call.arg<mshare_protect>();
	uint64_t off = 0;
	{
		std::shared_lock<std::shared_mutex> lock(registry_lock_);
		if (int err = check_protect(registry_->find(call.ino), a, &off))
			return err;
		if (int err = check_object_access(*registry_->find(call.ino), off, a.size, a.prot))
			return err;
	}
	if (kmod_)
		return kmod_->protect(call.ino, off, a.size, a.prot);
	if (!runtime_)
		return EOPNOTSUPP;
	if (int err = split_huge_pages(call.ino, off, a.size))
		return err;
	std::vector<Mapping> before, after;
	{
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		if (!registry_->ensure_space())
			return ENOSPC;
		NodeRecord *node = registry_->find(call.ino);
		if (!node)
			return ENOENT;
		before.assign(node->mappings.begin(), node->mappings.end());
		Layout layout(before);
		if (int err = layout.protect(off, a.size, a.prot))
			return err;
		after.assign(layout.mappings().begin(), layout.mappings().end());
		node->mappings.assign(after.begin(), after.end());
	}
	publish_region(call.ino);
	const int err = runtime_->apply_protection(call.ino, off, a.size);
	if (err)
		undo_protection(call.ino, off, a.size, before, after);
	return err;
}

// A PROTECT that an attacher could not follow (stopped, or mute: it had to
// recompose) is taken back for everyone, so the ioctl never fails with some
// attachers on the new protection: all or nothing, as UNMAP.
void Filesystem::undo_protection(uint64_t ino, uint64_t off, uint64_t size, const std::vector<Mapping> &before,
				 const std::vector<Mapping> &after)
{
	{
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		registry_->ensure_space();
		NodeRecord *node = registry_->find(ino);
		if (!node || !std::equal(after.begin(), after.end(), node->mappings.begin(), node->mappings.end()))
			return; // changed again since: that change stands
		node->mappings.assign(before.begin(), before.end());
	}
	publish_region(ino);
	runtime_->apply_protection(ino, off, size);
}

// LOCK / UNLOCK (datapath=uffd and kmod): the buffer handoff. While a
// process holds the region, only it writes; the others' stores fault. UNLOCK
// gives writing back to every attacher (as the mappings allow). The module
// flips each window between its writable and its read-only view.
int Filesystem::set_lock_holder(IoctlCall &call, bool lock_it)
{
	const int32_t caller = thread_group_of(fuse_req_ctx(call.req)->pid);
	uint64_t size = 0;
	{
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(call.ino);
		if (!node || !node->geometry.sized || node->orphaned)
			return EINVAL;
		if (!runtime_ && !kmod_)
			return EOPNOTSUPP;
		const bool held_by_other = node->lock_holder && node->lock_holder != caller &&
					   process_start_time(node->lock_holder) != 0;
		if (lock_it) {
			if (held_by_other)
				return EBUSY;
			if (node->lock_holder == caller && node->handoff)
				return 0;
		} else if (node->lock_holder != caller) {
			return EPERM;
		}
		if (kmod_) {
			if (int err = kmod_->set_writer(call.ino, lock_it ? caller : -1))
				return err;
		}
		node->lock_holder = lock_it ? caller : 0;
		node->handoff = lock_it;
		size = node->geometry.size;
	}
	if (runtime_) {
		publish_region(call.ino);
		runtime_->apply_protection(call.ino, 0, size);
	}
	return 0;
}

int Filesystem::ioctl_lock(IoctlCall &call)
{
	return set_lock_holder(call, true);
}

int Filesystem::ioctl_unlock(IoctlCall &call)
{
	return set_lock_holder(call, false);
}

int Filesystem::ioctl_set_owner(IoctlCall &call)
{
	return transfer_owner(call.ino, fuse_req_ctx(call.req)->pid, call.arg<mshare_owner>());
}


} // namespace msharefs
