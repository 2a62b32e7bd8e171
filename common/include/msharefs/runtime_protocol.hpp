// The conversation between msharefsd and the client runtime (uffd data path)
// on the daemon's runtime socket: a SOCK_SEQPACKET unix socket, one
// connection per attached window. Descriptors travel with SCM_RIGHTS.
//
//   runtime                              daemon
//   (before the process's first userfaultfd, when it may not make a full
//   one itself; a connection of its own, closed by the daemon after the reply)
//   lend_uffd {ino} +[region fd]         ->
//                                        <-  lend_uffd {status} +[/dev/userfaultfd]
//   (datapath=kmod without FUSE passthrough, instead of everything below; a
//   connection of its own, closed by the daemon after the reply)
//   module_file {ino} +[region fd]       ->
//                                        <-  module_file {status} +[module file]
//   attach {ino, base, size} +[uffd, ticket, region fd]   ->
//                                        <-  attached {status} +[published layout]
//   object {object_id}                   ->
//                                        <-  object {status, kind} +[object fd]
//   ready {seq synced}                   ->
//                                        <-  ready {status: 0, or EAGAIN to sync again}
//   ... then, unsolicited, while attached:
//                                        <-  sync {cookie}: recompose from the layout
//   done {cookie, status: 0, or why the window could not be recomposed} ->
//
// The runtime finds the socket through MSHAREFS_IOC_RUNTIME on a region fd;
// with kRuntimeModuleFiles in its flags the daemon serves module_file only
// (attach is answered EOPNOTSUPP): the window is an mmap() of the module's
// region file, opened with the access mode of the region fd sent.
//
// Trust: the daemon knows each peer by SO_PEERCRED. An attach proves the
// peer holds the region open: the region fd it sends must be that inode of
// the daemon's mount, and its access mode (O_RDONLY or O_RDWR) is the access
// every object descriptor of the attachment is handed out with. The uffd
// must be a userfaultfd, the ticket a memfd of at least sizeof(RuntimeTicket)
// sealed against shrinking; anything else is answered EINVAL and the peer is
// dropped, as is a peer whose socket is full (the daemon never waits to send)
// or who does not answer a sync in time. A lend_uffd is checked as an
// attach's region fd is; it is answered with a descriptor of the daemon's
// /dev/userfaultfd (opened at start, kept unless -o uffd_device=keep), from
// which the peer makes a userfaultfd that takes kernel-mode faults too
// (USERFAULTFD_IOC_NEW: the device's permission is checked at open only), or
// ENODEV when the daemon lends none. The published layout is a read-only
// descriptor of a memfd sealed against writes, growing and shrinking. The
// runtime accepts only a daemon whose SO_PEERCRED uid is 0 or the uid the
// mount was made by (user_id= of its mount options).
#pragma once

#include "msharefs/unique_fd.hpp"

#include <cstdint>
#include <linux/ioctl.h>
#include <string>
#include <sys/types.h>
#include <sys/un.h>
#include <vector>

// Project-private ioctl on a region file: where the runtime socket is.
struct msharefs_runtime_info {
	uint64_t ino;
	uint64_t alignment;    // as mshare_info reads
	char socket_path[108]; // abstract unix socket when it starts with '@'
	uint32_t flags;	       // kRuntimeModuleFiles, kRuntimeKernelWindows
};
#define MSHAREFS_IOC_RUNTIME _IOR('x', 0x40, struct msharefs_runtime_info)

namespace msharefs {

enum class RuntimeMsgType : uint32_t {
	attach = 1,
	attached,
	object,
	ready,
	sync,
	done,
	lend_uffd,
	module_file,
};

// msharefs_runtime_info.flags: windows are the module's, mapped from the
// module's file (see above), or from the region file itself (passthrough;
// no socket): the runtime only places them at an aligned address.
inline constexpr uint32_t kRuntimeModuleFiles = 1;
inline constexpr uint32_t kRuntimeKernelWindows = 2;

struct RuntimeMessage {
	RuntimeMsgType type;
	int32_t status; // 0 or an errno
	uint64_t ino;
	uint64_t a; // attach: window base; object: object id; ready: seq
	uint64_t b; // attach: window size
	uint64_t cookie;
};

// The per-process word a fault handler sets while it installs pages from a
// layout it read (the sequence number, odd-free, plus one), and clears when
// it is done; the daemon waits for older values to clear before a PROTECT
// returns, so no install decided on a stale protection survives it.
struct RuntimeTicket {
	uint64_t busy_seq;
};

// The address of a runtime socket name ('@' leading: abstract namespace).
sockaddr_un runtime_socket_address(const std::string &name, socklen_t *len);
// A connected SOCK_SEQPACKET socket, or -1 with errno.
int connect_runtime_socket(const std::string &name);

// 0 or errno. Sends msg with the descriptors in fds (may be empty); flags
// are added to sendmsg's (the daemon passes MSG_DONTWAIT).
int send_runtime_message(int sock, const RuntimeMessage &msg, const std::vector<int> &fds = {}, int flags = 0);
// 0, or errno (ECONNRESET on EOF). Received descriptors go to *fds.
int recv_runtime_message(int sock, RuntimeMessage *msg, std::vector<UniqueFd> *fds = nullptr, int flags = 0);

// The attach's descriptors, in this order.
inline constexpr size_t kAttachUffd = 0;
inline constexpr size_t kAttachTicket = 1;
inline constexpr size_t kAttachRegion = 2;
inline constexpr size_t kAttachFds = 3;

// What a runtime makes its userfaultfd from when it may not call
// userfaultfd(2) for a full one: the device msharefsd lends to peers that
// hold one of its regions open (see lend_uffd above).
inline constexpr const char *kUserfaultfdDevice = "/dev/userfaultfd";

} // namespace msharefs
