// One attached window: the handshake with msharefsd and the composition of
// the window from the region's objects.
#include "runtime.hpp"

#include "msharefs/uffd.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace msharefs::runtime {

void *raw_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return reinterpret_cast<void *>(syscall(SYS_mmap, addr, len, prot, flags, fd, off));
}

int raw_munmap(void *addr, size_t len)
{
	return static_cast<int>(syscall(SYS_munmap, addr, len));
}

int raw_mprotect(void *addr, size_t len, int prot)
{
	return static_cast<int>(syscall(SYS_mprotect, addr, len, prot));
}

namespace {

constexpr int kReserveFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED;

void *at(uint64_t base, uint64_t off)
{
	return reinterpret_cast<void *>(base + off);
}

// The layout as runs of one object each (protections do not matter here).
std::vector<Run> runs_of(const PublishedState &state)
{
	std::vector<Run> runs;
	if (state.flags & kPublishedOrphaned)
		return runs;
	for (const PublishedMapping &m : state.mappings) {
		if (!runs.empty()) {
			Run &last = runs.back();
			if (last.object_id == m.object_id && last.offset + last.size == m.region_offset &&
			    last.object_offset + last.size == m.object_offset) {
				last.size += m.size;
				continue;
			}
		}
		runs.push_back(Run{m.region_offset, m.size, m.object_id, m.object_offset, m.huge_page_size, false});
	}
	return runs;
}

// The uid the FUSE mount of fd was made by (its user_id= option), or -1.
long mount_owner(int fd)
{
	struct statx stx {};
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE, &stx) < 0)
		return -1;
	const std::string majmin = std::to_string(stx.stx_dev_major) + ":" + std::to_string(stx.stx_dev_minor);
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -1;
	long uid = -1;
	char *line = nullptr;
	size_t cap = 0;
	while (uid < 0 && getline(&line, &cap, f) > 0) {
		char id[16], parent[16], dev[32];
		if (sscanf(line, "%15s %15s %31s", id, parent, dev) != 3 || majmin != dev)
			continue;
		if (const char *opt = strstr(line, " - "); opt && (opt = strstr(opt, "user_id=")))
			uid = strtol(opt + strlen("user_id="), nullptr, 10);
	}
	free(line);
	fclose(f);
	return uid;
}

} // namespace

// The runtime socket's name is public: only the daemon of the mount (root,
// or whoever made the mount) is trusted with the process's userfaultfd.
bool Window::served_by_daemon(int sock, int region_fd)
{
	ucred cred{};
	socklen_t len = sizeof(cred);
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	return cred.uid == 0 || static_cast<long>(cred.uid) == mount_owner(region_fd);
}

Window::Window(uint64_t base, uint64_t size, int prot, uint64_t ino, UniqueFd region_fd, std::string socket_name)
	: base_(base), size_(size), prot_(prot), ino_(ino), region_fd_(std::move(region_fd)),
	  socket_name_(std::move(socket_name))
{
}

Window::~Window() = default;

int Window::handshake(int uffd, int ticket_fd)
{
	sock_.reset(connect_runtime_socket(socket_name_));
	if (!sock_)
		return ENOTCONN;
	if (!served_by_daemon(sock_.get(), region_fd_.get())) {
		sock_.reset();
		return ENOTCONN;
	}
	RuntimeMessage msg{};
	msg.type = RuntimeMsgType::attach;
	msg.ino = ino_;
	msg.a = base_;
	msg.b = size_;
	if (int err = send_runtime_message(sock_.get(), msg, {uffd, ticket_fd, region_fd_.get()}))
		return err == EPIPE ? ENOTCONN : err;
	std::vector<UniqueFd> fds;
	RuntimeMessage reply{};
	if (int err = recv_runtime_message(sock_.get(), &reply, &fds))
		return err == ECONNRESET ? ENOTCONN : err;
	if (reply.type != RuntimeMsgType::attached)
		return EPROTO;
	if (reply.status)
		return reply.status;
	if (fds.size() != 1)
		return EPROTO;
	if (int err = layout_.adopt(std::move(fds[0])))
		return err;
	uffd_ = uffd;
	return 0;
}

