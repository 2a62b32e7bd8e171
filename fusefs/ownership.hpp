// Who may change a region (SPEC: the owner) and to whom it may be handed.
#pragma once

#include "registry.hpp"

#include <sys/types.h>
#include <vector>

namespace msharefs {

// True if the process of thread `tid` is the region's owner (the same
// process, not a later one that reused its pid).
bool is_owner(const NodeRecord &node, pid_t tid);

// The credentials the kernel checks a process's opens with.
struct ProcessCredentials {
	uid_t fsuid = 0;
	gid_t fsgid = 0;
	std::vector<gid_t> groups;
};

// 0 and the pid of a pidfd, or ESRCH if its process has exited, EBADF if
// fd is not a pidfd.
int pid_of_pidfd(int pidfd, pid_t *pid);
// 0 and the credentials of pid, or ESRCH.
int credentials_of(pid_t pid, ProcessCredentials *creds);
// Whether a process with creds could open the region O_RDWR (its mode, uid
// and gid as default_permissions checks them; fsuid 0 always can).
bool may_open_read_write(const NodeRecord &node, const ProcessCredentials &creds);
// Whether the process of pidfd has exited (its pidfd is readable).
bool owner_has_exited(int pidfd);

} // namespace msharefs
