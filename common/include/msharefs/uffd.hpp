// userfaultfd definitions newer than the distribution's uapi headers, and
// the one rule the daemon and the runtime must agree on: which objects the
// runtime places under userfaultfd control.
#pragma once

#include <linux/userfaultfd.h>

#include <cstdint>

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif

namespace msharefs {

// True for files on shmem (tmpfs, memfd) and hugetlbfs: their mappings take
// userfaultfd MISSING, MINOR and write-protect registration.
bool uffd_capable_file(int fd);

// UFFDIO_WRITEPROTECT of [addr, addr+len) on uffd: 0 or errno.
int uffd_write_protect(int uffd, uint64_t addr, uint64_t len, bool protect);

} // namespace msharefs
