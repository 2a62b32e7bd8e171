#include "state_dir.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

namespace msharefs {

namespace {

// The mounts of a state directory (BackingStore), taken down with it.
constexpr const char *kStoreMounts[] = {"objects", "thp", "hugetlb"};

std::string describe_mode(mode_t mode)
{
	char buf[8];
	std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
	return buf;
}

// Checks an opened directory: ours, a directory, and writable by no one
// else (exactly `mode` for the mount's own directory). Empty if it is fine.
std::string check_directory(int fd, const std::string &path, mode_t wanted, bool exact)
{
	struct stat st {};
	if (fstat(fd, &st) < 0)
		return path + ": " + std::strerror(errno);
	if (!S_ISDIR(st.st_mode))
		return path + ": not a directory";
	if (st.st_uid != geteuid())
		return path + ": owned by uid " + std::to_string(st.st_uid) + ", not " + std::to_string(geteuid()) +
		       " (remove it, or choose another -o statedir=)";
	const mode_t mode = st.st_mode & 07777;
	if (exact ? mode != wanted : (mode & 022) != 0)
		return path + ": mode " + describe_mode(mode) + ", expected " + describe_mode(wanted) +
		       " (remove it, or choose another -o statedir=)";
	return {};
}

// mkdirat + an O_NOFOLLOW open + the checks. A directory made here gets
// exactly `mode`, whatever the umask.
std::string open_directory(int parent, const std::string &name, const std::string &path, mode_t mode, bool exact,
			   UniqueFd *out)
{
	const bool made = mkdirat(parent, name.c_str(), mode) == 0;
	if (!made && errno != EEXIST)
		return path + ": cannot create it: " + std::strerror(errno);
	UniqueFd fd(openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
	if (!fd)
		return path + (errno == ELOOP || errno == ENOTDIR ? ": not a directory (a link or a file)"
								  : ": " + std::string(std::strerror(errno)));
	if (made && fchmod(fd.get(), mode) < 0)
		return path + ": chmod: " + std::strerror(errno);
	if (std::string wrong = check_directory(fd.get(), path, mode, exact); !wrong.empty())
		return wrong;
	*out = std::move(fd);
	return {};
}

std::string parent_of(const std::string &path)
{
	const auto slash = path.find_last_of('/');
	if (slash == std::string::npos)
		return ".";
	return slash == 0 ? "/" : path.substr(0, slash);
}

std::string base_of(const std::string &path) { return path.substr(path.find_last_of('/') + 1); }

} // namespace

bool StateDir::valid_name(const std::string &name)
{
	return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
	       name.size() <= 200;
}

std::string StateDir::open(const std::string &root, const std::string &name, StateDir *out)
{
	if (root.empty() || root[0] != '/')
		return "statedir=" + root + ": not an absolute path";
	if (!valid_name(name))
		return "state=" + name + ": not a plain file name";
	std::string trimmed = root;
	while (trimmed.size() > 1 && trimmed.back() == '/')
		trimmed.pop_back();
	UniqueFd parent(::open(parent_of(trimmed).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (!parent)
		return parent_of(trimmed) + ": " + std::strerror(errno);
	UniqueFd root_fd;
	if (std::string wrong = open_directory(parent.get(), base_of(trimmed), trimmed, 0755, false, &root_fd);
	    !wrong.empty())
		return wrong;
	UniqueFd dir;
	if (std::string wrong = open_directory(root_fd.get(), name, trimmed + "/" + name, 0700, true, &dir);
	    !wrong.empty())
		return wrong;
	out->root_ = trimmed;
	out->name_ = name;
	out->path_ = trimmed + "/" + name;
	out->fd_ = std::move(dir);
	return {};
}

int StateDir::open_file(const std::string &name, bool may_exist) const
{
	const int flags = O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (may_exist ? 0 : O_EXCL);
	UniqueFd fd(openat(fd_.get(), name.c_str(), flags, 0600));
	if (!fd)
		return -1;
	struct stat st {};
	if (fstat(fd.get(), &st) < 0)
		return -1;
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
		errno = EPERM;
		return -1;
	}
	return fd.release();
}

namespace {

bool same_file(int a, int b)
{
	struct stat sa {}, sb {};
	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

} // namespace

void remove_mount_state(const std::string &root, const std::string &name, int expected_dir)
{
	if (!StateDir::valid_name(name))
		return;
	UniqueFd root_fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
	if (!root_fd)
		return;
	UniqueFd dir(openat(root_fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
	if (!dir || !check_directory(dir.get(), root + "/" + name, 0700, true).empty())
		return;
	if (expected_dir >= 0 && !same_file(dir.get(), expected_dir))
		return; // another daemon's state now
	const std::string socket = name + ".runtime";
	struct stat st {};
	if (fstatat(root_fd.get(), socket.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode))
		unlinkat(root_fd.get(), socket.c_str(), 0);
	// The mounts in this very directory (through its descriptor), not in
	// whatever the path names by now.
	const std::string path = "/proc/self/fd/" + std::to_string(dir.get());
	for (const char *mount : kStoreMounts) {
		const std::string at = path + "/" + mount;
		while (umount2(at.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
		}
		unlinkat(dir.get(), mount, AT_REMOVEDIR);
	}
	if (DIR *d = fdopendir(dup(dir.get()))) {
		while (dirent *de = readdir(d)) {
			if (de->d_type != DT_DIR)
				unlinkat(dirfd(d), de->d_name, 0);
		}
		closedir(d);
	}
	UniqueFd still(openat(root_fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
	if (still && same_file(still.get(), dir.get()))
		unlinkat(root_fd.get(), name.c_str(), AT_REMOVEDIR);
}

} // namespace msharefs
