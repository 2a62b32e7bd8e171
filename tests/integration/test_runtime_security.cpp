// The runtime protocol for many users: every peer of the daemon's runtime
// socket is checked (the region descriptor it holds, its access, the type,
// size and seals of what it sends), the layout it gets is read-only and
// sealed, a client that stops reading is dropped without holding anyone up,
// non-root programs under libmshare-preload.so use the regions they may
// open, and their system calls reach window pages through a userfaultfd made
// from the /dev/userfaultfd the daemon lends them. Hostile clients speak the protocol directly (runtime_protocol.hpp).
#include "harness.hpp"

#include <msharefs/published_layout.hpp>
#include <msharefs/runtime_protocol.hpp>
#include <msharefs/uffd.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <grp.h>
#include <linux/fuse.h>
#include <mutex>
#include <thread>
#include <set>
#include <sstream>
#include <string>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace msharefs::test;
using msharefs::RuntimeMessage;
using msharefs::RuntimeMsgType;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kStart = 2 * kTiB;
constexpr uint64_t kSize = kGiB;
constexpr uid_t kNobody = 65534;
constexpr const char *kSecret = "TOP-SECRET-of-root";

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

// Exit codes of the children below.
constexpr int kNoUser = 100;

// Runs fn in a child that has become uid/gid `id` (no supplementary groups).
ChildResult as_user(uid_t id, const std::function<int()> &fn, int timeout_s = 30)
{
	return run_in_child(
		[&] {
			if (setgroups(0, nullptr) != 0 || setresgid(id, id, id) != 0 || setresuid(id, id, id) != 0)
				return kNoUser;
			return fn();
		},
		timeout_s);
}

// msharefsd started by this test under umask 000, as an administrator must
// today for non-root users to reach the runtime at all.
class OpenDaemon {
public:
	OpenDaemon()
	{
		const char *bin = getenv("MSHAREFSD");
		REQUIRE(bin);
		pid_ = fork();
		if (pid_ == 0) {
			umask(0);
			execl(bin, bin, "-f", "-o", "align=1G", "-o", "datapath=uffd", kMount, nullptr);
			_exit(127);
		}
		for (int i = 0; i < 500; i++) {
			struct stat st {};
			if (stat(path(MSHAREFS_INFO_NAME).c_str(), &st) == 0)
				return;
			usleep(10000);
		}
		FAIL("msharefsd under umask 000 did not come up");
	}
	~OpenDaemon()
	{
		if (umount2(kMount, 0) != 0)
			umount2(kMount, MNT_DETACH);
		if (!wait_gone(pid_, 20))
			kill(pid_, SIGKILL);
		waitpid(pid_, nullptr, 0);
	}
	pid_t pid() const { return pid_; }

private:
	pid_t pid_ = -1;
};

struct RuntimeInfo {
	uint64_t ino = 0;
	std::string socket;
};

RuntimeInfo runtime_info(int fd)
{
	msharefs_runtime_info info{};
	REQUIRE_MESSAGE(ioctl(fd, MSHAREFS_IOC_RUNTIME, &info) == 0, strerror(errno));
	return {info.ino, info.socket_path};
}

Fd userfaultfd_for_anyone()
{
	return Fd(static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)));
}

// A ticket as the runtime makes it: a memfd of `size` bytes, with `seals`.
Fd ticket(off_t size, int seals = F_SEAL_SHRINK)
{
	Fd fd(static_cast<int>(syscall(SYS_memfd_create, "ticket", MFD_CLOEXEC | MFD_ALLOW_SEALING)));
	if (!fd || ftruncate(fd.get(), size) < 0 || (seals && fcntl(fd.get(), F_ADD_SEALS, seals) < 0))
		return Fd();
	return fd;
}

