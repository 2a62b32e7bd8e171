#include "msharefs/runtime_protocol.hpp"

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <sys/socket.h>

namespace msharefs {

namespace {
constexpr size_t kMaxFds = 4;
}

sockaddr_un runtime_socket_address(const std::string &name, socklen_t *len)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	const size_t n = std::min(name.size(), sizeof(addr.sun_path) - 1);
	std::memcpy(addr.sun_path, name.data(), n);
	if (n && name[0] == '@')
		addr.sun_path[0] = '\0';
	*len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n);
	return addr;
}

int connect_runtime_socket(const std::string &name)
{
	UniqueFd sock(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
	if (!sock)
		return -1;
	socklen_t len = 0;
	const sockaddr_un addr = runtime_socket_address(name, &len);
	if (connect(sock.get(), reinterpret_cast<const sockaddr *>(&addr), len) < 0)
		return -1;
	return sock.release();
}

int send_runtime_message(int sock, const RuntimeMessage &msg, const std::vector<int> &fds, int flags)
{
	if (fds.size() > kMaxFds)
		return EINVAL;
	iovec iov{const_cast<RuntimeMessage *>(&msg), sizeof(msg)};
	alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
	msghdr mh{};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (!fds.empty()) {
		mh.msg_control = control;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
		cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
		std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
	}
	for (;;) {
		ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL | flags);
		if (n == static_cast<ssize_t>(sizeof(msg)))
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? errno : EIO;
	}
}

int recv_runtime_message(int sock, RuntimeMessage *msg, std::vector<UniqueFd> *fds, int flags)
{
	iovec iov{msg, sizeof(*msg)};
	alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
	msghdr mh{};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = control;
	mh.msg_controllen = sizeof(control);
	ssize_t n;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno;
	for (cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;
			std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (fds)
				fds->emplace_back(fd);
			else
				UniqueFd discard(fd);
		}
	}
	if (n == 0)
		return ECONNRESET;
	if (n != static_cast<ssize_t>(sizeof(*msg)) || (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)))
		return EPROTO;
	return 0;
}

} // namespace msharefs
