// What a runtime client sends the daemon, checked before it is used: the
// descriptors of an attach (see runtime_protocol.hpp, "Trust"), and the
// descriptors the daemon hands back with no more access than the client has.
#pragma once

#include "msharefs/unique_fd.hpp"

#include <cstdint>
#include <string>
#include <sys/types.h>
#include <vector>

namespace msharefs {

// 0, or EINVAL if fd is not a userfaultfd.
int check_userfaultfd(int fd);
// 0, or EINVAL if fd is not a memfd of at least sizeof(RuntimeTicket) bytes
// sealed against shrinking (a mapping of it can never SIGBUS the daemon).
int check_ticket(int fd);
// 0 with *mode the access (O_RDONLY or O_RDWR) fd has, if fd is an open
// region file ino of the mount on mount_dev; EACCES if it is not (another
// file, an O_PATH or O_WRONLY descriptor). Sends no request to any FUSE
// daemon: the attributes are the kernel's cached ones.
int check_region_fd(int fd, dev_t mount_dev, uint64_t ino, int *mode);
// A new descriptor of fd's file: fd itself duplicated if it has no more
// than `mode` access, else the file reopened O_RDONLY. 0 or errno.
int descriptor_with_access(int fd, int mode, UniqueFd *out);
// /proc/self/fd/N: opening it opens fd's file anew.
std::string fd_path(int fd);

// Closes descriptors a client sent on a thread of their own, never on the
// caller's: closing a file of a FUSE filesystem waits for its server (FLUSH),
// which the client may run itself and never answer.
void close_client_descriptors(std::vector<UniqueFd> fds);

// The descriptors of one received message; what is left in it when it goes
// is closed by close_client_descriptors.
struct ReceivedFds {
	std::vector<UniqueFd> fds;
	ReceivedFds() = default;
	ReceivedFds(const ReceivedFds &) = delete;
	ReceivedFds &operator=(const ReceivedFds &) = delete;
	~ReceivedFds() { close_client_descriptors(std::move(fds)); }
};

} // namespace msharefs