// A client of the runtime socket speaking the protocol by hand. Replies
// are awaited 5 s at most: a daemon that does not answer fails the test.
class RawClient {
public:
	explicit RawClient(const std::string &socket) : sock_(msharefs::connect_runtime_socket(socket))
	{
		timeval tv{5, 0};
		if (sock_)
			setsockopt(sock_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	bool connected() const { return static_cast<bool>(sock_); }
	int sock() const { return sock_.get(); }

	// The reply's status, or -errno if no reply came (-ECONNRESET: the
	// daemon closed the connection).
	int attach(uint64_t ino, const std::vector<int> &fds, Fd *layout = nullptr)
	{
		RuntimeMessage msg{};
		msg.type = RuntimeMsgType::attach;
		msg.ino = ino;
		msg.a = kStart;
		msg.b = kSize;
		ino_ = ino;
		if (int err = msharefs::send_runtime_message(sock_.get(), msg, fds))
			return -err;
		std::vector<Fd> got;
		RuntimeMessage reply{};
		if (int err = msharefs::recv_runtime_message(sock_.get(), &reply, &got))
			return -err;
		if (layout && !got.empty())
			*layout = std::move(got[0]);
		return reply.status;
	}
	// The descriptor of one of the region's objects; status as attach.
	int object(uint64_t id, Fd *out)
	{
		RuntimeMessage msg{};
		msg.type = RuntimeMsgType::object;
		msg.ino = ino_;
		msg.a = id;
		if (int err = msharefs::send_runtime_message(sock_.get(), msg))
			return -err;
		for (;;) {
			std::vector<Fd> got;
			RuntimeMessage reply{};
			if (int err = msharefs::recv_runtime_message(sock_.get(), &reply, &got))
				return -err;
			if (reply.type == RuntimeMsgType::sync)
				continue;
			if (!got.empty())
				*out = std::move(got[0]);
			return reply.status;
		}
	}
	// True if the daemon has closed the connection (within 5 s).
	bool dropped()
	{
		RuntimeMessage msg{};
		int err;
		while ((err = msharefs::recv_runtime_message(sock_.get(), &msg)) == 0)
			;
		return err == ECONNRESET;
	}

private:
	Fd sock_;
	uint64_t ino_ = 0;
};

// The first object id of the region as its published layout names it.
uint64_t first_object(int layout_fd)
{
	void *p = mmap(nullptr, msharefs::kPublishedLayoutBytes, PROT_READ, MAP_SHARED, layout_fd, 0);
	REQUIRE(p != MAP_FAILED);
	const auto state = msharefs::read_published(static_cast<const msharefs::PublishedLayoutPage *>(p));
	munmap(p, msharefs::kPublishedLayoutBytes);
	REQUIRE(!state.mappings.empty());
	return state.mappings[0].object_id;
}

// A region of kSize at start with one anonymous mapping and kSecret at
// its start.
int region_with_secret(const std::string &name, mode_t mode, uint64_t start = kStart)
{
	int fd = create_region(name, start, kSize, mode);
	REQUIRE_MESSAGE(fd >= 0, name << ": " << strerror(errno));
	REQUIRE(fchmod(fd, mode) == 0);
	Window w(fd);
	REQUIRE(w);
	strcpy(w.get(), kSecret);
	return fd;
}

// The daemon's descriptors of published layouts (memfds "msharefs-layout").
size_t layout_descriptors(pid_t pid)
{
	const std::string dir = "/proc/" + std::to_string(pid) + "/fd/";
	size_t n = 0;
	DIR *d = opendir(dir.c_str());
	REQUIRE(d);
	while (dirent *de = readdir(d)) {
		char target[256] = {};
		if (de->d_name[0] != '.' && readlink((dir + de->d_name).c_str(), target, sizeof(target) - 1) > 0)
			n += strstr(target, "msharefs-layout") != nullptr;
	}
	closedir(d);
	return n;
}

// The descriptors of this process that are open on a file mapped inside
// [start, start+size): the window's objects.
std::vector<int> object_descriptors(uint64_t start, uint64_t size)
{
	std::set<std::pair<unsigned long, unsigned long>> mapped; // (dev, ino)
	std::ifstream maps("/proc/self/maps");
	std::string line;
	while (std::getline(maps, line)) {
		unsigned long lo = 0, hi = 0, off = 0, ino = 0;
		unsigned maj = 0, min = 0;
		char perms[8];
		if (sscanf(line.c_str(), "%lx-%lx %7s %lx %x:%x %lu", &lo, &hi, perms, &off, &maj, &min, &ino) == 7 &&
		    ino && lo < start + size && hi > start)
			mapped.insert({makedev(maj, min), ino});
	}
	std::vector<int> fds;
	DIR *d = opendir("/proc/self/fd");
	while (dirent *de = readdir(d)) {
		const int fd = atoi(de->d_name);
		struct stat st {};
		if (de->d_name[0] != '.' && fd != dirfd(d) && fstat(fd, &st) == 0 &&
		    mapped.count({st.st_dev, st.st_ino}))
			fds.push_back(fd);
	}
	closedir(d);
	return fds;
}

// A FUSE filesystem served by the test itself: one file, "f", and every
// FLUSH left unanswered, as a hostile client could serve its own.
class SilentFuse {
public:
	static constexpr const char *kDir = "/dev/shm/silent-fuse";
	SilentFuse()
	{
		mkdir(kDir, 0755);
		dev_.reset(open("/dev/fuse", O_RDWR | O_CLOEXEC));
		REQUIRE(dev_.get() >= 0);
		const std::string opts = "fd=" + std::to_string(dev_.get()) +
					 ",rootmode=40000,user_id=0,group_id=0,allow_other";
		REQUIRE_MESSAGE(mount("silent", kDir, "fuse.silent", MS_NOSUID | MS_NODEV, opts.c_str()) == 0,
				strerror(errno));
		server_ = std::thread([this] { serve(); });
		struct stat st {};
		REQUIRE(stat(kDir, &st) == 0); // answered by the server (INIT, then GETATTR)
		conn_ = minor(st.st_dev);
		// The connection's abort file (fusectl, mounted in this namespace).
		mkdir("/sys/fs/fuse", 0755);
		mkdir("/sys/fs/fuse/connections", 0755);
		mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, nullptr);
	}
	~SilentFuse() { abort(); }
	// Ends the connection: every request waiting on it fails.
	void abort()
	{
		if (!server_.joinable())
			return;
		const std::string abort_file = "/sys/fs/fuse/connections/" + std::to_string(conn_) + "/abort";
		Fd file(open(abort_file.c_str(), O_WRONLY));
		REQUIRE_MESSAGE(file.get() >= 0, abort_file << ": " << strerror(errno));
		(void)!write(file.get(), "1", 1);
		server_.join();
		umount2(kDir, MNT_DETACH);
		rmdir(kDir);
	}
	// True once a thread of process pid has sent a FLUSH.
	bool flushed_by(pid_t pid) const
	{
		std::lock_guard<std::mutex> guard(lock_);
		for (pid_t tid : flushers_) {
			std::ifstream status("/proc/" + std::to_string(tid) + "/status");
			std::string line;
			while (std::getline(status, line))
				if (line.rfind("Tgid:", 0) == 0 && std::stol(line.substr(5)) == pid)
					return true;
		}
		return false;
	}
	std::string file() const { return std::string(kDir) + "/f"; }

private:
	template <class T> void reply(uint64_t unique, int error, const T *out)
	{
		std::vector<char> buf(sizeof(fuse_out_header) + (out ? sizeof(T) : 0));
		auto *h = reinterpret_cast<fuse_out_header *>(buf.data());
		h->len = static_cast<uint32_t>(buf.size());
		h->error = -error;
		h->unique = unique;
		if (out)
			memcpy(buf.data() + sizeof(*h), out, sizeof(T));
		(void)!write(dev_.get(), buf.data(), buf.size());
	}
	static fuse_attr attr_of(uint64_t node)
	{
		fuse_attr a{};
		a.ino = node;
		a.mode = node == FUSE_ROOT_ID ? (S_IFDIR | 0755) : (S_IFREG | 0644);
		a.nlink = 1;
		a.size = node == FUSE_ROOT_ID ? 0 : kPage;
		return a;
	}
	void serve()
	{
		std::vector<char> buf(1 << 20 | 4096);
		for (;;) {
			const ssize_t n = read(dev_.get(), buf.data(), buf.size());
			if (n < 0 && errno == EINTR)
				continue;
			if (n < static_cast<ssize_t>(sizeof(fuse_in_header)))
				return; // aborted or unmounted
			const auto *in = reinterpret_cast<const fuse_in_header *>(buf.data());
			const char *arg = buf.data() + sizeof(*in);
			switch (in->opcode) {
			case FUSE_INIT: {
				struct stat st {};
				fstat(dev_.get(), &st);
				fuse_init_out out{};
				out.major = FUSE_KERNEL_VERSION;
				out.minor = std::min<uint32_t>(reinterpret_cast<const fuse_init_in *>(arg)->minor,
							       FUSE_KERNEL_MINOR_VERSION);
				out.max_write = 4096;
				out.max_readahead = 4096;
				reply(in->unique, 0, &out);
				break;
			}
			case FUSE_LOOKUP: {
				if (strcmp(arg, "f") != 0) {
					reply<int>(in->unique, ENOENT, nullptr);
					break;
				}
				fuse_entry_out out{};
				out.nodeid = 2;
				out.attr = attr_of(2);
				out.attr_valid = out.entry_valid = 3600;
				reply(in->unique, 0, &out);
				break;
			}
			case FUSE_GETATTR: {
				fuse_attr_out out{};
				out.attr = attr_of(in->nodeid);
				out.attr_valid = 3600;
				reply(in->unique, 0, &out);
				break;
			}
			case FUSE_OPEN: {
				fuse_open_out out{};
				out.fh = 1;
				reply(in->unique, 0, &out);
				break;
			}
			case FUSE_FLUSH: {
				std::lock_guard<std::mutex> guard(lock_);
				flushers_.insert(static_cast<pid_t>(in->pid)); // never answered
				break;
			}
			case FUSE_RELEASE:
				reply<int>(in->unique, 0, nullptr);
				break;
			default:
				reply<int>(in->unique, ENOSYS, nullptr);
			}
		}
	}
	Fd dev_;
	std::thread server_;
	mutable std::mutex lock_;
	std::set<pid_t> flushers_;
	std::atomic<unsigned> conn_{0};
};

} // namespace

