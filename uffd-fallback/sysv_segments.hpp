// System V shared memory adopted by mshare-run.
//
// A segment of at least the threshold is a pair:
//  - a stub: a real one-page System V segment with the program's key, flags
//    and mode, whose first bytes say what the segment really is (a header).
//    The kernel keeps doing everything System V promises for it: keys,
//    IPC_CREAT/IPC_EXCL, permissions, IPC_STAT times and pids, shm_nattch
//    (each attach of the segment attaches the stub too), IPC_RMID while
//    attached, inheritance across fork, detach at exit;
//  - the region "sysv-<shmid>" on the mount, released by its creator, which
//    holds the memory. shmat maps its window; IPC_RMID unlinks its name, so
//    that the memory is freed when the last attachment is gone.
// shmget, shmat, shmdt and shmctl of anything else go to the kernel as they
// are.
#pragma once

#include <sys/shm.h>

namespace msharefs::runtime::sysv {

int shmget(key_t key, size_t size, int flags);
void *shmat(int shmid, const void *addr, int flags);
int shmdt(const void *addr);
int shmctl(int shmid, int cmd, struct shmid_ds *buf);

} // namespace msharefs::runtime::sysv
