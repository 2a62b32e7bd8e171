#include "keeper.hpp"

#include "state_dir.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <map>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

namespace msharefs {

namespace {

struct KeeperMessage {
	char op; // 'P' put, 'D' drop, 'G' get all, 'F' a descriptor follows, 'E' end, 'A' ack
	char tag[119];
};

sockaddr_un socket_address(const std::string &path)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
	return addr;
}

int send_message(int sock, char op, const std::string &tag, int fd)
{
	KeeperMessage msg{};
	msg.op = op;
	std::strncpy(msg.tag, tag.c_str(), sizeof(msg.tag) - 1);
	iovec iov{&msg, sizeof(msg)};
	msghdr mh{};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
	if (fd >= 0) {
		mh.msg_control = control;
		mh.msg_controllen = sizeof(control);
		cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		std::memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	ssize_t n;
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == sizeof(msg) ? 0 : (n < 0 ? errno : EPROTO);
}

// Returns bytes read (0 at EOF, -1 on error); *fd gets a passed descriptor or -1.
ssize_t receive_message(int sock, KeeperMessage *msg, int *fd)
{
	iovec iov{msg, sizeof(*msg)};
	msghdr mh{};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
	mh.msg_control = control;
	mh.msg_controllen = sizeof(control);
	*fd = -1;
	ssize_t n;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	for (cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			std::memcpy(fd, CMSG_DATA(cm), sizeof(int));
	msg->tag[sizeof(msg->tag) - 1] = '\0';
	return n;
}

class Keeper {
public:
	Keeper(UniqueFd listener, std::string state_root, std::string state_name, UniqueFd state_dir)
		: listener_(std::move(listener)), state_root_(std::move(state_root)), state_name_(std::move(state_name)),
		  state_dir_(std::move(state_dir))
	{
	}

	[[noreturn]] void run()
	{
		for (;;) {
			std::vector<pollfd> fds;
			fds.push_back({listener_.get(), POLLIN, 0});
			// No events asked: poll reports only POLLERR, which /dev/fuse
			// raises when the connection is unmounted or aborted.
			fds.push_back({fuse_fd(), 0, 0});
			for (const auto &c : clients_)
				fds.push_back({c.get(), POLLIN, 0});
			if (poll(fds.data(), fds.size(), -1) < 0) {
				if (errno == EINTR)
					continue;
				finish();
			}
			if (fds[1].revents & (POLLERR | POLLHUP | POLLNVAL))
				finish();
			if (fds[0].revents & POLLIN) {
				UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
				if (c && from_daemon(c.get()))
					clients_.push_back(std::move(c));
			}
			for (size_t i = 2; i < fds.size(); i++)
				if (fds[i].revents)
					serve(fds[i].fd);
			std::erase_if(clients_, [](const UniqueFd &c) { return !c; });
		}
	}

	void hold(const std::string &tag, int fd) { held_[tag] = UniqueFd(fd); }

private:
	// Only the daemon's uid may talk to the keeper (it holds /dev/fuse and
	// callers' files): a process of that uid could take them by ptrace
	// anyway, and the restarted daemon is a new process of the same uid.
	static bool from_daemon(int sock)
	{
		ucred cred{};
		socklen_t len = sizeof(cred);
		return getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == geteuid();
	}

	int fuse_fd() const
	{
		auto it = held_.find("fuse");
		return it == held_.end() ? -1 : it->second.get();
	}

	void serve(int sock)
	{
		KeeperMessage msg{};
		int fd = -1;
		ssize_t n = receive_message(sock, &msg, &fd);
		UniqueFd passed(fd);
		if (n <= 0) {
			for (auto &c : clients_)
				if (c.get() == sock)
					c.reset();
			return;
		}
		switch (msg.op) {
		case 'P':
			if (passed)
				held_[msg.tag] = std::move(passed);
			send_message(sock, 'A', "", -1);
			break;
		case 'D':
			if (std::string(msg.tag) != "fuse")
				held_.erase(msg.tag);
			send_message(sock, 'A', "", -1);
			break;
		case 'G':
			for (const auto &[tag, held] : held_)
				send_message(sock, 'F', tag, held.get());
			send_message(sock, 'E', "", -1);
			break;
		default:
			break;
		}
	}

	[[noreturn]] void finish()
	{
		held_.clear();
		remove_mount_state(state_root_, state_name_, state_dir_.get());
		_exit(0);
	}

	UniqueFd listener_;
	std::string state_root_;
	std::string state_name_;
	UniqueFd state_dir_; // this mount's, so that a later one's is left alone
	std::vector<UniqueFd> clients_;
	std::map<std::string, UniqueFd> held_;
};

} // namespace

pid_t spawn_keeper(const std::string &socket_path, const std::string &state_root, const std::string &state_name,
		   int fuse_fd)
{
	UniqueFd listener(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
	if (!listener)
		return -1;
	unlink(socket_path.c_str());
	sockaddr_un addr = socket_address(socket_path);
	if (bind(listener.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) < 0 ||
	    listen(listener.get(), 8) < 0)
		return -1;
	pid_t pid = fork();
	if (pid != 0)
		return pid;

	// The keeper: no signals from the terminal, no inherited descriptors
	// beyond the ones it keeps.
	setsid();
	prctl(PR_SET_NAME, "msharefs-keeper");
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	int devnull = ::open("/dev/null", O_RDWR);
	for (int fd = 0; fd < 3; fd++)
		dup2(devnull, fd);
	int kept_fuse = fcntl(fuse_fd, F_DUPFD_CLOEXEC, 3);
	UniqueFd state_dir(::open((state_root + "/" + state_name).c_str(),
				  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
	// Every descriptor but these (the daemon raised RLIMIT_NOFILE, so there
	// may be any number).
	std::vector<int> keep{listener.get(), kept_fuse, state_dir.get()};
	std::sort(keep.begin(), keep.end());
	unsigned next = 3;
	for (int fd : keep) {
		if (fd < static_cast<int>(next))
			continue;
		if (static_cast<unsigned>(fd) > next)
			close_range(next, static_cast<unsigned>(fd) - 1, 0);
		next = static_cast<unsigned>(fd) + 1;
	}
	close_range(next, ~0U, 0);
	Keeper keeper(std::move(listener), state_root, state_name, std::move(state_dir));
	keeper.hold("fuse", kept_fuse);
	keeper.run();
}

std::optional<KeeperClient> KeeperClient::connect(const std::string &socket_path)
{
	UniqueFd sock(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
	sockaddr_un addr = socket_address(socket_path);
	if (!sock || ::connect(sock.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) < 0)
		return std::nullopt;
	return KeeperClient(std::move(sock));
}

int KeeperClient::put(const std::string &tag, int fd)
{
	if (int err = send_message(sock_.get(), 'P', tag, fd))
		return err;
	KeeperMessage ack{};
	int none;
	return receive_message(sock_.get(), &ack, &none) > 0 && ack.op == 'A' ? 0 : EPIPE;
}

int KeeperClient::drop(const std::string &tag)
{
	if (int err = send_message(sock_.get(), 'D', tag, -1))
		return err;
	KeeperMessage ack{};
	int none;
	return receive_message(sock_.get(), &ack, &none) > 0 && ack.op == 'A' ? 0 : EPIPE;
}

std::vector<std::pair<std::string, UniqueFd>> KeeperClient::take_all()
{
	std::vector<std::pair<std::string, UniqueFd>> out;
	if (send_message(sock_.get(), 'G', "", -1))
		return out;
	for (;;) {
		KeeperMessage msg{};
		int fd = -1;
		if (receive_message(sock_.get(), &msg, &fd) <= 0 || msg.op != 'F') {
			if (fd >= 0)
				::close(fd);
			break;
		}
		out.emplace_back(msg.tag, UniqueFd(fd));
	}
	return out;
}

} // namespace msharefs
