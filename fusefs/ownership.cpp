// Ownership of regions: the owner check every changing ioctl makes, and
// MSHAREFS_SET_OWNER, which hands a region (and the owner watch) to another
// process.
#include "ownership.hpp"

#include "filesystem.hpp"
#include "process.hpp"

#include <linux/msharefs.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

namespace msharefs {

OwnerId process_of(pid_t tid)
{
	const pid_t tgid = thread_group_of(tid);
	return {tgid, process_start_time(tgid)};
}

int pid_of_pidfd(int pidfd, pid_t *pid)
{
	std::ifstream in("/proc/self/fdinfo/" + std::to_string(pidfd));
	std::string line;
	while (std::getline(in, line)) {
		if (line.rfind("Pid:", 0) != 0)
			continue;
		const long value = std::stol(line.substr(4));
		if (value <= 0)
			return ESRCH; // -1: the process has exited
		*pid = static_cast<pid_t>(value);
		return 0;
	}
	return EBADF;
}

namespace {

// The fourth field of a Uid:/Gid: line of /proc/PID/status: the fs id.
bool parse_fs_id(const std::string &rest, uint32_t *id)
{
	std::istringstream fields(rest);
	uint32_t v[4] = {};
	if (!(fields >> v[0] >> v[1] >> v[2] >> v[3]))
		return false;
	*id = v[3];
	return true;
}

} // namespace

int credentials_of(pid_t pid, ProcessCredentials *creds)
{
	std::ifstream in("/proc/" + std::to_string(pid) + "/status");
	if (!in)
		return ESRCH;
	std::string line;
	bool have_uid = false, have_gid = false;
	while (std::getline(in, line)) {
		if (line.rfind("Uid:", 0) == 0) {
			have_uid = parse_fs_id(line.substr(4), &creds->fsuid);
		} else if (line.rfind("Gid:", 0) == 0) {
			have_gid = parse_fs_id(line.substr(4), &creds->fsgid);
		} else if (line.rfind("Groups:", 0) == 0) {
			std::istringstream groups(line.substr(7));
			for (gid_t g; groups >> g;)
				creds->groups.push_back(g);
		}
	}
	return have_uid && have_gid ? 0 : ESRCH;
}

bool may_open_read_write(const NodeRecord &node, const ProcessCredentials &creds)
{
	if (creds.fsuid == 0)
		return true;
	const uint32_t rw = S_IRUSR | S_IWUSR;
	if (creds.fsuid == node.uid)
		return (node.mode & rw) == rw;
	const bool in_group = creds.fsgid == node.gid ||
			      std::find(creds.groups.begin(), creds.groups.end(), node.gid) != creds.groups.end();
	if (in_group)
		return (node.mode & (rw >> 3)) == (rw >> 3);
	return (node.mode & (rw >> 6)) == (rw >> 6);
}

// MSHAREFS_SET_OWNER: the caller (the owner; checked by the dispatcher) names
// the new owner by a pidfd of its own.
int Filesystem::transfer_owner(uint64_t ino, pid_t caller, const mshare_owner &a)
{
	if (a.flags == MSHAREFS_OWNER_RELEASE)
		return a.pidfd == -1 ? release_owner(ino) : EINVAL;
	if (a.flags != 0)
		return EINVAL;
	UniqueFd pidfd(steal_fd(caller, a.pidfd));
	if (!pidfd)
		return EBADF;
	pid_t pid = 0;
	if (int err = pid_of_pidfd(pidfd.get(), &pid))
		return err;
	ProcessCredentials creds;
	if (int err = credentials_of(pid, &creds))
		return err;
	const uint64_t start_time = process_start_time(pid);
	// Still alive after the reads: pid was this process all along.
	if (syscall(SYS_pidfd_send_signal, pidfd.get(), 0, nullptr, 0) != 0 || start_time == 0)
		return ESRCH;
	{
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(ino);
		if (!node)
			return ENOENT;
		if (node->orphaned)
			return EINVAL;
		if (!may_open_read_write(*node, creds))
			return EPERM;
		node->owner_pid = pid;
		node->owner_start_time = start_time;
	}
	follow_owner(ino, pid, start_time, std::move(pidfd));
	return 0;
}

// MSHAREFS_OWNER_RELEASE: nobody owns ino from now on; nothing orphans it.
int Filesystem::release_owner(uint64_t ino)
{
	{
		std::unique_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(ino);
		if (!node)
			return ENOENT;
		if (node->orphaned)
			return EINVAL;
		node->owner_pid = 0;
		node->owner_start_time = 0;
	}
	std::lock_guard<std::mutex> guard(owner_lock_);
	unwatch_owner(ino);
	return 0;
}

// The owner watch of ino now waits for the process of pidfd.
void Filesystem::follow_owner(uint64_t ino, pid_t pid, uint64_t start_time, UniqueFd pidfd)
{
	std::lock_guard<std::mutex> guard(owner_lock_);
	unwatch_owner(ino);
	add_owner_watch(ino, pid, start_time, std::move(pidfd));
}

// An exit event is the current owner's only if its pidfd is readable (an
// event of the previous owner may still be in flight after a transfer).
bool owner_has_exited(int pidfd)
{
	pollfd p{pidfd, POLLIN, 0};
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP));
}

} // namespace msharefs
