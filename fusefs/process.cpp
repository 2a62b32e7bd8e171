#include "process.hpp"

#include "msharefs/unique_fd.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

namespace msharefs {

pid_t thread_group_of(pid_t tid)
{
	std::ifstream in("/proc/" + std::to_string(tid) + "/status");
	std::string line;
	while (std::getline(in, line))
		if (line.rfind("Tgid:", 0) == 0)
			return static_cast<pid_t>(std::stol(line.substr(5)));
	return tid;
}

uint64_t process_start_time(pid_t pid)
{
	std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
	std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
	// Fields after the command name, which may hold spaces and parentheses.
	const auto close = stat.rfind(')');
	if (close == std::string::npos)
		return 0;
	const char *p = stat.c_str() + close + 2;
	// p is at field 3 (state); the start time is field 22.
	for (int field = 3; field < 22 && *p; field++) {
		p = std::strchr(p, ' ');
		if (!p)
			return 0;
		p++;
	}
	return std::strtoull(p, nullptr, 10);
}

int pidfd_of(pid_t pid, uint64_t start_time)
{
	if (pid <= 0)
		return -1;
	UniqueFd fd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
	if (!fd)
		return -1;
	// Checked after opening: the pidfd now pins this pid.
	if (process_start_time(pid) != start_time)
		return -1;
	return fd.release();
}

int steal_fd(pid_t tid, int fd)
{
	const pid_t tgid = thread_group_of(tid);
	UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, tgid, 0)));
	if (!pidfd)
		return -1;
	return static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.get(), fd, 0));
}

uint64_t default_huge_page_size()
{
	std::ifstream in("/proc/meminfo");
	std::string line;
	while (std::getline(in, line))
		if (line.rfind("Hugepagesize:", 0) == 0)
			return std::stoull(line.substr(13)) * 1024;
	return 2 << 20;
}

} // namespace msharefs
