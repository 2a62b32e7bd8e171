// The per-process runtime: the userfaultfd, the window table, the control
// thread that answers the daemon, and fork.
#include "runtime.hpp"

#include "msharefs/uffd.hpp"

#include <linux/msharefs.h>

#include <new>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <memory>
#include <linux/magic.h>
#include <link.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

namespace msharefs::runtime {

namespace {

constexpr uint64_t kFeatures = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MISSING_HUGETLBFS |
			       UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MINOR_HUGETLBFS |
			       UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_THREAD_ID |
			       UFFD_FEATURE_EXACT_ADDRESS | UFFD_FEATURE_PAGEFAULT_FLAG_WP |
			       UFFD_FEATURE_EVENT_REMAP; // registration moves with mremap (Window::install)

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

// A userfaultfd that takes kernel-mode faults too where the process may
// have one: from the system call (CAP_SYS_PTRACE, or
// vm.unprivileged_userfaultfd = 1), else from /dev/userfaultfd opened here,
// else from the device the daemon lends (*lent, asked for by borrow only
// then). Otherwise it is for user-mode faults only: a system call that
// touches a window page not yet mapped fails EFAULT instead of waiting for
// the handler.
int open_userfaultfd(UniqueFd *lent, const std::function<int(UniqueFd *)> &borrow)
{
	constexpr int kFlags = O_CLOEXEC | O_NONBLOCK;
	UniqueFd fd(static_cast<int>(syscall(SYS_userfaultfd, kFlags)));
	if (!fd) {
		UniqueFd dev(open(kUserfaultfdDevice, O_RDWR | O_CLOEXEC));
		if (dev)
			fd.reset(ioctl(dev.get(), USERFAULTFD_IOC_NEW, kFlags));
	}
	if (!fd && (*lent || borrow(lent) == 0))
		fd.reset(ioctl(lent->get(), USERFAULTFD_IOC_NEW, kFlags));
	if (!fd)
		fd.reset(static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)));
	if (!fd)
		return -1;
	uffdio_api api{};
	api.api = UFFD_API;
	api.features = kFeatures;
	if (ioctl(fd.get(), UFFDIO_API, &api) < 0)
		return -1;
	return fd.release();
}

// Runs on the faulting thread: queues the fault the handler decided on to
// this very thread, which the kernel allows with a fault code and address.
void on_fault_signal(int, siginfo_t *si, void *)
{
	if (si->si_code != SI_QUEUE || si->si_pid != getpid())
		return;
	siginfo_t fault{};
	fault.si_signo = si->si_errno >> 8;
	fault.si_code = si->si_errno & 0xff;
	fault.si_addr = si->si_value.sival_ptr;
	syscall(SYS_rt_tgsigqueueinfo, getpid(), static_cast<pid_t>(syscall(SYS_gettid)), fault.si_signo,
		&fault);
}

void prepare_fork() { Runtime::get().before_fork(); }
void parent_after_fork() { Runtime::get().after_fork_parent(); }
void child_after_fork() { Runtime::get().after_fork_child(); }

} // namespace

int Runtime::fault_signal()
{
	static const int sig = [] {
		const char *env = getenv("MSHAREFS_FAULT_SIGNAL");
		const int n = env ? atoi(env) : 0;
		return n >= SIGRTMIN && n <= SIGRTMAX ? n : SIGRTMAX - 1;
	}();
	return sig;
}

Runtime &Runtime::get()
{
	static Runtime *rt = [] {
		auto *r = new Runtime();
		pthread_atfork(prepare_fork, parent_after_fork, child_after_fork);
		return r;
	}();
	return *rt;
}

