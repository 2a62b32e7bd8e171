#include "runtime_service.hpp"

#include "runtime_peer.hpp"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <string>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace msharefs {

namespace {

// How long a PROTECT or layout change waits for one attacher to recompose.
constexpr auto kAnswerTimeout = std::chrono::seconds(10);
// How long it waits for a fault handler to finish an install it started.
constexpr auto kTicketTimeout = std::chrono::seconds(2);
// How often an attacher that has not answered yet is looked at for being
// stopped.
constexpr auto kStoppedPoll = std::chrono::milliseconds(5);

// True if the task whose stat file this is is stopped: state T (a stop
// signal) or t (a tracer), the third field, after the command name in
// parentheses.
bool task_stopped(const char *stat_path)
{
	UniqueFd fd(open(stat_path, O_RDONLY | O_CLOEXEC));
	if (!fd)
		return false;
	char buf[512];
	const ssize_t n = read(fd.get(), buf, sizeof(buf) - 1);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	const char *paren = std::strrchr(buf, ')');
	return paren && paren[1] == ' ' && (paren[2] == 'T' || paren[2] == 't');
}

// The process is stopped as a whole (a stop signal, a tracer's all-stop):
// its thread-group leader is.
bool process_stopped(int32_t tgid)
{
	if (tgid <= 0)
		return false;
	char path[40];
	std::snprintf(path, sizeof(path), "/proc/%d/stat", tgid);
	return task_stopped(path);
}

// Some thread of the process is stopped (a tracer may stop one thread, such
// as the runtime's, and leave the rest running).
bool some_thread_stopped(int32_t tgid)
{
	if (tgid <= 0)
		return false;
	char path[64];
	std::snprintf(path, sizeof(path), "/proc/%d/task", tgid);
	DIR *dir = opendir(path);
	if (!dir)
		return false;
	bool stopped = false;
	while (dirent *e = readdir(dir)) {
		if (e->d_name[0] == '.')
			continue;
		std::snprintf(path, sizeof(path), "/proc/%d/task/%.16s/stat", tgid, e->d_name);
		if ((stopped = task_stopped(path)))
			break;
	}
	closedir(dir);
	return stopped;
}

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

} // namespace

struct RuntimeService::Attacher {
	UniqueFd sock;
	UniqueFd uffd;
	RuntimeTicket *ticket = nullptr;
	uint64_t ino = 0;
	uint64_t base = 0;
	uint64_t size = 0;
	int32_t tgid = 0; // SO_PEERCRED, at connect
	uint32_t uid = 0; // likewise; charged to attacher_quota_ while connected
	bool over_quota = false; // its first request is answered EDQUOT
	int access = O_RDONLY; // the region fd's: what object descriptors get
	bool live = false;	      // guarded by lock_
	bool gone = false;	      // guarded by lock_
	uint64_t answered_cookie = 0; // guarded by lock_
	int32_t answered_status = 0;  // of the last done: 0 or why it did not recompose
	std::mutex send_lock;

	~Attacher()
	{
		if (ticket)
			munmap(ticket, sizeof(RuntimeTicket));
	}
	// Never waits: a peer whose socket is full (it does not read) gets
	// EAGAIN here and is dropped by the caller.
	int send(const RuntimeMessage &msg, const std::vector<int> &fds = {})
	{
		std::lock_guard<std::mutex> guard(send_lock);
		return send_runtime_message(sock.get(), msg, fds, MSG_DONTWAIT);
	}
};

RuntimeService::View::~View()
{
	if (page)
		munmap(page, kPublishedLayoutBytes);
}

RuntimeService::RuntimeService(std::string socket_name, Hooks hooks)
	: socket_name_(std::move(socket_name)), hooks_(std::move(hooks))
{
}

RuntimeService::~RuntimeService()
{
	if (thread_.joinable()) {
		uint64_t one = 1;
		if (write(wakeup_.get(), &one, sizeof(one)) < 0)
			perror("msharefsd: runtime service wakeup");
		thread_.join();
	}
}

