// The daemon's private state of one mount:
//   <root>/              root:root 0755 (default /run/msharefs, -o statedir=)
//   <root>/<name>/       0700, the daemon's own: registry, journal, keeper
//                        socket and the mounts that hold region objects
//                        (objects: tmpfs, thp: tmpfs huge=within_size,
//                        hugetlb: hugetlbfs)
//   <root>/<name>.runtime  the runtime socket, mode 0666 (datapath=uffd)
// Both directories are created without following links and checked (owner,
// type, mode) before anything is put in them; no one else can create a name
// in either, so paths inside them are the daemon's.
#pragma once

#include "msharefs/unique_fd.hpp"

#include <string>

namespace msharefs {

inline constexpr const char *kDefaultStateRoot = "/run/msharefs";

class StateDir {
public:
	// Opens (creating it if needed) <root>/<name>; empty message on success,
	// otherwise one line saying what is wrong.
	static std::string open(const std::string &root, const std::string &name, StateDir *out);
	// A state name is one path component: no '/', not "." or "..".
	static bool valid_name(const std::string &name);

	const std::string &path() const { return path_; }
	int fd() const { return fd_.get(); }
	std::string file(const std::string &name) const { return path_ + "/" + name; }
	std::string runtime_socket() const { return root_ + "/" + name_ + ".runtime"; }
	const std::string &root() const { return root_; }
	const std::string &name() const { return name_; }

	// Opens a file in the directory: O_NOFOLLOW, and O_EXCL unless
	// may_exist. -1 with errno.
	int open_file(const std::string &name, bool may_exist) const;

private:
	std::string root_;
	std::string name_;
	std::string path_;
	UniqueFd fd_;
};

// Removes everything of one mount's state: takes down the object mounts,
// removes the files and the directory <root>/<name>, and the runtime socket.
// Touches nothing outside them.
// With `expected_dir` (a descriptor of the state directory, which keeps its
// inode from being reused), only if <root>/<name> still is that directory:
// a keeper that outlives its mount must not remove the state of the next
// daemon on the same mount point. Everything is done through the directory's
// descriptor, so a directory that replaces it meanwhile is not touched.
void remove_mount_state(const std::string &root, const std::string &name, int expected_dir = -1);

} // namespace msharefs