namespace {

// The runtime's two threads run on stacks of its own, which are part of
// the library's zero-initialised data: below a guard page each, in the
// mapping the dynamic loader made for the library, among the loader's
// own, so that they add no mapping among the program's. A child of fork()
// inherits them unused, since its parent's threads do not exist there, and
// starts its own threads on them. Stacks from glibc would be reused from
// its cache in the child, and that reuse binds a symbol of the dynamic
// loader lazily, reading the executable's symbol tables into page tables
// of every child. The threads touch only the top of their stacks.
constexpr size_t kRuntimeStackBytes = 64 << 10;
constexpr size_t kStackGuardBytes = 4096;
constexpr int kRuntimeThreads = 2;
constexpr size_t kStackSlotBytes = kStackGuardBytes + kRuntimeStackBytes;

alignas(kStackGuardBytes) char runtime_stack_area[kRuntimeThreads * kStackSlotBytes];
// Whether the guard pages are in place (the first start), and whether the
// stacks may be used: not in a child forked on one of them.
bool runtime_stacks_guarded;
bool runtime_stacks_usable = true;

// glibc places a thread's static TLS at the top of the stack it is given.
// The stacks are used only if the static TLS of the modules loaded leaves
// most of them to the thread (48 KiB); a program with more gets glibc's.
constexpr size_t kRuntimeStackUse = 48 << 10;

// Counted once, by the first process: reading a module's program headers
// reads the first page of its file, which a forked child would otherwise
// map into page tables of its own for every module loaded.
size_t static_tls_bytes()
{
	static size_t counted = SIZE_MAX;
	if (counted != SIZE_MAX)
		return counted;
	size_t total = 0;
	dl_iterate_phdr(
		[](dl_phdr_info *info, size_t, void *data) {
			for (int i = 0; i < info->dlpi_phnum; i++) {
				const ElfW(Phdr) &ph = info->dlpi_phdr[i];
				if (ph.p_type == PT_TLS)
					*static_cast<size_t *>(data) += ph.p_memsz + (ph.p_align ? ph.p_align : 1);
			}
			return 0;
		},
		&total);
	counted = total;
	return total;
}

// Whether the calling thread runs on one of the runtime's stacks.
bool on_runtime_stack()
{
	const char here = 0;
	return &here >= runtime_stack_area && &here < runtime_stack_area + sizeof(runtime_stack_area);
}

// The lowest address of stack slot, its guard page made on first use.
// nullptr if the stacks cannot be used. Called under the runtime's lock.
char *runtime_stack(int slot)
{
	if (!runtime_stacks_usable)
		return nullptr;
	if (static_tls_bytes() + kRuntimeStackUse > kRuntimeStackBytes) {
		runtime_stacks_usable = false;
		return nullptr;
	}
	if (!runtime_stacks_guarded) {
		for (int i = 0; i < kRuntimeThreads; i++)
			if (raw_mprotect(runtime_stack_area + i * kStackSlotBytes, kStackGuardBytes, PROT_NONE) < 0)
				return nullptr;
		runtime_stacks_guarded = true;
	}
	return runtime_stack_area + slot * kStackSlotBytes + kStackGuardBytes;
}

void *run_thread_body(void *arg)
{
	std::unique_ptr<std::function<void()>> body(static_cast<std::function<void()> *>(arg));
	(*body)();
	return nullptr;
}

// Starts a detached thread running body on stack slot, or on a stack from
// glibc if that cannot be (no memory for the stacks, or a static TLS too
// large for them). The thread blocks every signal: the program's handlers
// run on its own threads only, as they would without the runtime (a
// postmaster that forks in a handler forks from one of its threads). 0 or
// errno.
int start_runtime_thread(int slot, std::function<void()> body)
{
	auto *arg = new std::function<void()>(std::move(body));
	sigset_t all;
	sigfillset(&all);
	int err = EINVAL;
	for (bool own_stack : {true, false}) {
		char *stack = own_stack ? runtime_stack(slot) : nullptr;
		if (own_stack && !stack)
			continue;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		if (stack ? pthread_attr_setstack(&attr, stack, kRuntimeStackBytes) != 0
			  : pthread_attr_setstacksize(&attr, kRuntimeStackBytes + static_tls_bytes()) != 0) {
			pthread_attr_destroy(&attr);
			continue;
		}
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setsigmask_np(&attr, &all);
		pthread_t thread;
		err = pthread_create(&thread, &attr, run_thread_body, arg);
		pthread_attr_destroy(&attr);
		if (err != EINVAL)
			break;
	}
	if (err)
		delete arg;
	return err;
}

} // namespace