int RuntimeService::start()
{
	listen_.reset(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
	epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
	wakeup_.reset(eventfd(0, EFD_CLOEXEC));
	if (!listen_ || !epoll_ || !wakeup_)
		return errno;
	// A path socket is bound under a temporary name, opened to every user
	// (whatever the umask: each peer is checked) and only then renamed into
	// place, so that no client ever finds it there and refused.
	const bool in_path = socket_name_[0] == '/';
	const std::string bound_name = in_path ? socket_name_ + ".new" : socket_name_;
	socklen_t len = 0;
	const sockaddr_un addr = runtime_socket_address(bound_name, &len);
	if (in_path)
		unlink(bound_name.c_str()); // left by a daemon that died
	if (bind(listen_.get(), reinterpret_cast<const sockaddr *>(&addr), len) < 0 ||
	    listen(listen_.get(), 64) < 0)
		return errno;
	if (in_path && (chmod(bound_name.c_str(), 0666) < 0 || rename(bound_name.c_str(), socket_name_.c_str()) < 0))
		return errno;
	epoll_event ev{};
	ev.events = EPOLLIN;
	ev.data.fd = listen_.get();
	epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listen_.get(), &ev);
	ev.data.fd = wakeup_.get();
	epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wakeup_.get(), &ev);
	thread_ = std::thread([this] { serve(); });
	return 0;
}

void RuntimeService::serve()
{
	for (;;) {
		epoll_event events[32];
		const int n = epoll_wait(epoll_.get(), events, 32, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return;
		for (int i = 0; i < n; i++) {
			const int fd = events[i].data.fd;
			if (fd == wakeup_.get())
				return;
			if (fd == listen_.get()) {
				accept_one();
				continue;
			}
			std::shared_ptr<Attacher> a;
			{
				std::lock_guard<std::mutex> guard(lock_);
				auto it = by_socket_.find(fd);
				if (it != by_socket_.end())
					a = it->second;
			}
			if (a)
				handle(std::move(a));
		}
	}
}

void RuntimeService::accept_one()
{
	UniqueFd sock(accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
	if (!sock)
		return;
	auto a = std::make_shared<Attacher>();
	ucred cred{};
	socklen_t len = sizeof(cred);
	if (getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0)
		return; // a peer the daemon cannot name is not served
	a->tgid = cred.pid;
	a->uid = cred.uid;
	const int fd = sock.get();
	a->sock = std::move(sock);
	epoll_event ev{};
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.fd = fd;
	std::lock_guard<std::mutex> guard(lock_);
	if (attacher_quota_.admits(a->uid))
		attacher_quota_.charge(a->uid);
	else
		a->over_quota = true; // -o max_attachers_per_uid
	by_socket_[fd] = a;
	epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev);
}

void RuntimeService::drop(const std::shared_ptr<Attacher> &a)
{
	std::lock_guard<std::mutex> guard(lock_);
	drop_locked(a);
}

void RuntimeService::drop_locked(const std::shared_ptr<Attacher> &a)
{
	if (a->gone)
		return;
	epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, a->sock.get(), nullptr);
	by_socket_.erase(a->sock.get());
	a->gone = true;
	if (!a->over_quota)
		attacher_quota_.release(a->uid);
	if (a->ino)
		release_view_locked(a->ino);
	answered_.notify_all();
}