TEST_CASE("runtime: another user cannot attach to root's 0600 region by its inode number")
{
	OpenDaemon d;
	Fd secret(region_with_secret("secret", 0600));
	const RuntimeInfo info = runtime_info(secret.get());
	Fd own(create_region("nobodys", kStart, kSize, 0666));
	REQUIRE(own.get() >= 0);
	REQUIRE(fchmod(own.get(), 0666) == 0);

	// Each way an attach could name root's region without holding it open:
	// no region descriptor, a descriptor of another region, an O_PATH one.
	auto attacks = [&](RawClient &c, int attempt) {
		Fd uffd = userfaultfd_for_anyone();
		Fd t = ticket(sizeof(msharefs::RuntimeTicket));
		if (!uffd || !t)
			return 3;
		Fd region;
		std::vector<int> fds{uffd.get(), t.get()};
		if (attempt == 1)
			region.reset(open(path("nobodys").c_str(), O_RDWR));
		if (attempt == 2)
			region.reset(open(path("secret").c_str(), O_PATH));
		if (attempt > 0) {
			if (!region)
				return 4;
			fds.push_back(region.get());
		}
		Fd layout;
		const int status = c.attach(info.ino, fds, &layout);
		if (status == 0) {
			Fd object;
			if (c.object(first_object(layout.get()), &object) == 0) {
				char buf[32] = {};
				if (pread(object.get(), buf, sizeof(buf) - 1, 0) > 0 && strcmp(buf, kSecret) == 0)
					return 2; // read root's data
			}
			return 1;
		}
		return c.dropped() ? 0 : 5;
	};
	for (int attempt = 0; attempt < 3; attempt++) {
		CAPTURE(attempt);
		ChildResult r = as_user(kNobody, [&] {
			RawClient c(info.socket);
			if (!c.connected())
				return 6;
			return attacks(c, attempt);
		});
		CHECK(r.exit_code == 0);
		// A socket connected while still root proves nothing either: the
		// descriptor is what counts, not who connected.
		r = run_in_child([&] {
			RawClient c(info.socket);
			if (!c.connected())
				return 6;
			if (setgroups(0, nullptr) != 0 || setresgid(kNobody, kNobody, kNobody) != 0 ||
			    setresuid(kNobody, kNobody, kNobody) != 0)
				return kNoUser;
			return attacks(c, attempt);
		});
		CHECK(r.exit_code == 0);
	}
	// The same request with the region held open is served (as root).
	RawClient c(info.socket);
	Fd uffd = userfaultfd_for_anyone();
	Fd t = ticket(sizeof(msharefs::RuntimeTicket));
	Fd layout;
	CHECK(c.attach(info.ino, {uffd.get(), t.get(), secret.get()}, &layout) == 0);
}

