// Resolves the faults of every window of this process: batches of up to
// 2 MiB are allocated in the object and mapped with one UFFDIO_CONTINUE;
// accesses the layout does not allow get SIGSEGV with the faulting address.
#include "runtime.hpp"

#include "msharefs/uffd.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace msharefs::runtime {

namespace {

constexpr uint64_t kBatch = 2ULL << 20;

// A fault the layout does not allow. Only the faulting thread may queue
// itself a SIGSEGV with a fault code and address, so it is asked to, with
// the runtime's signal (see Runtime::fault_signal()).
void raise_fault(pid_t tid, uint64_t addr, int sig, int code)
{
	siginfo_t si{};
	si.si_signo = Runtime::fault_signal();
	si.si_code = SI_QUEUE;
	si.si_errno = (sig << 8) | code;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_ptr = reinterpret_cast<void *>(addr);
	syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, si.si_signo, &si);
}

void raise_segv(pid_t tid, uint64_t addr, int code)
{
	raise_fault(tid, addr, SIGSEGV, code);
}

void wake(int uffd, uint64_t addr, uint64_t len)
{
	uffdio_range range{addr, len};
	ioctl(uffd, UFFDIO_WAKE, &range);
}

// Maps [addr, addr+len) from the page cache; pages some other fault mapped
// meanwhile are skipped. 0, or the errno of a failure that is not EEXIST.
int map_pages(int uffd, uint64_t addr, uint64_t len, uint64_t step, bool write_protect)
{
	while (len) {
		uffdio_continue c{};
		c.range.start = addr;
		c.range.len = len;
		c.mode = write_protect ? UFFDIO_CONTINUE_MODE_WP : 0;
		if (ioctl(uffd, UFFDIO_CONTINUE, &c) == 0)
			return 0;
		const int err = errno;
		uint64_t done = c.mapped > 0 ? static_cast<uint64_t>(c.mapped) : 0;
		// EAGAIN with nothing done: an mremap waits for this thread to
		// read its event; the faulting thread is woken and faults again.
		if (err == EAGAIN && done == 0)
			return err;
		if (err == EAGAIN || err == EINTR) {
			addr += done;
			len -= done;
			continue;
		}
		if (err != EEXIST)
			return err;
		done += step; // the page already mapped
		if (done >= len)
			return 0;
		addr += done;
		len -= done;
	}
	return 0;
}

// A read-only object descriptor cannot fallocate: its pages are read in
// through a mapping of its own, as a read fault on the object would.
void populate_read_only(int fd, uint64_t offset, uint64_t len)
{
	void *p = raw_mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(offset));
	if (p == MAP_FAILED)
		return;
	madvise(p, len, MADV_POPULATE_READ);
	raw_munmap(p, len);
}

} // namespace

void FaultHandler::run(int uffd, int stop_fd)
{
	pollfd fds[2] = {{uffd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
	uffd_msg msgs[32];
	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (fds[1].revents)
			return;
		const ssize_t n = read(uffd, msgs, sizeof(msgs));
		if (n <= 0)
			continue;
		for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(uffd_msg); i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			const auto &pf = msgs[i].arg.pagefault;
			resolve(pf.address, pf.flags, static_cast<pid_t>(pf.feat.ptid));
		}
	}
}