// One message of a client. Anything malformed (size, type, descriptors
// where none belong, another region than its attachment's) is answered
// EINVAL and the client dropped; so is a client whose replies do not fit
// its socket.
void RuntimeService::handle(std::shared_ptr<Attacher> a)
{
	RuntimeMessage msg{};
	ReceivedFds received;
	std::vector<UniqueFd> &fds = received.fds;
	const int err = recv_runtime_message(a->sock.get(), &msg, &fds, MSG_DONTWAIT);
	if (err == EAGAIN || err == EINTR)
		return;
	RuntimeMessage reply{};
	reply.ino = msg.ino;
	auto refuse = [&](RuntimeMsgType type) {
		reply.type = type;
		reply.status = EINVAL;
		a->send(reply);
		drop(a);
	};
	if (err) {
		if (err == EPROTO)
			refuse(RuntimeMsgType::attached);
		else
			drop(a);
		return;
	}
	if (a->over_quota) {
		const bool one_shot = msg.type == RuntimeMsgType::lend_uffd || msg.type == RuntimeMsgType::module_file;
		reply.type = one_shot ? msg.type : RuntimeMsgType::attached;
		reply.status = EDQUOT;
		a->send(reply);
		drop(a);
		return;
	}
	if (msg.type == RuntimeMsgType::lend_uffd || msg.type == RuntimeMsgType::module_file) {
		// The connection's only request: answered, then closed.
		reply.type = msg.type;
		UniqueFd file;
		if (msg.type == RuntimeMsgType::lend_uffd)
			reply.status = check_lend(*a, msg, fds);
		else
			reply.status = module_file_for(*a, msg, fds, &file);
		const int answer = msg.type == RuntimeMsgType::lend_uffd ? uffd_device_.get() : file.get();
		if (reply.status == 0)
			a->send(reply, {answer});
		else
			a->send(reply);
		drop(a);
		return;
	}
	if (msg.type == RuntimeMsgType::attach && hooks_.module_file) {
		reply.type = RuntimeMsgType::attached;
		reply.status = EOPNOTSUPP; // windows are the module's here
		a->send(reply);
		drop(a);
		return;
	}
	if (msg.type != RuntimeMsgType::attach && (!fds.empty() || !a->ino || msg.ino != a->ino)) {
		refuse(msg.type == RuntimeMsgType::object || msg.type == RuntimeMsgType::ready ? msg.type
												: RuntimeMsgType::attached);
		return;
	}
	switch (msg.type) {
	case RuntimeMsgType::attach: {
		reply.type = RuntimeMsgType::attached;
		reply.status = handle_attach(*a, msg, fds);
		std::lock_guard<std::mutex> guard(lock_);
		View *v = reply.status == 0 ? view_locked(a->ino, &reply.status) : nullptr;
		if (v && a->send(reply, {v->fd.get()}) == 0)
			return;
		if (!v)
			a->send(reply);
		drop_locked(a); // a refused attach ends the connection
		return;
	}
	case RuntimeMsgType::object: {
		reply.type = RuntimeMsgType::object;
		UniqueFd object;
		reply.status = attacher_object_fd(*a, msg.a, &object);
		reply.a = msg.a;
		if ((reply.status == 0 ? a->send(reply, {object.get()}) : a->send(reply)) != 0)
			drop(a);
		return;
	}
	case RuntimeMsgType::ready: {
		reply.type = RuntimeMsgType::ready;
		std::lock_guard<std::mutex> guard(lock_);
		View *v = view_locked(a->ino, &reply.status);
		if (v && published_seq(v->page) != msg.a)
			reply.status = EAGAIN;
		if (reply.status == 0)
			a->live = true;
		if (a->send(reply) != 0)
			drop_locked(a);
		return;
	}
	case RuntimeMsgType::done: {
		std::lock_guard<std::mutex> guard(lock_);
		a->answered_cookie = std::max(a->answered_cookie, msg.cookie);
		a->answered_status = msg.status;
		answered_.notify_all();
		return;
	}
	default:
		refuse(RuntimeMsgType::attached);
		return;
	}
}

