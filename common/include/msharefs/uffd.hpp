// userfaultfd definitions newer than the distribution's uapi headers, and
// the one rule the daemon and the runtime must agree on: which objects the
// runtime places under userfaultfd control.
#pragma once

#include <linux/userfaultfd.h>

#include <cstdint>

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00) // on /dev/userfaultfd (Linux 6.1)
#endif
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif

namespace msharefs {

// True for files the runtime places under userfaultfd (MISSING, MINOR and
// write-protect registration): shmem (tmpfs, memfd) with 4 KiB pages. Huge
// page objects (hugetlbfs, shmem THP) stay native so that their PMD entries,
// and on hugetlbfs the PMD tables themselves, are installed by the kernel
// (MINOR or WP registration disables hugetlb PMD sharing); protections on
// them are applied with mprotect by each attacher's runtime.
bool uffd_capable_file(int fd);

// UFFDIO_WRITEPROTECT of [addr, addr+len) on uffd: 0 or errno. EAGAIN (the
// address space is changing) is retried unless retry_busy is false: the
// fault handler must not wait on an event only it can read.
int uffd_write_protect(int uffd, uint64_t addr, uint64_t len, bool protect, bool retry_busy = true);

} // namespace msharefs