int Runtime::start_locked(Window *first)
{
	if (uffd_)
		return 0;
	struct sigaction sa {};
	sa.sa_sigaction = on_fault_signal;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(fault_signal(), &sa, nullptr);
	UniqueFd uffd(open_userfaultfd(&uffd_device_, [&](UniqueFd *dev) {
		return first ? first->borrow_uffd_device(dev) : ENODEV;
	}));
	if (!uffd)
		return errno ? errno : ENOSYS;
	// Sealed against shrinking: the daemon maps it and must never SIGBUS.
	ticket_fd_.reset(static_cast<int>(
		syscall(SYS_memfd_create, "msharefs-ticket", MFD_CLOEXEC | MFD_ALLOW_SEALING)));
	if (!ticket_fd_ || ftruncate(ticket_fd_.get(), sizeof(RuntimeTicket)) < 0 ||
	    fcntl(ticket_fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return errno;
	void *t = raw_mmap(nullptr, sizeof(RuntimeTicket), PROT_READ | PROT_WRITE, MAP_SHARED, ticket_fd_.get(), 0);
	if (t == MAP_FAILED)
		return errno;
	ticket_ = static_cast<RuntimeTicket *>(t);
	stop_.reset(eventfd(0, EFD_CLOEXEC));
	control_epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
	if (!stop_ || !control_epoll_)
		return errno;
	epoll_event ev{};
	ev.events = EPOLLIN;
	ev.data.u64 = 0;
	epoll_ctl(control_epoll_.get(), EPOLL_CTL_ADD, stop_.get(), &ev);
	uffd_ = std::move(uffd);
	tgid_ = getpid();
	const int uffd_fd = uffd_.get();
	const int stop_fd = stop_.get();
	if (int err = start_runtime_thread(0, [this, uffd_fd, stop_fd] { FaultHandler(*this).run(uffd_fd, stop_fd); }))
		return err;
	if (int err = start_runtime_thread(1, [this] { control_loop(); }))
		return err;
	return 0;
}

std::shared_ptr<Window> Runtime::window_at(uint64_t addr)
{
	std::shared_lock<std::shared_mutex> guard(windows_lock_);
	for (auto &w : windows_)
		if (w->contains(addr))
			return w;
	return nullptr;
}

bool Runtime::touches_window(const void *addr, size_t len)
{
	const auto start = reinterpret_cast<uint64_t>(addr);
	std::shared_lock<std::shared_mutex> guard(windows_lock_);
	return std::any_of(windows_.begin(), windows_.end(), [&](const auto &w) {
		return start < w->base() + w->size() && w->base() < start + len;
	});
}

int Runtime::unmap(void *addr, size_t len)
{
	const auto start = reinterpret_cast<uint64_t>(addr);
	std::vector<std::shared_ptr<Window>> whole;
	{
		std::unique_lock<std::shared_mutex> guard(windows_lock_);
		for (auto &w : windows_) {
			if (!(start < w->base() + w->size() && w->base() < start + len))
				continue;
			if (start > w->base() || start + len < w->base() + w->size()) {
				errno = EINVAL; // a window goes whole or not at all
				return -1;
			}
			whole.push_back(w);
		}
		if (whole.empty())
			return 0;
		std::erase_if(windows_, [&](const auto &w) {
			return std::find(whole.begin(), whole.end(), w) != whole.end();
		});
	}
	for (auto &w : whole) {
		if (w->socket() >= 0)
			epoll_ctl(control_epoll_.get(), EPOLL_CTL_DEL, w->socket(), nullptr);
		w->detach();
	}
	raw_munmap(addr, len);
	return 1;
}

void *Runtime::map_window(void *addr, size_t len, int prot, int flags, int fd, off_t off, bool *handled)
{
	*handled = false;
	if (daemon_gone(fd)) {
		*handled = true;
		errno = ENOTCONN;
		return MAP_FAILED;
	}
	struct statfs sfs {};
	if (fstatfs(fd, &sfs) < 0 || static_cast<unsigned long>(sfs.f_type) != FUSE_SUPER_MAGIC)
		return nullptr;
	msharefs_runtime_info info{};
	if (ioctl(fd, MSHAREFS_IOC_RUNTIME, &info) < 0)
		return nullptr; // not msharefs, or a daemon without the runtime
	*handled = true;
	auto fail = [](int err) {
		errno = err;
		return MAP_FAILED;
	};
	mshare_info geo{};
	if (ioctl(fd, MSHAREFS_GET_SIZE, &geo) < 0)
		return fail(errno == ENOTTY ? ENODEV : errno);
	const int type = flags & MAP_TYPE;
	if (type != MAP_SHARED && type != MAP_SHARED_VALIDATE)
		return fail(EINVAL);
	if (len != geo.size || off != 0 || !info.alignment)
		return fail(EINVAL);
	const int mode = fcntl(fd, F_GETFL) & O_ACCMODE;
	if (mode == O_WRONLY || ((prot & PROT_WRITE) && mode != O_RDWR))
		return fail(EACCES);
	const auto want = reinterpret_cast<uint64_t>(addr);
	if ((flags & MAP_FIXED) && want % info.alignment)
		return fail(EINVAL);
	if ((flags & MAP_FIXED) && touches_window(addr, len) && unmap(addr, len) < 0)
		return MAP_FAILED;
	if (info.flags & (kRuntimeModuleFiles | kRuntimeKernelWindows))
		return map_kernel_window(addr, len, prot, flags, fd, info, want ? want : geo.start);

	// The reservation: holes of the layout stay PROT_NONE.
	void *base = (flags & MAP_FIXED) ? raw_mmap(addr, len, PROT_NONE, kReservation | MAP_FIXED, -1, 0)
					 : reserve_aligned(want ? want : geo.start, len, info.alignment);
	if (base == MAP_FAILED)
		return fail(errno);

	std::lock_guard<std::mutex> guard(lock_);
	UniqueFd region(fcntl(fd, F_DUPFD_CLOEXEC, 0));
	if (!region) {
		const int err = errno;
		raw_munmap(base, len);
		return fail(err);
	}
	auto w = std::make_shared<Window>(reinterpret_cast<uint64_t>(base), len, prot, info.ino, std::move(region),
					  info.socket_path);
	int err = start_locked(w.get());
	if (err) {
		raw_munmap(base, len);
		return fail(err);
	}
	{
		std::unique_lock<std::shared_mutex> wg(windows_lock_);
		windows_.push_back(w);
	}
	err = w->attach(uffd_.get(), ticket_fd_.get());
	if (err) {
		{
			std::unique_lock<std::shared_mutex> wg(windows_lock_);
			std::erase(windows_, w);
		}
		w->detach();
		return fail(err);
	}
	add_to_control(w);
	if (const dev_t dev = cached_device(fd)) {
		std::unique_lock<std::shared_mutex> wg(windows_lock_);
		daemon_sockets_[dev] = info.socket_path;
	}
	return base;
}

// PROT_NONE address space for a window of len bytes: at hint if it is
// aligned and free, else anywhere aligned to align. MAP_FAILED if none.
void *Runtime::reserve_aligned(uint64_t hint, size_t len, uint64_t align)
{
	if (hint && hint % align == 0) {
		void *base = raw_mmap(reinterpret_cast<void *>(hint), len, PROT_NONE,
				      kReservation | MAP_FIXED_NOREPLACE, -1, 0);
		if (base != MAP_FAILED)
			return base;
	}
	void *area = raw_mmap(nullptr, len + align, PROT_NONE, kReservation, -1, 0);
	if (area == MAP_FAILED) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	const uint64_t a = reinterpret_cast<uint64_t>(area);
	const uint64_t aligned = (a + align - 1) & ~(align - 1);
	if (aligned > a)
		raw_munmap(area, aligned - a);
	if (const uint64_t tail = a + len + align - (aligned + len))
		raw_munmap(reinterpret_cast<void *>(aligned + len), tail);
	return reinterpret_cast<void *>(aligned);
}

// datapath=kmod: the window is the region file (passthrough) or, without
// FUSE passthrough, the module's file from the daemon. MAP_FIXED goes to
// the kernel as asked (a refusal leaves what was there); otherwise it is
// mapped over an aligned reservation. The kernel keeps it from there:
// munmap, mprotect, mremap and fork are the module's.
void *Runtime::map_kernel_window(void *addr, size_t len, int prot, int flags, int fd,
				 const msharefs_runtime_info &info, uint64_t hint)
{
	UniqueFd module;
	if (info.flags & kRuntimeModuleFiles) {
		if (int err = Window::module_file(info.socket_path, info.ino, fd, &module)) {
			errno = err;
			return MAP_FAILED;
		}
	}
	const int file = module ? module.get() : fd;
	if (flags & MAP_FIXED)
		return raw_mmap(addr, len, prot, MAP_SHARED | MAP_FIXED, file, 0);
	void *base = reserve_aligned(hint, len, info.alignment);
	if (base == MAP_FAILED)
		return base;
	void *p = raw_mmap(base, len, prot, MAP_SHARED | MAP_FIXED, file, 0);
	if (p == MAP_FAILED) {
		const int err = errno;
		raw_munmap(base, len);
		errno = err;
	}
	return p;
}

// The device of fd's file from the kernel's cache: no request reaches a
// FUSE daemon (which may be gone). 0 if unknown.
dev_t Runtime::cached_device(int fd)
{
	struct statx stx {};
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE, &stx) < 0)
		return 0;
	return makedev(stx.stx_dev_major, stx.stx_dev_minor);
}