// The attach's descriptors, each what it claims to be (see runtime_peer.hpp).
int RuntimeService::check_attach(Attacher &a, const RuntimeMessage &msg, std::vector<UniqueFd> &fds)
{
	if (a.ino || fds.size() != kAttachFds || !msg.ino || !msg.b || msg.a + msg.b < msg.a)
		return EINVAL;
	if (int err = check_userfaultfd(fds[kAttachUffd].get()))
		return err;
	if (int err = check_ticket(fds[kAttachTicket].get()))
		return err;
	const dev_t dev = hooks_.mount_device ? hooks_.mount_device() : 0;
	if (int err = check_region_fd(fds[kAttachRegion].get(), dev, msg.ino, &a.access))
		return err;
	void *ticket = mmap(nullptr, sizeof(RuntimeTicket), PROT_READ, MAP_SHARED, fds[kAttachTicket].get(), 0);
	if (ticket == MAP_FAILED)
		return EINVAL;
	a.ticket = static_cast<RuntimeTicket *>(ticket);
	a.uffd = std::move(fds[kAttachUffd]);
	a.base = msg.a;
	a.size = msg.b;
	return 0;
}

// A request that is a fresh connection's only one (lend_uffd, module_file),
// with the peer's descriptor of the region (as an attach's): 0 and that
// descriptor's access mode in *mode, or errno.
int RuntimeService::check_one_shot(const Attacher &a, const RuntimeMessage &msg, const std::vector<UniqueFd> &fds,
				   int *mode)
{
	if (a.ino || fds.size() != 1 || !msg.ino)
		return EINVAL;
	const dev_t dev = hooks_.mount_device ? hooks_.mount_device() : 0;
	return check_region_fd(fds[0].get(), dev, msg.ino, mode);
}

// lend_uffd: ENODEV if the daemon lends no device.
int RuntimeService::check_lend(const Attacher &a, const RuntimeMessage &msg, const std::vector<UniqueFd> &fds)
{
	int mode = O_RDONLY;
	if (int err = check_one_shot(a, msg, fds, &mode))
		return err;
	return uffd_device_ ? 0 : ENODEV;
}

// module_file: the module file, opened with the descriptor's access mode.
int RuntimeService::module_file_for(const Attacher &a, const RuntimeMessage &msg, const std::vector<UniqueFd> &fds,
				    UniqueFd *file)
{
	if (!hooks_.module_file)
		return EOPNOTSUPP;
	int mode = O_RDONLY;
	if (int err = check_one_shot(a, msg, fds, &mode))
		return err;
	return hooks_.module_file(msg.ino, mode, file);
}

int RuntimeService::handle_attach(Attacher &a, const RuntimeMessage &msg, std::vector<UniqueFd> &fds)
{
	if (int err = check_attach(a, msg, fds))
		return err;
	{
		// The attacher holds the view from here (drop releases it).
		std::lock_guard<std::mutex> guard(lock_);
		const bool existed = views_.count(msg.ino) != 0;
		if (!existed) {
			if (int err = create_view_locked(msg.ino))
				return err;
		}
		a.ino = msg.ino;
		int err = 0;
		if (existed)
			return view_locked(msg.ino, &err) ? 0 : err;
	}
	return hooks_.republish(msg.ino);
}

// A descriptor of the object with no more access than the attacher's
// region fd had.
int RuntimeService::attacher_object_fd(const Attacher &a, uint64_t object_id, UniqueFd *fd)
{
	UniqueFd object;
	if (int err = hooks_.object_fd(a.ino, object_id, &object))
		return err;
	return descriptor_with_access(object.get(), a.access, fd);
}

RuntimeService::View *RuntimeService::view_locked(uint64_t ino, int *err)
{
	auto it = views_.find(ino);
	if (it == views_.end()) {
		*err = ENOENT;
		return nullptr;
	}
	if (it->second->page->flags & kPublishedOrphaned) {
		*err = EINVAL;
		return nullptr;
	}
	return it->second.get();
}

