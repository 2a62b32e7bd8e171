// The keeper: a small process that outlives msharefsd and holds the
// descriptors the mount cannot lose — the /dev/fuse connection and the files
// callers mapped into regions. While it holds the connection the kernel keeps
// the mount alive and queues requests, so a daemon killed with SIGKILL loses
// nothing: its successor takes the descriptors back and carries on.
// When the mount goes away the keeper removes the mount's state directory.
#pragma once

#include "msharefs/unique_fd.hpp"

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace msharefs {

// Starts the keeper for a freshly mounted connection. Returns its pid. When
// the connection goes, it removes the mount's state (<state_root>/<state_name>).
pid_t spawn_keeper(const std::string &socket_path, const std::string &state_root, const std::string &state_name,
		   int fuse_fd);

class KeeperClient {
public:
	// Connects to a running keeper; nullopt if there is none.
	static std::optional<KeeperClient> connect(const std::string &socket_path);

	int put(const std::string &tag, int fd); // 0 or errno
	int drop(const std::string &tag);
	// Every descriptor the keeper holds, with its tag.
	std::vector<std::pair<std::string, UniqueFd>> take_all();

private:
	explicit KeeperClient(UniqueFd sock) : sock_(std::move(sock)) {}
	UniqueFd sock_;
};

} // namespace msharefs
