#include "region_hosts.hpp"

#include "msharefs_kmod.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace msharefs {
namespace {

// The host's descriptors after the fork: its socket and the module's device.
constexpr int kHostSock = 3;
constexpr int kHostDevice = 4;

// The cgroup v2 path of pid ("/a/b"), or "" when it has none.
std::string cgroup_of(pid_t pid)
{
	std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
	for (std::string line; std::getline(in, line);)
		if (line.rfind("0::", 0) == 0)
			return line.substr(3);
	return "";
}

// Where cgroup2 is mounted in msharefsd's mount namespace, or "".
std::string cgroup2_mount()
{
	std::ifstream in("/proc/self/mountinfo");
	for (std::string line; std::getline(in, line);) {
		const size_t sep = line.find(" - ");
		if (sep == std::string::npos || line.compare(sep + 3, 8, "cgroup2 ") != 0)
			continue;
		// id parent major:minor root mount-point ...
		size_t pos = 0;
		for (int field = 0; field < 4 && pos != std::string::npos; field++)
			pos = line.find(' ', pos + 1);
		if (pos == std::string::npos)
			continue;
		const size_t end = line.find(' ', pos + 1);
		return line.substr(pos + 1, end - pos - 1);
	}
	return "";
}

// Sends fd (or, when fd < 0, the errno err) over sock.
void send_result(int sock, int fd, int err)
{
	union {
		cmsghdr header;
		char buf[CMSG_SPACE(sizeof(int))];
	} control{};
	iovec iov{&err, sizeof(err)};
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (fd >= 0) {
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof(control.buf);
		cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	while (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
	}
}

// The host process, after fork(): system calls only (the parent has threads).
// It joins its cgroup, then creates a region for each byte it reads and
// sends its descriptor back, until msharefsd's end of the socket closes.
[[noreturn]] void host_main(int sock, int device, const char *procs)
{
	// Out of the way first: either may be 3 or 4 already.
	const int s = fcntl(sock, F_DUPFD, 10), d = fcntl(device, F_DUPFD, 10);
	if (s < 0 || d < 0 || dup2(s, kHostSock) < 0 || dup2(d, kHostDevice) < 0)
		_exit(1);
	syscall(SYS_close_range, kHostDevice + 1, ~0U, 0);
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	const int cg = procs[0] ? open(procs, O_WRONLY | O_CLOEXEC) : -1;
	if (cg >= 0) {
		// Moves this process; failing that it stays in msharefsd's cgroup.
		if (write(cg, "0", 1) < 0) {
		}
		close(cg);
	}
	for (;;) {
		char request;
		const ssize_t n = read(kHostSock, &request, 1);
		if (n == 0 || (n < 0 && errno != EINTR))
			_exit(0);
		if (n < 0)
			continue;
		msharefs_kmod_create c{};
		const int region = ioctl(kHostDevice, MSHAREFS_KMOD_CREATE, &c);
		send_result(kHostSock, region, region < 0 ? errno : 0);
		if (region >= 0)
			close(region);
	}
}

} // namespace

RegionHosts::~RegionHosts()
{
	std::lock_guard<std::mutex> guard(lock_);
	for (auto &[cgroup, host] : hosts_) {
		host.sock.reset(); // the host exits
		waitpid(host.pid, nullptr, 0);
	}
}

int RegionHosts::spawn(const std::string &cgroup, Host *host)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return errno;
	const std::string mount = cgroup2_mount();
	const std::string procs = cgroup.empty() || mount.empty() || cgroup == cgroup_of(getpid())
					  ? ""
					  : mount + cgroup + "/cgroup.procs";
	const pid_t pid = fork();
	if (pid < 0) {
		const int err = errno;
		close(sv[0]);
		close(sv[1]);
		return err;
	}
	if (pid == 0)
		host_main(sv[1], device_fd_, procs.c_str());
	close(sv[1]);
	host->pid = pid;
	host->sock.reset(sv[0]);
	return 0;
}

int RegionHosts::create_in(Host &host, UniqueFd *region)
{
	const char request = 'c';
	if (send(host.sock.get(), &request, 1, MSG_NOSIGNAL) != 1)
		return errno ? errno : EIO;
	int err = 0;
	union {
		cmsghdr header;
		char buf[CMSG_SPACE(sizeof(int))];
	} control{};
	iovec iov{&err, sizeof(err)};
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof(control.buf);
	ssize_t n;
	while ((n = recvmsg(host.sock.get(), &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
	}
	if (n != sizeof(err))
		return EIO;
	if (err)
		return err;
	cmsghdr *c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return EIO;
	int fd;
	std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
	region->reset(fd);
	return 0;
}

int RegionHosts::create_here(UniqueFd *region)
{
	msharefs_kmod_create c{};
	region->reset(ioctl(device_fd_, MSHAREFS_KMOD_CREATE, &c));
	return *region ? 0 : errno;
}

int RegionHosts::create(pid_t owner, UniqueFd *region, bool *here)
{
	*here = false;
	// msharefsd never hosts a region itself while it can help it: a host it
	// forked later would inherit the views.
	const std::string cgroup = cgroup_of(owner);
	std::lock_guard<std::mutex> guard(lock_);
	auto it = hosts_.find(cgroup);
	if (it != hosts_.end() && create_in(it->second, region) == 0)
		return 0;
	if (it != hosts_.end()) {
		// The host is gone (killed): the regions it made keep their memory.
		it->second.sock.reset();
		waitpid(it->second.pid, nullptr, 0);
		hosts_.erase(it);
	}
	Host host;
	if (spawn(cgroup, &host) != 0) {
		*here = true;
		return create_here(region);
	}
	const int err = create_in(host, region);
	hosts_.emplace(cgroup, std::move(host));
	return err;
}

} // namespace msharefs