bool Runtime::daemon_gone(int fd)
{
	{
		// Every mmap and msharefs ioctl of the process asks: most have
		// attached nothing, and need no system call to know.
		std::shared_lock<std::shared_mutex> guard(windows_lock_);
		if (daemon_sockets_.empty())
			return false;
	}
	const dev_t dev = cached_device(fd);
	if (!dev)
		return false;
	std::string socket_name;
	{
		std::shared_lock<std::shared_mutex> guard(windows_lock_);
		auto it = daemon_sockets_.find(dev);
		if (it == daemon_sockets_.end())
			return false;
		socket_name = it->second;
	}
	UniqueFd probe(connect_runtime_socket(socket_name));
	return !probe;
}

void Runtime::add_to_control(const std::shared_ptr<Window> &w)
{
	epoll_event ev{};
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.u64 = static_cast<uint64_t>(w->socket()) + 1;
	epoll_ctl(control_epoll_.get(), EPOLL_CTL_ADD, w->socket(), &ev);
}

// Answers the daemon's requests; relinks windows whose daemon went away
// once a daemon serves the mount again.
void Runtime::control_loop()
{
	for (;;) {
		epoll_event events[16];
		bool any_unlinked = false;
		{
			std::shared_lock<std::shared_mutex> guard(windows_lock_);
			any_unlinked = std::any_of(windows_.begin(), windows_.end(),
						   [](const auto &w) { return !w->linked(); });
		}
		const int n = epoll_wait(control_epoll_.get(), events, 16, any_unlinked ? 500 : -1);
		if (n < 0 && errno != EINTR)
			return;
		for (int i = 0; i < n; i++) {
			if (events[i].data.u64 == 0)
				return;
			const int sock = static_cast<int>(events[i].data.u64 - 1);
			std::shared_ptr<Window> w;
			{
				std::shared_lock<std::shared_mutex> guard(windows_lock_);
				for (auto &cand : windows_)
					if (cand->socket() == sock)
						w = cand;
			}
			if (!w) {
				epoll_ctl(control_epoll_.get(), EPOLL_CTL_DEL, sock, nullptr);
				continue;
			}
			RuntimeMessage msg{};
			int err = recv_runtime_message(sock, &msg);
			if (!err && msg.type == RuntimeMsgType::sync)
				err = w->answer_sync(msg.cookie);
			if (err == ENOTCONN || err == ECONNRESET || err == EPROTO) {
				epoll_ctl(control_epoll_.get(), EPOLL_CTL_DEL, sock, nullptr);
				w->lose_daemon();
			}
		}
		if (!any_unlinked)
			continue;
		// A restarted daemon publishes afresh: attach again.
		std::vector<std::shared_ptr<Window>> unlinked;
		{
			std::shared_lock<std::shared_mutex> guard(windows_lock_);
			for (auto &w : windows_)
				if (!w->linked())
					unlinked.push_back(w);
		}
		std::lock_guard<std::mutex> guard(lock_);
		for (auto &w : unlinked)
			if (w->attach(uffd_.get(), ticket_fd_.get()) == 0)
				add_to_control(w);
			else
				w->lose_daemon();
	}
}