// A request that is a connection's only one (lend_uffd, module_file): the
// region descriptor goes with it, one descriptor comes back. 0 or errno.
int Window::one_shot_request(RuntimeMsgType type, const std::string &socket_name, uint64_t ino, int region_fd,
			     UniqueFd *out)
{
	UniqueFd sock(connect_runtime_socket(socket_name));
	if (!sock || !served_by_daemon(sock.get(), region_fd))
		return ENOTCONN;
	RuntimeMessage msg{};
	msg.type = type;
	msg.ino = ino;
	if (int err = send_runtime_message(sock.get(), msg, {region_fd}))
		return err == EPIPE ? ENOTCONN : err;
	std::vector<UniqueFd> fds;
	RuntimeMessage reply{};
	if (int err = recv_runtime_message(sock.get(), &reply, &fds))
		return err == ECONNRESET ? ENOTCONN : err;
	if (reply.type != type)
		return EPROTO;
	if (reply.status)
		return reply.status;
	if (fds.size() != 1)
		return EPROTO;
	*out = std::move(fds[0]);
	return 0;
}

int Window::borrow_uffd_device(UniqueFd *device)
{
	UniqueFd fd;
	if (int err = one_shot_request(RuntimeMsgType::lend_uffd, socket_name_, ino_, region_fd_.get(), &fd))
		return err;
	// What the ioctl is made on must be the device, not any file.
	struct stat st {}, dev {};
	if (fstat(fd.get(), &st) < 0 || stat(kUserfaultfdDevice, &dev) < 0 || !S_ISCHR(st.st_mode) ||
	    st.st_rdev != dev.st_rdev)
		return EPROTO;
	*device = std::move(fd);
	return 0;
}

int Window::module_file(const std::string &socket_name, uint64_t ino, int region_fd, UniqueFd *file)
{
	UniqueFd fd;
	if (int err = one_shot_request(RuntimeMsgType::module_file, socket_name, ino, region_fd, &fd))
		return err;
	struct stat st {};
	if (fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode))
		return EPROTO;
	*file = std::move(fd);
	return 0;
}

int Window::attach(int uffd, int ticket_fd)
{
	if (int err = handshake(uffd, ticket_fd))
		return err;
	for (int tries = 0; tries < 1000; tries++) {
		const uint64_t seq = layout_.seq();
		if (int err = sync()) {
			// An object of the layout composed from was freed by a
			// change published meanwhile: compose the new layout.
			if (err == ENOENT && layout_.seq() != seq)
				continue;
			return err;
		}
		// The daemon marks the attacher live only if nothing changed
		// since the layout it was composed from.
		RuntimeMessage msg{};
		msg.type = RuntimeMsgType::ready;
		msg.ino = ino_;
		msg.a = seq;
		RuntimeMessage reply{};
		if (send_runtime_message(sock_.get(), msg) || recv_runtime_message(sock_.get(), &reply))
			return ENOTCONN;
		if (reply.type != RuntimeMsgType::ready)
			return EPROTO;
		if (reply.status != EAGAIN)
			return reply.status;
	}
	return EAGAIN;
}

int Window::request_object(uint64_t object_id, UniqueFd *fd)
{
	if (!sock_)
		return ENOTCONN;
	RuntimeMessage msg{};
	msg.type = RuntimeMsgType::object;
	msg.ino = ino_;
	msg.a = object_id;
	if (send_runtime_message(sock_.get(), msg))
		return ENOTCONN;
	for (;;) {
		std::vector<UniqueFd> fds;
		RuntimeMessage reply{};
		if (recv_runtime_message(sock_.get(), &reply, &fds))
			return ENOTCONN;
		if (reply.type == RuntimeMsgType::sync) {
			// Answered after this recomposition and one more.
			pending_cookie_ = std::max(pending_cookie_, reply.cookie);
			continue;
		}
		if (reply.type != RuntimeMsgType::object || reply.a != object_id)
			return EPROTO;
		if (reply.status)
			return reply.status;
		if (fds.size() != 1)
			return EPROTO;
		*fd = std::move(fds[0]);
		return 0;
	}
}

int Window::object_fd(uint64_t object_id)
{
	std::lock_guard<std::mutex> guard(objects_lock_);
	auto it = objects_.find(object_id);
	return it == objects_.end() ? -1 : it->second.get();
}