TEST_CASE("runtime: the keeper hands its descriptors to no other user")
{
	OpenDaemon d;
	Fd fd(region_with_secret("r", 0600));
	// The keeper's socket, wherever the daemon put it: a listening unix
	// socket whose name ends in "keeper" and exists in this namespace.
	std::vector<std::string> sockets;
	std::ifstream unix_sockets("/proc/net/unix");
	std::string line;
	while (std::getline(unix_sockets, line)) {
		const auto slash = line.find(" /");
		if (slash == std::string::npos)
			continue;
		const std::string p = line.substr(slash + 1);
		struct stat st {};
		if (p.size() > 6 && p.compare(p.size() - 6, 6, "keeper") == 0 && stat(p.c_str(), &st) == 0 &&
		    S_ISSOCK(st.st_mode))
			sockets.push_back(p);
	}
	REQUIRE(!sockets.empty());
	for (const std::string &p : sockets) {
		CAPTURE(p);
		ChildResult r = as_user(kNobody, [&] {
			Fd s(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
			sockaddr_un addr{};
			addr.sun_family = AF_UNIX;
			strncpy(addr.sun_path, p.c_str(), sizeof(addr.sun_path) - 1);
			if (connect(s.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) < 0)
				return 0; // not even reachable
			char msg[120] = {'G'};
			if (send(s.get(), msg, sizeof(msg), MSG_NOSIGNAL) < 0)
				return 0;
			timeval tv{5, 0};
			setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
			iovec iov{msg, sizeof(msg)};
			msghdr mh{};
			mh.msg_iov = &iov;
			mh.msg_iovlen = 1;
			mh.msg_control = control;
			mh.msg_controllen = sizeof(control);
			const ssize_t n = recvmsg(s.get(), &mh, MSG_CMSG_CLOEXEC);
			return n > 0 && CMSG_FIRSTHDR(&mh) ? 1 : 0; // 1: a descriptor came
		});
		CHECK(r.exit_code == 0);
	}
	// The mount still works for root.
	Window w(fd.get());
	REQUIRE(w);
	CHECK(strcmp(w.get(), kSecret) == 0);
}

TEST_CASE("runtime: a read-only opener gets read-only object descriptors")
{
	OpenDaemon d;
	Fd fd(region_with_secret("readable", 0644));
	const RuntimeInfo info = runtime_info(fd.get());
	// Through the protocol: the object comes O_RDONLY and cannot be written.
	ChildResult r = as_user(kNobody, [&] {
		Fd ro(open(path("readable").c_str(), O_RDONLY));
		if (!ro)
			return 2;
		RawClient c(info.socket);
		Fd uffd = userfaultfd_for_anyone();
		Fd t = ticket(sizeof(msharefs::RuntimeTicket));
		Fd layout;
		if (!c.connected() || c.attach(info.ino, {uffd.get(), t.get(), ro.get()}, &layout) != 0)
			return 3;
		Fd object;
		if (c.object(first_object(layout.get()), &object) != 0)
			return 4;
		if ((fcntl(object.get(), F_GETFL) & O_ACCMODE) != O_RDONLY)
			return 5;
		if (pwrite(object.get(), "x", 1, 0) != -1 || errno != EBADF)
			return 6;
		if (mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, object.get(), 0) != MAP_FAILED)
			return 7;
		char buf[32] = {};
		return pread(object.get(), buf, sizeof(buf), 0) > 0 && strcmp(buf, kSecret) == 0 ? 0 : 8;
	});
	CHECK(r.exit_code == 0);
	// The data is root's, unchanged.
	Window w(fd.get());
	REQUIRE(w);
	CHECK(strcmp(w.get(), kSecret) == 0);
}

TEST_CASE("runtime: bad tickets and descriptors are refused with EINVAL and the daemon keeps serving")
{
	Daemon d;
	Fd fd(region_with_secret("r", 0600));
	const RuntimeInfo info = runtime_info(fd.get());
	char tmpl[] = "/dev/shm/not-a-memfd-XXXXXX";
	Fd plain(mkstemp(tmpl));
	REQUIRE(plain.get() >= 0);
	unlink(tmpl);
	REQUIRE(ftruncate(plain.get(), kPage) == 0);
	Fd event(eventfd(0, EFD_CLOEXEC));
	struct Case {
		const char *what;
		std::function<std::vector<Fd>()> fds; // uffd, ticket, region
	};
	auto good_uffd = [] { return userfaultfd_for_anyone(); };
	auto region = [&] { return Fd(fcntl(fd.get(), F_DUPFD_CLOEXEC, 0)); };
	auto dup_of = [](int f) { return Fd(fcntl(f, F_DUPFD_CLOEXEC, 0)); };
	auto three = [](Fd a, Fd b, Fd c) {
		std::vector<Fd> v;
		v.push_back(std::move(a));
		v.push_back(std::move(b));
		v.push_back(std::move(c));
		return v;
	};
	const std::vector<Case> cases = {
		{"zero-length memfd ticket", [&] { return three(good_uffd(), ticket(0), region()); }},
		{"unsealed memfd ticket", [&] { return three(good_uffd(), ticket(kPage, 0), region()); }},
		{"ticket not a memfd", [&] { return three(good_uffd(), dup_of(plain.get()), region()); }},
		{"uffd not a userfaultfd",
		 [&] { return three(dup_of(event.get()), ticket(sizeof(msharefs::RuntimeTicket)), region()); }},
	};
	for (const Case &c : cases) {
		CAPTURE(c.what);
		std::vector<Fd> fds = c.fds();
		std::vector<int> raw;
		for (const Fd &f : fds) {
			REQUIRE(f.get() >= 0);
			raw.push_back(f.get());
		}
		RawClient client(info.socket);
		REQUIRE(client.connected());
		CHECK(client.attach(info.ino, raw) == EINVAL);
		CHECK(client.dropped());
	}
	// A message of the wrong size is refused too.
	{
		RawClient client(info.socket);
		REQUIRE(client.connected());
		char junk[7] = {};
		REQUIRE(send(client.sock(), junk, sizeof(junk), MSG_NOSIGNAL) == sizeof(junk));
		CHECK(client.dropped());
	}
	// Still serving: an attacher works and LOCK/UNLOCK (which read every
	// attacher's ticket) return.
	REQUIRE(alive(d.pid()));
	Window w(fd.get());
	REQUIRE(w);
	CHECK(strcmp(w.get(), kSecret) == 0);
	CHECK(ioctl(fd.get(), MSHAREFS_LOCK) == 0);
	CHECK(ioctl(fd.get(), MSHAREFS_UNLOCK) == 0);
	strcpy(w.at(kPage), "still");
	CHECK(alive(d.pid()));
}

