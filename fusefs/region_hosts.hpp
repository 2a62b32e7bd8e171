// Region hosts (datapath=kmod): the module keeps a region's memory in the
// address space of the process that created the region and charges it to
// that process's memory cgroup. msharefsd creates each module region through
// a host process it forked into the owner's cgroup (one per cgroup), so a
// region's memory is charged where its owner's is.
#pragma once

#include "msharefs/unique_fd.hpp"

#include <sys/types.h>

#include <map>
#include <mutex>
#include <string>

namespace msharefs {

class RegionHosts {
public:
	explicit RegionHosts(int device_fd) : device_fd_(device_fd) {}
	~RegionHosts();
	RegionHosts(const RegionHosts &) = delete;
	RegionHosts &operator=(const RegionHosts &) = delete;

	// A new (unsized) module region created by the host of owner's memory
	// cgroup (the host stays in msharefsd's when it cannot join that one);
	// by msharefsd itself if no host can be started (*here is then true).
	// Returns 0 or errno.
	int create(pid_t owner, UniqueFd *region, bool *here);

private:
	struct Host {
		pid_t pid = 0;
		UniqueFd sock; // msharefsd's end; the host exits when it closes
	};
	int spawn(const std::string &cgroup, Host *host);
	int create_in(Host &host, UniqueFd *region);
	int create_here(UniqueFd *region);

	int device_fd_;
	std::mutex lock_;
	std::map<std::string, Host> hosts_; // by cgroup path; guarded by lock_
};

} // namespace msharefs