int Window::install(const Run &run, uint32_t vma_prot)
{
	int fd = object_fd(run.object_id);
	if (fd < 0) {
		UniqueFd object;
		if (int err = request_object(run.object_id, &object))
			return err;
		fd = object.get();
		std::lock_guard<std::mutex> guard(objects_lock_);
		objects_[run.object_id] = std::move(object);
	}
	const int mode = fcntl(fd, F_GETFL) & O_ACCMODE;
	if (mode != O_RDWR)
		vma_prot &= ~PROT_WRITE;
	const int prot = static_cast<int>(vma_prot);
	const auto offset = static_cast<off_t>(run.object_offset);
	Run installed = run;
	installed.capable = uffd_capable_file(fd) && uffd_ >= 0;
	if (installed.capable) {
		// Registered away from the window, then moved over what it
		// replaces in one step: no access can reach the object before
		// the fault handler sees it (a native fault would allocate and
		// map a page the daemon may still be filling).
		void *staged = raw_mmap(nullptr, run.size, prot, MAP_SHARED, fd, offset);
		if (staged == MAP_FAILED)
			return errno;
		const bool registered = register_range(uffd_, reinterpret_cast<uint64_t>(staged), run.size,
						       (vma_prot & PROT_WRITE) != 0);
		if (registered && syscall(SYS_mremap, staged, run.size, run.size, MREMAP_MAYMOVE | MREMAP_FIXED,
					  at(base_, run.offset)) != -1) {
			runs_[run.offset] = installed;
			return 0;
		}
		raw_munmap(staged, run.size);
		installed.capable = false;
	}
	void *p = raw_mmap(at(base_, run.offset), run.size, prot, MAP_SHARED | MAP_FIXED, fd, offset);
	if (p == MAP_FAILED)
		return errno;
	runs_[run.offset] = installed;
	return 0;
}

// Places a run under userfaultfd: every fault there reaches the handler,
// and write protection can be set on it when the VMA is writable.
bool Window::register_run(int uffd, const Run &run, bool writable_vma)
{
	return register_range(uffd, base_ + run.offset, run.size, writable_vma);
}

bool Window::register_range(int uffd, uint64_t start, uint64_t len, bool writable_vma)
{
	if (uffd < 0)
		return false;
	uffdio_register reg{};
	reg.range.start = start;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR;
	if (writable_vma)
		reg.mode |= UFFDIO_REGISTER_MODE_WP;
	return ioctl(uffd, UFFDIO_REGISTER, &reg) == 0;
}

// Puts a fresh reservation (no registration) over the parts of
// [off, off+size) that no installed run covers.
void Window::reserve_uncovered(uint64_t off, uint64_t size)
{
	uint64_t pos = off;
	const uint64_t end = off + size;
	auto it = runs_.upper_bound(pos);
	if (it != runs_.begin())
		--it;
	for (; pos < end && it != runs_.end(); ++it) {
		const Run &run = it->second;
		if (run.offset + run.size <= pos)
			continue;
		if (run.offset >= end)
			break;
		if (run.offset > pos)
			raw_mmap(at(base_, pos), run.offset - pos, PROT_NONE, kReserveFlags, -1, 0);
		pos = run.offset + run.size;
	}
	if (pos < end)
		raw_mmap(at(base_, pos), end - pos, PROT_NONE, kReserveFlags, -1, 0);
}