// The windows' own locks first (see Window::lock_for_fork), then the lock
// the fault handler takes to find a window, then what the handler holds.
// windows_ loses a window to an unmap without lock_: the list is the one
// seen first, and a window unmapped meanwhile is locked and unlocked all
// the same.
void Runtime::before_fork()
{
	lock_.lock();
	{
		std::shared_lock<std::shared_mutex> guard(windows_lock_);
		forking_ = windows_;
	}
	for (auto &w : forking_)
		w->lock_for_fork();
	windows_lock_.lock();
	for (auto &w : forking_)
		w->lock_handler_state_for_fork();
}

void Runtime::after_fork_parent()
{
	for (auto &w : forking_)
		w->unlock_after_fork(false);
	forking_.clear();
	windows_lock_.unlock();
	lock_.unlock();
}

// The child has the windows' mappings but none of the runtime's threads,
// and its mappings are no longer registered: it becomes an attacher of its
// own, with its own userfaultfd.
void Runtime::after_fork_child()
{
	for (auto &w : forking_)
		w->unlock_after_fork(true);
	forking_.clear();
	// A write-locked rwlock records its owner's thread id, which the child
	// does not share: start from a fresh lock (the child has one thread).
	new (&windows_lock_) std::shared_mutex();
	lock_.unlock();
	if (!uffd_)
		return;
	// A fork taken on one of the runtime's stacks (nothing of the runtime
	// forks; kept safe all the same): the child's threads get glibc's.
	if (on_runtime_stack())
		runtime_stacks_usable = false;
	uffd_.reset();
	ticket_fd_.reset();
	if (ticket_)
		raw_munmap(ticket_, sizeof(RuntimeTicket));
	ticket_ = nullptr;
	stop_.reset();
	control_epoll_.reset();
	std::lock_guard<std::mutex> guard(lock_);
	if (int err = start_locked(windows_.empty() ? nullptr : windows_.front().get())) {
		fprintf(stderr, "msharefs: fork: the child's windows are not managed: %s\n", strerror(err));
		return;
	}
	// Attaching gives the window a layout view of its own; the inherited
	// ones go with it, as no reader is inside one (see LayoutViews).
	for (auto &w : windows_) {
		w->forget_link();
		if (int err = w->reregister(uffd_.get()))
			fprintf(stderr, "msharefs: fork: a window of the child is not managed: %s\n", strerror(err));
		if (w->attach(uffd_.get(), ticket_fd_.get()) == 0) {
			add_to_control(w);
		} else {
			w->lose_daemon();
		}
	}
}

} // namespace msharefs::runtime