// The daemon maps the page writable, then seals the memfd against writes
// through any other mapping or descriptor and against resizing; clients get
// a read-only descriptor of it.
int RuntimeService::create_view_locked(uint64_t ino)
{
	auto v = std::make_unique<View>();
	UniqueFd memfd(memfd_create("msharefs-layout", MFD_CLOEXEC | MFD_ALLOW_SEALING));
	if (!memfd || ftruncate(memfd.get(), kPublishedLayoutBytes) < 0)
		return errno;
	void *p = mmap(nullptr, kPublishedLayoutBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
	if (p == MAP_FAILED)
		return errno;
	v->page = static_cast<PublishedLayoutPage *>(p);
	if (fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0)
		return errno;
	v->fd.reset(open(fd_path(memfd.get()).c_str(), O_RDONLY | O_CLOEXEC));
	if (!v->fd)
		return errno;
	views_[ino] = std::move(v);
	return 0;
}

// Drops the region's view once no client is attached or attaching.
void RuntimeService::release_view_locked(uint64_t ino)
{
	for (const auto &[fd, other] : by_socket_)
		if (other->ino == ino)
			return;
	views_.erase(ino);
}

int RuntimeService::publish(uint64_t ino, uint64_t region_size, std::span<const Mapping> mappings,
			    uint32_t flags, int32_t lock_holder, FillingRange filling)
{
	std::lock_guard<std::mutex> guard(lock_);
	auto it = views_.find(ino);
	if (it == views_.end())
		return 0; // no attacher reads it: the first attach publishes
	return publish_layout(it->second->page, region_size, mappings, flags, lock_holder, filling);
}

// Caller holds lock_.
std::vector<std::shared_ptr<RuntimeService::Attacher>> RuntimeService::live_attachers_locked(uint64_t ino)
{
	std::vector<std::shared_ptr<Attacher>> list;
	for (auto &[fd, a] : by_socket_)
		if (a->ino == ino && a->live)
			list.push_back(a);
	return list;
}

std::vector<int32_t> RuntimeService::attacher_pids(uint64_t ino)
{
	std::lock_guard<std::mutex> guard(lock_);
	std::vector<int32_t> pids;
	for (const auto &a : live_attachers_locked(ino))
		pids.push_back(a->tgid);
	return pids;
}

// Asks every attacher in the list to recompose, then waits for all of them:
// they recompose in parallel. One that has not answered is given up on as
// soon as one of its threads is seen stopped (EBUSY); one that does not answer in time, at the
// deadline (ETIMEDOUT). Both are logged.
int RuntimeService::sync_all(const std::vector<std::shared_ptr<Attacher>> &list)
{
	if (list.empty())
		return 0;
	uint64_t cookie;
	{
		std::lock_guard<std::mutex> guard(lock_);
		cookie = next_cookie_++;
	}
	RuntimeMessage msg{};
	msg.type = RuntimeMsgType::sync;
	msg.cookie = cookie;
	std::vector<std::shared_ptr<Attacher>> asked;
	for (const auto &a : list) {
		msg.ino = a->ino;
		if (a->send(msg) == 0)
			asked.push_back(a);
		else
			drop(a); // its socket is full: it does not read
	}
	const auto deadline = std::chrono::steady_clock::now() + kAnswerTimeout;
	int result = 0;
	std::unique_lock<std::mutex> guard(lock_);
	for (const auto &a : asked) {
		auto answered = [&] { return a->gone || a->answered_cookie >= cookie; };
		while (!answered_.wait_for(guard, kStoppedPoll, answered)) {
			guard.unlock();
			const bool stopped = some_thread_stopped(a->tgid);
			guard.lock();
			if (answered())
				break;
			if (stopped || std::chrono::steady_clock::now() >= deadline) {
				fprintf(stderr, "msharefsd: attacher %d of region %lu %s\n", a->tgid,
					static_cast<unsigned long>(a->ino),
					stopped ? "is stopped: its window cannot follow the change"
						: "did not recompose its window in time");
				if (!result)
					result = stopped ? EBUSY : ETIMEDOUT;
				if (!stopped)
					drop_locked(a); // it does not read: not waited for again
				break;
			}
		}
		// An attacher that could not recompose (no memory to read the
		// layout) no longer follows the region: dropped, it attaches
		// again and composes from what is published then.
		if (!a->gone && a->answered_cookie >= cookie && a->answered_status > 0) {
			fprintf(stderr, "msharefsd: attacher %d of region %lu could not recompose its window: %s\n",
				a->tgid, static_cast<unsigned long>(a->ino), strerror(a->answered_status));
			if (!result)
				result = a->answered_status;
			drop_locked(a);
		}
	}
	return result;
}

int RuntimeService::sync_attachers(uint64_t ino)
{
	std::vector<std::shared_ptr<Attacher>> list;
	{
		std::lock_guard<std::mutex> guard(lock_);
		list = live_attachers_locked(ino);
	}
	return sync_all(list);
}

bool RuntimeService::has_stopped_attacher(uint64_t ino)
{
	std::vector<int32_t> pids = attacher_pids(ino);
	return std::any_of(pids.begin(), pids.end(), process_stopped);
}

void RuntimeService::wait_ticket(const Attacher &a, uint64_t seq, bool unless_stopped)
{
	const auto deadline = std::chrono::steady_clock::now() + kTicketTimeout;
	for (unsigned spins = 1;; spins++) {
		const uint64_t busy = __atomic_load_n(&a.ticket->busy_seq, __ATOMIC_ACQUIRE);
		if (busy == 0 || busy - 1 >= seq)
			return;
		if (std::chrono::steady_clock::now() > deadline)
			return;
		// Every ~5 ms: a stopped attacher that must recompose anyway fails
		// the change in sync_all (which takes it back); no use waiting.
		if (unless_stopped && spins % 250 == 0 && some_thread_stopped(a.tgid))
			return;
		usleep(20);
	}
}

int RuntimeService::apply_protection(uint64_t ino, uint64_t off, uint64_t size)
{
	PublishedState state;
	std::vector<std::shared_ptr<Attacher>> list;
	{
		std::lock_guard<std::mutex> guard(lock_);
		auto it = views_.find(ino);
		if (it == views_.end())
			return 0;
		state = read_published(it->second->page);
		list = live_attachers_locked(ino);
	}
	struct Piece {
		uint64_t off, len;
		const PublishedMapping *m;
		bool capable;
	};
	std::vector<Piece> pieces;
	for (const PublishedMapping &m : state.mappings) {
		const uint64_t start = std::max(off, m.region_offset);
		const uint64_t end = std::min(off + size, m.region_offset + m.size);
		if (start >= end)
			continue;
		UniqueFd object;
		const bool capable = hooks_.object_fd(ino, m.object_id, &object) == 0 && uffd_capable_file(object.get());
		pieces.push_back({start, end - start, &m, capable});
	}
	// Attachers are independent (each its own userfaultfd and mm): they are
	// write-protected in parallel, one task each.
	std::mutex to_sync_lock;
	std::vector<std::shared_ptr<Attacher>> to_sync;
	tbb::parallel_for(size_t{0}, list.size(), [&](size_t i) {
		const auto &a = list[i];
		bool needs_sync = false;
		for (const Piece &p : pieces) {
			if (!p.capable || !p.m->prot) {
				needs_sync = true;
				if (!p.capable)
					continue;
			}
			const bool wp = !published_writable(*p.m, state.flags, state.lock_holder, a->tgid);
			const int err = uffd_write_protect(a->uffd.get(), a->base + p.off, p.len, wp);
			if (err && err != ESRCH && err != ENOENT)
				fprintf(stderr, "msharefsd: write-protecting attacher %d: %s\n", a->tgid,
					strerror(err));
		}
		wait_ticket(*a, state.seq, needs_sync);
		if (needs_sync) {
			std::lock_guard<std::mutex> guard(to_sync_lock);
			to_sync.push_back(a);
		}
	});
	return sync_all(to_sync);
}

void RuntimeService::forget_region(uint64_t ino)
{
	std::vector<std::shared_ptr<Attacher>> list;
	{
		std::lock_guard<std::mutex> guard(lock_);
		views_.erase(ino);
		for (auto &[fd, a] : by_socket_)
			if (a->ino == ino)
				list.push_back(a);
	}
	for (auto &a : list)
		drop(a);
}

} // namespace msharefs