// Protections the VMAs themselves must carry: for runs under userfaultfd
// the daemon and the fault handler enforce them, except PROT_NONE, whose
// pages must leave this process's page tables; other files get mprotect.
int Window::apply_prot(const PublishedState &state)
{
	const pid_t me = getpid();
	for (const PublishedMapping &m : state.mappings) {
		auto it = runs_.upper_bound(m.region_offset);
		if (it == runs_.begin())
			continue;
		--it;
		const Run &run = it->second;
		if (m.region_offset + m.size > run.offset + run.size)
			continue;
		void *addr = at(base_, m.region_offset);
		const bool may_write = published_writable(m, state.flags, state.lock_holder, me) && writable();
		if (run.capable) {
			if (!may_write && (prot_ & PROT_WRITE))
				uffd_write_protect(uffd_, base_ + m.region_offset, m.size, true);
			if (!(m.prot & (PROT_READ | PROT_WRITE | PROT_EXEC)))
				madvise(addr, m.size, MADV_DONTNEED);
			continue;
		}
		int prot = static_cast<int>(m.prot) & (PROT_READ | PROT_EXEC | (may_write ? PROT_WRITE : 0));
		const int fd = object_fd(run.object_id);
		if (fd >= 0 && (fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR)
			prot &= ~PROT_WRITE;
		if (!(prot_ & PROT_WRITE))
			prot &= ~PROT_WRITE;
		raw_mprotect(addr, m.size, prot);
	}
	return 0;
}

int Window::compose(const PublishedState &state)
{
	const std::vector<Run> target = runs_of(state);
	// New runs are mapped over what they replace (MAP_FIXED swaps the
	// pages in one step, so an access meanwhile sees the old or the new
	// object, never a hole); what no run covers any more is reserved last.
	std::vector<Run> stale;
	for (const auto &[off, run] : runs_)
		if (std::find(target.begin(), target.end(), run) == target.end())
			stale.push_back(run);
	for (const Run &run : stale)
		runs_.erase(run.offset);
	uint32_t vma_prot = static_cast<uint32_t>(prot_) & (PROT_READ | PROT_WRITE);
	for (const Run &run : target) {
		auto it = runs_.find(run.offset);
		if (it != runs_.end() && it->second == run)
			continue;
		uint32_t prot = vma_prot;
		for (const PublishedMapping &m : state.mappings)
			if (m.region_offset >= run.offset && m.region_offset < run.offset + run.size)
				prot |= m.prot & PROT_EXEC;
		if (int err = install(run, prot))
			return err;
	}
	for (const Run &run : stale)
		reserve_uncovered(run.offset, run.size);
	// Objects no run uses any more.
	std::lock_guard<std::mutex> guard(objects_lock_);
	for (auto it = objects_.begin(); it != objects_.end();) {
		const bool used = std::any_of(runs_.begin(), runs_.end(),
					      [&](const auto &r) { return r.second.object_id == it->first; });
		it = used ? std::next(it) : objects_.erase(it);
	}
	return 0;
}

int Window::sync()
{
	std::lock_guard<std::mutex> guard(lock_);
	if (detached_)
		return 0;
	for (;;) {
		const uint64_t answered = pending_cookie_;
		PublishedState state;
		if (int err = layout_.read(&state))
			return err;
		if (int err = compose(state))
			return err;
		apply_prot(state);
		if (pending_cookie_ == answered)
			break;
	}
	// Faults left waiting while the daemon filled a mapping (see
	// kMappingFilling) try again against what is installed now.
	if (uffd_ >= 0) {
		uffdio_range all{base_, size_};
		ioctl(uffd_, UFFDIO_WAKE, &all);
	}
	return 0;
}

int Window::answer_sync(uint64_t cookie)
{
	int err = sync();
	RuntimeMessage msg{};
	msg.type = RuntimeMsgType::done;
	msg.ino = ino_;
	// No memory to read the layout or map what it says: not composed, and
	// the daemon drops this window. Any other failure (an object a later
	// change freed) is followed by that change's own sync.
	msg.status = err == ENOMEM ? err : 0;
	{
		std::lock_guard<std::mutex> guard(lock_);
		msg.cookie = std::max(cookie, pending_cookie_);
		pending_cookie_ = 0;
	}
	if (send_runtime_message(sock_.get(), msg))
		return ENOTCONN;
	return err;
}

int Window::reregister(int uffd)
{
	std::lock_guard<std::mutex> guard(lock_);
	if (detached_)
		return 0;
	PublishedState state;
	if (int err = layout_.read(&state))
		return err;
	uffd_ = uffd;
	for (auto &[off, run] : runs_)
		if (run.capable && !register_run(uffd, run, prot_ & PROT_WRITE))
			return errno;
	apply_prot(state);
	return 0;
}

void Window::detach()
{
	std::lock_guard<std::mutex> guard(lock_);
	detached_ = true;
	raw_munmap(at(base_, 0), size_);
	runs_.clear();
	sock_.reset();
	region_fd_.reset();
}

void Window::lose_daemon()
{
	std::lock_guard<std::mutex> guard(lock_);
	sock_.reset();
}

} // namespace msharefs::runtime