TEST_CASE("runtime: the published layout cannot be forged")
{
	Daemon d;
	Fd fd(region_with_secret("r", 0600));
	const RuntimeInfo info = runtime_info(fd.get());
	RawClient c(info.socket);
	Fd uffd = userfaultfd_for_anyone();
	Fd t = ticket(sizeof(msharefs::RuntimeTicket));
	Fd layout;
	REQUIRE(c.attach(info.ino, {uffd.get(), t.get(), fd.get()}, &layout) == 0);
	REQUIRE(layout.get() >= 0);
	CHECK((fcntl(layout.get(), F_GETFL) & O_ACCMODE) == O_RDONLY);
	const int seals = fcntl(layout.get(), F_GET_SEALS);
	CHECK((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) == (F_SEAL_SHRINK | F_SEAL_GROW));
	CHECK(mmap(nullptr, msharefs::kPublishedLayoutBytes, PROT_READ | PROT_WRITE, MAP_SHARED, layout.get(), 0) ==
	      MAP_FAILED);
	CHECK(ftruncate(layout.get(), 0) == -1);
	// Not even a writable reopen (root may open it O_RDWR) writes it.
	Fd rw(open(("/proc/self/fd/" + std::to_string(layout.get())).c_str(), O_RDWR));
	if (rw) {
		const uint64_t odd = 1;
		CHECK(pwrite(rw.get(), &odd, sizeof(odd), 0) == -1);
		CHECK(mmap(nullptr, msharefs::kPublishedLayoutBytes, PROT_READ | PROT_WRITE, MAP_SHARED, rw.get(), 0) ==
		      MAP_FAILED);
	}
	// A read-only mapping cannot be made writable.
	void *p = mmap(nullptr, msharefs::kPublishedLayoutBytes, PROT_READ, MAP_SHARED, layout.get(), 0);
	REQUIRE(p != MAP_FAILED);
	CHECK(mprotect(p, kPage, PROT_READ | PROT_WRITE) == -1);
	munmap(p, msharefs::kPublishedLayoutBytes);
	// Layout changes and PROTECT go on (the sequence number is the daemon's).
	Window w(fd.get());
	REQUIRE(w);
	mshare_protect prot{kStart, kPage, PROT_READ, 0};
	CHECK(ioctl(fd.get(), MSHAREFS_PROTECT, &prot) == 0);
	CHECK(unmap(fd.get(), kStart + kMiB, kPage) == 0);
}

