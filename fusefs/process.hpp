// Facts about client processes, read from /proc and pidfds.
#pragma once

#include <cstdint>
#include <sys/types.h>

namespace msharefs {

// Thread-group id of a thread id (FUSE reports the calling thread).
pid_t thread_group_of(pid_t tid);
// Start time of a process in clock ticks since boot (/proc/PID/stat field
// 22); 0 if the process does not exist.
uint64_t process_start_time(pid_t pid);
// A pidfd for pid if it still is the process that started at start_time;
// -1 otherwise.
int pidfd_of(pid_t pid, uint64_t start_time);
// A duplicate of another process's descriptor (pidfd_getfd); -1 with errno.
int steal_fd(pid_t tid, int fd);
// The system's default huge page size (Hugepagesize in /proc/meminfo).
uint64_t default_huge_page_size();

} // namespace msharefs
