// System V shared memory adopted by mshare-run; see sysv_segments.hpp.
#include "sysv_segments.hpp"

#include "adoption.hpp"
#include "runtime.hpp"

#include "msharefs/unique_fd.hpp"

#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SHM_HUGE_SHIFT
#define SHM_HUGE_SHIFT 26
#endif

namespace msharefs::runtime::sysv {

namespace {

constexpr size_t kStubSize = 4096;
constexpr char kMagic[16] = "msharefs-sysv-1";

// The first bytes of a stub.
struct StubHeader {
	char magic[16];
	uint64_t segment_size; // what shmget asked for
	uint64_t region_size;
	// The region: "sysv-SHMID-NONCE". The nonce keeps segments of the same
	// id in other IPC namespaces (containers sharing the mount) apart.
	char region[48];
};

int real_shmget(key_t key, size_t size, int flags)
{
	return static_cast<int>(syscall(SYS_shmget, key, size, flags));
}

void *real_shmat(int id, const void *addr, int flags)
{
	return reinterpret_cast<void *>(syscall(SYS_shmat, id, addr, flags));
}

int real_shmdt(const void *addr)
{
	return static_cast<int>(syscall(SYS_shmdt, addr));
}

int real_shmctl(int id, int cmd, struct shmid_ds *buf)
{
	return static_cast<int>(syscall(SYS_shmctl, id, cmd, buf));
}

std::string new_region_name(int shmid)
{
	uint64_t nonce = 0;
	if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
		nonce = (static_cast<uint64_t>(getpid()) << 32) ^ static_cast<uint64_t>(time(nullptr));
	char name[48];
	snprintf(name, sizeof(name), "sysv-%d-%016" PRIx64, shmid, nonce);
	return name;
}

std::string region_of(const StubHeader &h)
{
	return std::string(h.region, strnlen(h.region, sizeof(h.region)));
}

// One attachment of an adopted segment in this process.
struct Attachment {
	int shmid;
	void *stub; // the stub's own attachment (shm_nattch)
	size_t segment_size;
	std::string region;
};

std::mutex lock;
std::map<uintptr_t, Attachment> attachments; // by window base

// A fork while another thread holds lock must not leave the child a lock
// nobody will release.
[[maybe_unused]] const int fork_handlers = pthread_atfork([] { lock.lock(); }, [] { lock.unlock(); },
							   [] { lock.unlock(); });

// The header of shmid if it is an adopted segment's stub (and in *stat its
// IPC_STAT). Attaches the stub read-only for a moment; false if the caller
// may not, or it is no stub.
bool read_header(int shmid, StubHeader *h, struct shmid_ds *stat = nullptr)
{
	struct shmid_ds ds {};
	if (real_shmctl(shmid, IPC_STAT, &ds) < 0 || ds.shm_segsz != kStubSize)
		return false;
	void *p = real_shmat(shmid, nullptr, SHM_RDONLY);
	if (p == reinterpret_cast<void *>(-1))
		return false;
	std::memcpy(h, p, sizeof(*h));
	real_shmdt(p);
	if (stat)
		*stat = ds;
	return std::memcmp(h->magic, kMagic, sizeof(kMagic)) == 0;
}

// Makes the stub shmid (made by this process with IPC_EXCL, mode 0600) a
// segment of `size` bytes: its region, its header, then the program's mode.
// 0 or errno (the stub is removed on failure).
int adopt(int shmid, size_t size, int flags)
{
	Adopter &adopter = Adopter::get();
	static_assert(SHM_HUGE_SHIFT == MAP_HUGE_SHIFT, "huge page sizes are encoded alike");
	const std::string name = new_region_name(shmid);
	uint64_t region_size = 0;
	UniqueFd region(adopter.create_anonymous_region(name, size, flags & SHM_HUGETLB, flags, &region_size));
	int err = region ? 0 : errno;
	if (!err && fchmod(region.get(), static_cast<mode_t>(flags & 0777) | 0600) < 0)
		err = errno;
	void *p = err ? reinterpret_cast<void *>(-1) : real_shmat(shmid, nullptr, 0);
	if (!err && p == reinterpret_cast<void *>(-1))
		err = errno;
	if (!err) {
		StubHeader h{};
		std::memcpy(h.magic, kMagic, sizeof(kMagic));
		h.segment_size = size;
		h.region_size = region_size;
		snprintf(h.region, sizeof(h.region), "%s", name.c_str());
		std::memcpy(p, &h, sizeof(h));
		real_shmdt(p);
		struct shmid_ds ds {};
		if (real_shmctl(shmid, IPC_STAT, &ds) < 0)
			err = errno;
		ds.shm_perm.mode = static_cast<unsigned short>(flags & 0777);
		if (!err && real_shmctl(shmid, IPC_SET, &ds) < 0)
			err = errno;
	}
	if (err) {
		unlinkat(adopter.mount_fd(), name.c_str(), 0);
		real_shmctl(shmid, IPC_RMID, nullptr);
	} else {
		Adopter::note("System V segment", name, size);
	}
	return err;
}

// A stub another process is still making (a page nobody has attached yet,
// from a live creator): its header is on the way.
bool being_made(int shmid)
{
	struct shmid_ds ds {};
	return real_shmctl(shmid, IPC_STAT, &ds) == 0 && ds.shm_segsz == kStubSize && ds.shm_lpid == 0 &&
	       kill(ds.shm_cpid, 0) == 0;
}

bool adopting(size_t size)
{
	const AdoptionSettings &s = AdoptionSettings::get();
	return !s.mount.empty() && size >= s.min_size && size > kStubSize;
}

} // namespace

int shmget(key_t key, size_t size, int flags)
{
	if (AdoptionSettings::get().mount.empty())
		return real_shmget(key, size, flags);
	const int plain_flags = flags & ~(SHM_HUGETLB | (0x3f << SHM_HUGE_SHIFT));
	for (int attempt = 0; attempt < 400; attempt++) {
		if (key != IPC_PRIVATE) {
			const int existing = real_shmget(key, 0, 0);
			if (existing >= 0) {
				StubHeader h{};
				if ((flags & IPC_CREAT) && (flags & IPC_EXCL)) {
					errno = EEXIST;
					return -1;
				}
				if (!read_header(existing, &h)) {
					if (being_made(existing)) {
						usleep(5000);
						continue;
					}
					return real_shmget(key, size, flags);
				}
				if (size > h.segment_size) {
					errno = EINVAL;
					return -1;
				}
				return real_shmget(key, 0, flags); // the kernel checks the mode
			}
			if (errno != ENOENT || !(flags & IPC_CREAT))
				return real_shmget(key, size, flags);
		}
		if (!adopting(size))
			return real_shmget(key, size, flags);
		// Made with IPC_EXCL: one process makes a key's segment; the
		// others find it above once it is whole.
		const int id = real_shmget(key, kStubSize, IPC_CREAT | IPC_EXCL | 0600 | (plain_flags & ~0777 & ~IPC_CREAT & ~IPC_EXCL));
		if (id < 0 && errno == EEXIST && key != IPC_PRIVATE)
			continue;
		if (id < 0)
			return real_shmget(key, size, flags);
		if (int err = adopt(id, size, flags)) {
			fprintf(stderr, "mshare-run: shmget of %zu bytes not adopted: %s\n", size, strerror(err));
			return real_shmget(key, size, flags); // the plain call decides
		}
		return id;
	}
	errno = EAGAIN;
	return -1;
}

void *shmat(int shmid, const void *addr, int flags)
{
	StubHeader h{};
	struct shmid_ds ds {};
	if (AdoptionSettings::get().mount.empty() || !read_header(shmid, &h, &ds))
		return real_shmat(shmid, addr, flags);
	auto fail = [](int err) {
		errno = err;
		return reinterpret_cast<void *>(-1);
	};
	// Windows never execute: an attach for execution is not permitted.
	if (flags & SHM_EXEC)
		return fail(EACCES);
	uintptr_t want = reinterpret_cast<uintptr_t>(addr);
	if (want && (flags & SHM_RND))
		want &= ~static_cast<uintptr_t>(SHMLBA - 1);
	const uint64_t align = Adopter::get().alignment();
	if (!align)
		return fail(ENODEV);
	if (want % align)
		return fail(EINVAL); // a window starts on mshare_info alignment
	const bool read_only = flags & SHM_RDONLY;
	UniqueFd region(openat(Adopter::get().mount_fd(), region_of(h).c_str(),
			       (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
	// IPC_RMID unlinked the region: a segment removed while attached takes
	// no new attach, not even by its id, which Linux allows.
	if (!region)
		return fail(errno == ENOENT ? EIDRM : errno);
	// The region must be the segment creator's: a name made by anyone else
	// is not this segment's memory.
	struct stat rst {};
	if (fstat(region.get(), &rst) < 0 || rst.st_uid != ds.shm_perm.cuid)
		return fail(EACCES);
	// The stub's attach checks the caller's rights and counts the attach.
	void *stub = real_shmat(shmid, nullptr, read_only ? SHM_RDONLY : 0);
	if (stub == reinterpret_cast<void *>(-1))
		return stub;
	const int prot = read_only ? PROT_READ : PROT_READ | PROT_WRITE;
	void *p = Adopter::get().map_region(region.get(), reinterpret_cast<void *>(want), h.region_size,
					    h.segment_size, prot, want && (flags & SHM_REMAP));
	if (p != MAP_FAILED && want && reinterpret_cast<uintptr_t>(p) != want) {
		Adopter::get().unmap(p, h.segment_size);
		p = MAP_FAILED;
		errno = EINVAL; // the address is taken and SHM_REMAP was not given
	}
	if (p == MAP_FAILED) {
		const int err = errno;
		real_shmdt(stub);
		return fail(err);
	}
	std::lock_guard<std::mutex> guard(lock);
	attachments[reinterpret_cast<uintptr_t>(p)] = Attachment{shmid, stub, h.segment_size, region_of(h)};
	return p;
}

int shmdt(const void *addr)
{
	Attachment a{};
	{
		std::lock_guard<std::mutex> guard(lock);
		auto it = attachments.find(reinterpret_cast<uintptr_t>(addr));
		if (it == attachments.end())
			return real_shmdt(addr);
		a = it->second;
		attachments.erase(it);
	}
	Adopter::get().unmap(const_cast<void *>(addr), a.segment_size);
	const int r = real_shmdt(a.stub);
	// The last detach of a removed segment (IPC_RMID, or ipcrm from
	// outside) destroyed the stub: its region's name goes too.
	struct shmid_ds ds {};
	if (real_shmctl(a.shmid, IPC_STAT, &ds) < 0 && (errno == EINVAL || errno == EIDRM))
		unlinkat(Adopter::get().mount_fd(), a.region.c_str(), 0);
	return r;
}

int shmctl(int shmid, int cmd, struct shmid_ds *buf)
{
	if (AdoptionSettings::get().mount.empty())
		return real_shmctl(shmid, cmd, buf);
	switch (cmd) {
	case IPC_STAT:
	case SHM_STAT:
	case SHM_STAT_ANY: {
		const int r = real_shmctl(shmid, cmd, buf);
		StubHeader h{};
		const int id = cmd == IPC_STAT ? shmid : r;
		if (r >= 0 && buf && buf->shm_segsz == kStubSize && read_header(id, &h))
			buf->shm_segsz = h.segment_size;
		return r;
	}
	case IPC_RMID: {
		StubHeader h{};
		const bool adopted = read_header(shmid, &h);
		const int r = real_shmctl(shmid, cmd, buf);
		// Attachments keep the region; its memory goes with the last.
		if (r == 0 && adopted)
			unlinkat(Adopter::get().mount_fd(), region_of(h).c_str(), 0);
		return r;
	}
	default:
		return real_shmctl(shmid, cmd, buf);
	}
}

} // namespace msharefs::runtime::sysv