TEST_CASE("runtime: a client that stops reading holds up neither ls nor other attachers")
{
	Daemon d;
	Fd fd(region_with_secret("r", 0600));
	const RuntimeInfo info = runtime_info(fd.get());
	// Two clients send requests whose replies they never read, until their
	// own sockets are full: one attached, one that never attached.
	RawClient jam(info.socket);
	RawClient stranger(info.socket);
	Fd uffd = userfaultfd_for_anyone();
	Fd t = ticket(sizeof(msharefs::RuntimeTicket));
	Fd layout;
	CHECK(jam.attach(info.ino, {uffd.get(), t.get(), fd.get()}, &layout) == 0);
	RuntimeMessage ready{};
	ready.type = RuntimeMsgType::ready;
	ready.ino = info.ino;
	ready.a = 1; // never the published sequence: it stays not live
	int sent = 0;
	for (int round = 0; round < 20; round++) {
		for (RawClient *c : {&jam, &stranger})
			for (int i = 0; i < 5000; i++)
				if (send(c->sock(), &ready, sizeof(ready), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
					sent++;
				else
					break;
		usleep(20000);
	}
	CHECK(sent > 0);
	// Everyone else is served meanwhile, promptly.
	const auto started = std::chrono::steady_clock::now();
	ChildResult r = run_in_child(
		[&] {
			DIR *dir = opendir(kMount);
			if (!dir)
				return 1;
			int names = 0;
			while (readdir(dir))
				names++;
			closedir(dir);
			Window w(fd.get());
			if (!w || strcmp(w.get(), kSecret) != 0)
				return 2;
			return names >= 3 ? 0 : 5;
		},
		20);
	CHECK(r.exit_code == 0);
	// The owner's layout changes are served too (only the owner may make them).
	CHECK(unmap(fd.get(), kStart + kMiB, kPage) == 0);
	CHECK(create_mapping(fd.get(), kStart + kMiB, kPage, 0, PROT_READ | PROT_WRITE,
			     MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED) == 0);
	CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
	// The jamming clients themselves were let go.
	CHECK(jam.dropped());
	CHECK(stranger.dropped());
}

TEST_CASE("runtime: idle sized regions hold no daemon descriptors; a view lives while attached")
{
	Daemon d;
	Fd first(create_region("idle0", kStart, kSize));
	REQUIRE(first.get() >= 0);
	const size_t before = layout_descriptors(d.pid());
	for (int i = 1; i <= 64; i++) {
		Fd f(open(path("idle" + std::to_string(i)).c_str(), O_RDWR | O_CREAT, 0600));
		REQUIRE(f.get() >= 0);
		REQUIRE(set_size(f.get(), kStart, kSize) == 0);
	}
	CHECK(layout_descriptors(d.pid()) == before);
	{
		Window w(first.get());
		REQUIRE(w);
		w.get()[0] = 1;
		CHECK(layout_descriptors(d.pid()) == before + 1);
	}
	// Detached: the view is dropped once the daemon sees the socket close.
	size_t after_detach = 0;
	for (int i = 0; i < 200; i++) {
		after_detach = layout_descriptors(d.pid());
		if (after_detach == before)
			break;
		usleep(10000);
	}
	CHECK(after_detach == before);
}

TEST_CASE("runtime: PROTECT to read-write of a file mapped read-only fails with EACCES")
{
	Daemon d;
	Fd fd(create_region("r", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	REQUIRE(unmap(fd.get(), kStart, kSize) == 0);
	char tmpl[] = "/dev/shm/ro-file-XXXXXX";
	Fd file(mkstemp(tmpl));
	REQUIRE(file.get() >= 0);
	REQUIRE(ftruncate(file.get(), kPage) == 0);
	Fd ro(open(tmpl, O_RDONLY));
	unlink(tmpl);
	REQUIRE(create_mapping(fd.get(), kStart, kPage, 0, PROT_READ, MAP_SHARED | MAP_FIXED, ro.get()) == 0);
	mshare_protect rw{kStart, kPage, PROT_READ | PROT_WRITE, 0};
	errno = 0;
	CHECK(ioctl(fd.get(), MSHAREFS_PROTECT, &rw) == -1);
	CHECK(errno == EACCES);
	mshare_protect read_only{kStart, kPage, PROT_READ, 0};
	CHECK(ioctl(fd.get(), MSHAREFS_PROTECT, &read_only) == 0);
	// The window still maps, and reads the file.
	Window w(fd.get(), PROT_READ);
	REQUIRE(w);
	CHECK(w.get()[0] == 0);
}

TEST_CASE("runtime: a non-root program under the shim uses the regions it may open")
{
	Daemon d; // default umask: the socket is still open to every user
	Fd shared(region_with_secret("shared", 0666));
	Fd readable(region_with_secret("readable", 0644, kStart + 2 * kGiB));
	Fd secret(region_with_secret("secret", 0600, kStart + 4 * kGiB));
	ChildResult r = as_user(kNobody, [&] {
		Fd rw(open(path("shared").c_str(), O_RDWR));
		if (!rw)
			return 1;
		Window w(rw.get());
		if (!w)
			return 10 + errno % 100;
		if (strcmp(w.get(), kSecret) != 0)
			return 2;
		strcpy(w.at(kPage), "written by nobody");
		w.get()[512 * kMiB] = 7; // a page no one touched yet
		Fd ro(open(path("readable").c_str(), O_RDONLY));
		if (!ro)
			return 3;
		Window rw_of_ro(ro.get(), PROT_READ | PROT_WRITE);
		if (rw_of_ro || errno != EACCES)
			return 4;
		Window view(ro.get(), PROT_READ);
		if (!view)
			return 30 + errno % 100;
		if (strcmp(view.get(), kSecret) != 0 || view.get()[256 * kMiB] != 0)
			return 5;
		// Every object descriptor this process got for the read-only
		// window is read-only.
		const auto objects = object_descriptors(reinterpret_cast<uint64_t>(view.get()), kSize);
		if (objects.empty())
			return 6;
		for (int o : objects)
			if ((fcntl(o, F_GETFL) & O_ACCMODE) != O_RDONLY)
				return 7;
		if (open(path("secret").c_str(), O_RDONLY) != -1 || errno != EACCES)
			return 8;
		return 0;
	});
	CHECK(r.exit_code == 0);
	Window w(shared.get());
	REQUIRE(w);
	CHECK(strcmp(w.at(kPage), "written by nobody") == 0);
	CHECK(w.get()[512 * kMiB] == 7);
}

TEST_CASE("runtime: an attacher that does not answer a sync is dropped, and holds up one change at most")
{
	Daemon d;
	Fd fd(region_with_secret("r", 0600));
	const RuntimeInfo info = runtime_info(fd.get());
	RawClient mute(info.socket);
	Fd uffd = userfaultfd_for_anyone();
	Fd t = ticket(sizeof(msharefs::RuntimeTicket));
	Fd layout;
	REQUIRE(mute.attach(info.ino, {uffd.get(), t.get(), fd.get()}, &layout) == 0);
	// Live: ready at the published sequence number, then silence.
	void *p = mmap(nullptr, msharefs::kPublishedLayoutBytes, PROT_READ, MAP_SHARED, layout.get(), 0);
	REQUIRE(p != MAP_FAILED);
	RuntimeMessage ready{};
	ready.type = RuntimeMsgType::ready;
	ready.ino = info.ino;
	ready.a = msharefs::published_seq(static_cast<const msharefs::PublishedLayoutPage *>(p));
	munmap(p, msharefs::kPublishedLayoutBytes);
	REQUIRE(msharefs::send_runtime_message(mute.sock(), ready) == 0);
	RuntimeMessage reply{};
	REQUIRE(msharefs::recv_runtime_message(mute.sock(), &reply) == 0);
	REQUIRE(reply.status == 0);
	// The first change waits for it (up to the timeout) and is taken back
	// (ETIMEDOUT: it may still see the old layout), then it is gone.
	auto timed_unmap = [&](uint64_t off, int expected) {
		const auto start = std::chrono::steady_clock::now();
		CHECK(unmap(fd.get(), kStart + off, kPage) == expected);
		return std::chrono::steady_clock::now() - start;
	};
	CHECK(timed_unmap(kMiB, ETIMEDOUT) < std::chrono::seconds(15));
	CHECK(timed_unmap(kMiB, 0) < std::chrono::seconds(2));
	CHECK(mute.dropped());
}

TEST_CASE("runtime: a descriptor of a FUSE file whose server never answers does not stop the service")
{
	Daemon d;
	Fd fd(region_with_secret("r", 0600));
	const RuntimeInfo info = runtime_info(fd.get());
	SilentFuse silent;
	// A client sends a file of it as the region: refused, and the daemon's
	// close of it waits for a FLUSH that is never answered. (So does the
	// client's own exit, until the connection is aborted.)
	const pid_t client = spawn([&] {
		Fd foreign(open(silent.file().c_str(), O_RDONLY | O_CLOEXEC));
		if (!foreign)
			return 2;
		RawClient c(info.socket);
		Fd uffd = userfaultfd_for_anyone();
		Fd t = ticket(sizeof(msharefs::RuntimeTicket));
		return c.attach(info.ino, {uffd.get(), t.get(), foreign.get()}) == EACCES ? 0 : 1;
	});
	CHECK(eventually([&] { return silent.flushed_by(d.pid()); }, 5000));
	// Everyone else is still served.
	ChildResult r = run_in_child(
		[&] {
			Window w(fd.get());
			return w && strcmp(w.get(), kSecret) == 0 ? 0 : 1;
		},
		10);
	CHECK(r.exit_code == 0);
	CHECK(!r.timed_out);
	silent.abort();
	CHECK(wait_for(client, 10).exit_code == 0);
}

namespace {

// window_syscalls (see its source) run as uid 65534 on region NAME: an
// unmodified program under libmshare-preload.so (the test's LD_PRELOAD).
ChildResult window_syscalls(const std::vector<std::string> &args, std::string *out, int timeout_s = 20)
{
	const char *bin = getenv("WINDOW_SYSCALLS");
	REQUIRE_MESSAGE(bin, "WINDOW_SYSCALLS is not set");
	std::vector<std::string> argv{bin};
	argv.insert(argv.end(), args.begin(), args.end());
	return run_program(argv, out, timeout_s, static_cast<int>(kNobody));
}

// Runs two window_syscalls programs at once; both must exit 0.
void run_both(const std::vector<std::string> &first, const std::vector<std::string> &second)
{
	std::string out1, out2;
	ChildResult r1;
	std::thread t([&] { r1 = window_syscalls(first, &out1); });
	usleep(100000);
	ChildResult r2 = window_syscalls(second, &out2);
	t.join();
	INFO(first[0] << ":\n" << out1 << second[0] << ":\n" << out2);
	CHECK(r1.exit_code == 0);
	CHECK(r2.exit_code == 0);
}

std::string offset(uint64_t off) { return std::to_string(off); }

// What the daemon answers a lend_uffd with the descriptors in fds: the
// status, or -errno if no reply came; *device gets what came with it.
int lend_uffd(const std::string &socket, uint64_t ino, const std::vector<int> &fds, Fd *device, bool *dropped)
{
	RawClient c(socket);
	if (!c.connected())
		return -ENOTCONN;
	RuntimeMessage msg{};
	msg.type = RuntimeMsgType::lend_uffd;
	msg.ino = ino;
	if (int err = msharefs::send_runtime_message(c.sock(), msg, fds))
		return -err;
	std::vector<Fd> got;
	RuntimeMessage reply{};
	if (int err = msharefs::recv_runtime_message(c.sock(), &reply, &got))
		return -err;
	if (!got.empty())
		*device = std::move(got[0]);
	*dropped = c.dropped();
	return reply.type == RuntimeMsgType::lend_uffd ? reply.status : -EPROTO;
}

} // namespace

TEST_CASE("runtime: a non-root program's system calls reach window pages it never touched")
{
	Daemon d; // default options: the daemon lends /dev/userfaultfd
	const std::string region = path("shared");
	Fd shared(region_with_secret("shared", 0666));
	{
		Window w(shared.get());
		REQUIRE(w);
		strcpy(w.at(600 * kMiB), "written by root");
	}
	std::string out;
	ChildResult r = window_syscalls({"pipe-read", region, offset(300 * kMiB), "through a pipe"}, &out);
	CHECK_MESSAGE(r.exit_code == 0, out);
	out.clear();
	r = window_syscalls({"pwrite", region, offset(600 * kMiB), "written by root"}, &out);
	CHECK_MESSAGE(r.exit_code == 0, out);
	// A process-shared semaphore (and a bare futex) in a fresh page, the
	// waiter in one process, the poster in another.
	run_both({"sem-wait", region, offset(700 * kMiB)}, {"sem-post", region, offset(700 * kMiB)});
	run_both({"futex-wait", region, offset(800 * kMiB)}, {"futex-wake", region, offset(800 * kMiB)});
	Window w(shared.get());
	REQUIRE(w);
	CHECK(strcmp(w.at(300 * kMiB), "through a pipe") == 0);
}

TEST_CASE("runtime: with -o uffd_device=keep a non-root read() into an untouched window page fails EFAULT")
{
	Daemon d({"align=1G", "uffd_device=keep"});
	Fd shared(region_with_secret("shared", 0666));
	std::string out;
	ChildResult r = window_syscalls({"pipe-read", path("shared"), offset(300 * kMiB), "through a pipe"}, &out);
	CHECK(r.exit_code == 3);
	CHECK_MESSAGE(out.find("read: errno " + std::to_string(EFAULT)) != std::string::npos, out);
}

TEST_CASE("runtime: /dev/userfaultfd is lent only to a peer holding the region open")
{
	Daemon d;
	Fd secret(region_with_secret("secret", 0600));
	Fd own(create_region("nobodys", kStart + 2 * kGiB, kSize, 0666));
	REQUIRE(own.get() >= 0);
	REQUIRE(fchmod(own.get(), 0666) == 0);
	const RuntimeInfo info = runtime_info(secret.get());
	const uint64_t own_ino = runtime_info(own.get()).ino;
	ChildResult r = as_user(kNobody, [&] {
		Fd device;
		bool dropped = false;
		// No descriptor, another region's, an O_PATH one of root's: refused.
		if (lend_uffd(info.socket, info.ino, {}, &device, &dropped) != EINVAL || device || !dropped)
			return 1;
		Fd other(open(path("nobodys").c_str(), O_RDONLY));
		if (!other || lend_uffd(info.socket, info.ino, {other.get()}, &device, &dropped) != EACCES || device ||
		    !dropped)
			return 2;
		Fd opath(open(path("secret").c_str(), O_PATH));
		if (!opath || lend_uffd(info.socket, info.ino, {opath.get()}, &device, &dropped) != EACCES || device)
			return 3;
		// Its own region held open read-only: the device, from which a
		// userfaultfd for kernel-mode faults too is made.
		if (lend_uffd(info.socket, own_ino, {other.get()}, &device, &dropped) != 0 || !device || !dropped)
			return 4;
		struct stat st {};
		if (fstat(device.get(), &st) != 0 || !S_ISCHR(st.st_mode))
			return 5;
		Fd uffd(ioctl(device.get(), USERFAULTFD_IOC_NEW, O_CLOEXEC));
		return uffd ? 0 : 6;
	});
	CHECK(r.exit_code == 0);
}

TEST_CASE("runtime: with -o uffd_device=keep no device is lent (ENODEV)")
{
	Daemon d({"align=1G", "uffd_device=keep"});
	Fd own(create_region("r", kStart, kSize, 0666));
	REQUIRE(own.get() >= 0);
	const RuntimeInfo info = runtime_info(own.get());
	Fd device;
	bool dropped = false;
	CHECK(lend_uffd(info.socket, info.ino, {own.get()}, &device, &dropped) == ENODEV);
	CHECK(!device);
	CHECK(dropped);
}

TEST_CASE("runtime: a user's runtime connections are bounded by max_attachers_per_uid (EDQUOT); root's are not")
{
	Daemon d({"align=1G", "max_attachers_per_uid=3"});
	Fd own(create_region("nobodys", kStart, kSize, 0666));
	REQUIRE(own.get() >= 0);
	REQUIRE(fchmod(own.get(), 0666) == 0);
	const RuntimeInfo info = runtime_info(own.get());
	ChildResult r = as_user(kNobody, [&] {
		Fd region(open(path("nobodys").c_str(), O_RDWR));
		if (!region)
			return 1;
		// Three connections held: the fourth is answered EDQUOT, whatever
		// it asks, and closed.
		std::vector<std::unique_ptr<RawClient>> held;
		for (int i = 0; i < 3; i++) {
			held.push_back(std::make_unique<RawClient>(info.socket));
			if (!held.back()->connected())
				return 2;
		}
		Fd device;
		bool dropped = false;
		if (lend_uffd(info.socket, info.ino, {region.get()}, &device, &dropped) != EDQUOT || device || !dropped)
			return 3;
		RawClient fourth(info.socket);
		Fd uffd(userfaultfd_for_anyone());
		Fd t(ticket(sizeof(msharefs::RuntimeTicket)));
		if (!fourth.connected() || fourth.attach(info.ino, {uffd.get(), t.get(), region.get()}) != EDQUOT)
			return 4;
		// One let go: the next is served again.
		held.pop_back();
		for (int i = 0; i < 100; i++) {
			if (lend_uffd(info.socket, info.ino, {region.get()}, &device, &dropped) != EDQUOT)
				break;
			usleep(10000);
		}
		return device ? 0 : 5;
	});
	CHECK(r.exit_code == 0);
	// Root is not limited.
	std::vector<std::unique_ptr<RawClient>> roots;
	for (int i = 0; i < 5; i++)
		roots.push_back(std::make_unique<RawClient>(info.socket));
	Fd device;
	bool dropped = false;
	CHECK(lend_uffd(info.socket, info.ino, {own.get()}, &device, &dropped) == 0);
	CHECK(device);
}
