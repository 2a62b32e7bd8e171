// Who may change a region (SPEC: the owner) and to whom it may be handed.
#pragma once

#include "registry.hpp"

#include <sys/types.h>
#include <vector>

namespace msharefs {

// Who owns a region: its thread-group id and start time (against pid reuse).
struct OwnerId {
	pid_t pid = 0;
	uint64_t start_time = 0;
	bool operator==(const OwnerId &) const = default;
};
inline OwnerId owner_of(const NodeRecord &node) { return {node.owner_pid, node.owner_start_time}; }
// The process of thread `tid` (the caller of a request), as an OwnerId to
// compare with a region's. Reads /proc: call it without locks held.
OwnerId process_of(pid_t tid);
inline bool is_owner(const NodeRecord &node, const OwnerId &caller)
{
	return node.owner_pid != 0 && owner_of(node) == caller;
}

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