void FaultHandler::resolve(uint64_t addr, uint64_t flags, pid_t tid)
{
	const uint64_t page_addr = addr & ~(kPageSize - 1);
	std::shared_ptr<Window> w = rt_.window_at(addr);
	RuntimeTicket *ticket = rt_.ticket();
	if (!w) {
		wake(rt_.uffd(), page_addr, kPageSize);
		return;
	}
	// Tell the daemon a decision is being made (see RuntimeTicket), before
	// reading the layout it is made from.
	__atomic_store_n(&ticket->busy_seq, 1, __ATOMIC_SEQ_CST);
	PublishedLookup look = w->layout().lookup(addr - w->base());
	__atomic_store_n(&ticket->busy_seq, look.seq + 1, __ATOMIC_SEQ_CST);
	if (look.needed_capacity) {
		// No memory to map the layout's mappings: the access fails as
		// one that found no memory for the object.
		raise_fault(tid, addr, SIGBUS, BUS_ADRERR);
	} else if (!look.mapping || (look.flags & kPublishedOrphaned)) {
		raise_segv(tid, addr, SEGV_MAPERR);
	} else if (look.mapping->state & kMappingFilling) {
		// Woken by the control thread once the copy is published done.
	} else {
		const PublishedMapping &m = *look.mapping;
		const bool writable = w->writable() &&
				      published_writable(m, look.flags, look.lock_holder, rt_.tgid());
		const bool readable = m.prot & (PROT_READ | PROT_WRITE | PROT_EXEC);
		if (flags & UFFD_PAGEFAULT_FLAG_WP) {
			if (!writable)
				raise_segv(tid, addr, SEGV_ACCERR);
			// EAGAIN: the address space is changing under an event only
			// this thread reads; the store faults again afterwards.
			else if (uffd_write_protect(rt_.uffd(), page_addr, kPageSize, false, false))
				wake(rt_.uffd(), page_addr, kPageSize);
		} else if (!readable || ((flags & UFFD_PAGEFAULT_FLAG_WRITE) && !writable)) {
			raise_segv(tid, addr, SEGV_ACCERR);
		} else {
			if (int err = fill(*w, addr, m, writable); err == ENOSPC || err == ENOMEM) {
				// No memory for the object (a huge page pool ran dry):
				// the access fails as on a hugetlb mapping.
				raise_fault(tid, addr, SIGBUS, BUS_ADRERR);
			}
			// A change published meanwhile may have been applied to
			// the range before this install: bring it in line.
			for (;;) {
				const uint64_t seq = w->layout().seq();
				if (seq == look.seq)
					break;
				look = w->layout().lookup(addr - w->base());
				if (!look.mapping)
					break;
				const bool now = w->writable() && published_writable(*look.mapping, look.flags,
										       look.lock_holder, rt_.tgid());
				const uint64_t start = std::max(page_addr & ~(kBatch - 1),
								w->base() + look.mapping->region_offset);
				const uint64_t end = std::min((page_addr & ~(kBatch - 1)) + kBatch,
							      w->base() + look.mapping->region_offset +
								      look.mapping->size);
				if (now != writable && start < end && w->writable())
					uffd_write_protect(rt_.uffd(), start, end - start, !now, false);
			}
		}
	}
	__atomic_store_n(&ticket->busy_seq, 0, __ATOMIC_RELEASE);
}

int FaultHandler::fill(Window &w, uint64_t addr, const PublishedMapping &m, bool writable)
{
	const uint64_t step = m.huge_page_size ? m.huge_page_size : kPageSize;
	const uint64_t batch = std::max(kBatch, step);
	const uint64_t map_start = w.base() + m.region_offset;
	const uint64_t map_end = map_start + m.size;
	const uint64_t start = std::max(map_start, addr & ~(batch - 1));
	const uint64_t end = std::min(map_end, (addr & ~(batch - 1)) + batch);
	const int fd = w.object_fd(m.object_id);
	if (fd < 0) {
		wake(rt_.uffd(), addr & ~(kPageSize - 1), kPageSize);
		return 0;
	}
	const uint64_t object_offset = m.object_offset + (start - map_start);
	// Allocates what is missing of the batch; present pages stay.
	if (fallocate(fd, 0, static_cast<off_t>(object_offset), static_cast<off_t>(end - start)) < 0) {
		if (errno == EBADF)
			populate_read_only(fd, object_offset, end - start);
		else if (errno == ENOSPC || errno == ENOMEM)
			return errno;
	}
	// A window mapped without PROT_WRITE is not registered for write
	// protection: its pages cannot be written anyway.
	const int err = map_pages(rt_.uffd(), start, end - start, step, !writable && w.writable());
	if (err)
		wake(rt_.uffd(), addr & ~(step - 1), step);
	return 0;
}

} // namespace msharefs::runtime
