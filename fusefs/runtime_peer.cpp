#include "runtime_peer.hpp"

#include "msharefs/runtime_protocol.hpp"

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <mutex>
#include <string>
#include <thread>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

namespace msharefs {

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

namespace {

// Where /proc/self/fd/N points ("anon_inode:[userfaultfd]", "/memfd:x (deleted)").
std::string fd_target(int fd)
{
	char buf[256];
	const ssize_t n = readlink(fd_path(fd).c_str(), buf, sizeof(buf) - 1);
	return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// Client descriptors waiting to be closed, and the thread that closes them.
struct Closer {
	std::mutex lock;
	std::condition_variable queued;
	std::deque<UniqueFd> fds;

	Closer()
	{
		std::thread([this] { run(); }).detach();
	}
	[[noreturn]] void run()
	{
		for (;;) {
			UniqueFd fd;
			{
				std::unique_lock<std::mutex> guard(lock);
				queued.wait(guard, [&] { return !fds.empty(); });
				fd = std::move(fds.front());
				fds.pop_front();
			}
			fd.reset();
		}
	}
};

} // namespace

void close_client_descriptors(std::vector<UniqueFd> fds)
{
	if (fds.empty())
		return;
	static Closer *closer = new Closer(); // lives as long as the daemon
	{
		std::lock_guard<std::mutex> guard(closer->lock);
		for (UniqueFd &fd : fds)
			if (fd)
				closer->fds.push_back(std::move(fd));
	}
	closer->queued.notify_one();
}

int check_userfaultfd(int fd)
{
	return fd_target(fd) == "anon_inode:[userfaultfd]" ? 0 : EINVAL;
}

int check_ticket(int fd)
{
	if (fd_target(fd).rfind("/memfd:", 0) != 0)
		return EINVAL;
	const int seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || !(seals & F_SEAL_SHRINK))
		return EINVAL;
	struct stat st {};
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < static_cast<off_t>(sizeof(RuntimeTicket)))
		return EINVAL;
	return 0;
}

int check_region_fd(int fd, dev_t mount_dev, uint64_t ino, int *mode)
{
	struct statx stx {};
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_INO, &stx) < 0)
		return EINVAL;
	if (!mount_dev || makedev(stx.stx_dev_major, stx.stx_dev_minor) != mount_dev || stx.stx_ino != ino ||
	    !S_ISREG(stx.stx_mode))
		return EACCES;
	const int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_PATH))
		return EACCES;
	*mode = fl & O_ACCMODE;
	return *mode == O_RDONLY || *mode == O_RDWR ? 0 : EACCES;
}

int descriptor_with_access(int fd, int mode, UniqueFd *out)
{
	const int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return errno;
	if (mode == O_RDWR || (fl & O_ACCMODE) == O_RDONLY)
		out->reset(fcntl(fd, F_DUPFD_CLOEXEC, 0));
	else
		out->reset(open(fd_path(fd).c_str(), O_RDONLY | O_CLOEXEC));
	return *out ? 0 : errno;
}

} // namespace msharefs
