// A stress test of the uffd data path: 16 processes attach one region and,
// for a bounded time ($MSHAREFS_STRESS_SECONDS, 15 s by default), change
// their own part of it at random with CREATE_MAPPING, UNMAP and PROTECT,
// write it and read it back with checksums, and check each other's parts
// through their own windows. Each worker keeps a model of its part: data in
// a mapped range reads as last written, a range just created reads zero, a
// store to a read-only page or any access to a hole or a PROT_NONE page
// faults with SIGSEGV at the address and changes nothing. Nothing written may
// be lost, no process may hang, nothing may leak: the workers' descriptors
// and mappings, the daemon's descriptors, the region's objects.
//
// Seed: $MSHAREFS_STRESS_SEED (printed in the summary line, so a failing run
// replays the same choices in every worker, though not the same timing).
#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace msharefs::test;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kWords = kPage / 8;
constexpr uint64_t kStart = 2 * kTiB;
constexpr uint64_t kSize = kGiB;
constexpr uint32_t kRW = PROT_READ | PROT_WRITE;
constexpr uint32_t kAnon = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;

constexpr int kWorkers = 16;
constexpr uint64_t kSlot = kSize / kWorkers; // one worker's part of the region
// Inside a slot: a block every other worker checks, always mapped and
// rewritten as a whole under a sequence count; a probe page whose state
// (hole, read-write, read-only, PROT_NONE) every other worker checks; and
// the volatile area the worker changes at random. The volatile area
// straddles a 2 MiB boundary, the fault handler's batch.
constexpr uint64_t kStableOff = 0;
constexpr uint64_t kStablePages = 16;
constexpr uint64_t kProbeOff = 128 * 1024;
constexpr uint64_t kVolOff = kMiB;
constexpr uint64_t kVolPages = 512;

// An ioctl slower than this means an attacher did not answer in time (the
// daemon gives up waiting for one after 10 s): the change may not be seen.
constexpr double kSlowIoctlSeconds = 10.0;

enum : uint8_t { kHole = 0xff }; // a page no mapping covers (else its prot)
enum : uint32_t { kProbeHole, kProbeRW, kProbeRO, kProbeNone };

uint64_t slot_base(int slot) { return kStart + static_cast<uint64_t>(slot) * kSlot; }
char *ptr(uint64_t addr) { return reinterpret_cast<char *>(addr); }

const char *err_name(int err) { return err ? strerrorname_np(err) : "0"; }

// ---- the owner's changes ----------------------------------------------------

// Only the region's owner, the test process, may change its layout (SPEC
// section 2, "Ownership"). A worker asks the owner through a socket of its
// own; an owner thread per worker makes the ioctl and answers its errno, so
// the ioctls of different workers still reach the daemon concurrently.
struct OwnerRequest {
	uint64_t cmd;
	unsigned char arg[56];
};

// The worker's end: the region's changing ioctls, made by the owner.
class OwnerLink {
public:
	explicit OwnerLink(int socket) : socket_(socket) {}
	int ioctl(unsigned long cmd, const void *arg, size_t len) const
	{
		OwnerRequest req{cmd, {}};
		std::memcpy(req.arg, arg, std::min(len, sizeof(req.arg)));
		int32_t err = EIO;
		if (send(socket_, &req, sizeof(req), MSG_NOSIGNAL) != sizeof(req) ||
		    recv(socket_, &err, sizeof(err), 0) != sizeof(err))
			return EIO;
		return err;
	}

private:
	int socket_;
};

int create_mapping(const OwnerLink &owner, uint64_t addr, uint64_t size, uint64_t offset, uint32_t prot,
		   uint32_t flags)
{
	mshare_create c{addr, size, offset, prot, flags, static_cast<uint32_t>(-1)};
	return owner.ioctl(MSHAREFS_CREATE_MAPPING, &c, sizeof(c));
}

int unmap(const OwnerLink &owner, uint64_t addr, uint64_t size)
{
	mshare_unmap u{addr, size};
	return owner.ioctl(MSHAREFS_UNMAP, &u, sizeof(u));
}

int protect(const OwnerLink &owner, uint64_t addr, uint64_t size, uint32_t prot)
{
	mshare_protect p{addr, size, prot, 0};
	return owner.ioctl(MSHAREFS_PROTECT, &p, sizeof(p));
}

// The owner's end: a thread per worker, until every worker has exited.
class OwnerService {
public:
	OwnerService(int region_fd, int workers) : region_fd_(region_fd)
	{
		for (int i = 0; i < workers; i++) {
			int sv[2];
			REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
			owner_ends_.emplace_back(sv[0]);
			worker_ends_.emplace_back(sv[1]);
		}
		for (const Fd &end : owner_ends_)
			threads_.emplace_back([this, s = end.get()] { serve(s); });
	}
	~OwnerService()
	{
		worker_ends_.clear();
		for (const Fd &end : owner_ends_)
			shutdown(end.get(), SHUT_RDWR);
		for (auto &t : threads_)
			t.join();
	}
	OwnerLink link(int worker) const { return OwnerLink(worker_ends_[static_cast<size_t>(worker)].get()); }
	// Once the workers are forked: their exits end the threads.
	void close_worker_ends() { worker_ends_.clear(); }

private:
	void serve(int s) const
	{
		OwnerRequest req;
		while (recv(s, &req, sizeof(req), 0) == sizeof(req)) {
			const int32_t err = ::ioctl(region_fd_, req.cmd, req.arg) == 0 ? 0 : errno;
			if (send(s, &err, sizeof(err), MSG_NOSIGNAL) != sizeof(err))
				return;
		}
	}

	int region_fd_;
	std::vector<Fd> owner_ends_;
	std::vector<Fd> worker_ends_;
	std::vector<std::thread> threads_;
};

// ---- page contents ----------------------------------------------------------

uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

// A page written with stamp s: word 0 is s (so a wrong page says whose it
// is), then words derived from s, and a last word that stays 0 (the probe
// page's last byte is what other workers try to store to). Stamp 0 is the
// zero page of a fresh mapping.
void fill(uint64_t *w, uint64_t stamp)
{
	if (!stamp) {
		memset(w, 0, kPage);
		return;
	}
	w[0] = stamp;
	for (uint64_t i = 1; i < kWords - 1; i++)
		w[i] = mix(stamp * 1021 + i);
	w[kWords - 1] = 0;
}

uint64_t checksum(const uint64_t *w)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (uint64_t i = 0; i < kWords; i++) {
		h = (h ^ w[i]) * 0x100000001b3ULL;
		h = (h << 23) | (h >> 41);
	}
	return h;
}

uint64_t sum_of_stamp(uint64_t stamp)
{
	std::array<uint64_t, kWords> buf;
	fill(buf.data(), stamp);
	return checksum(buf.data());
}

// The stable block of a slot at generation gen (0: never written).
uint64_t stable_stamp(int slot, uint64_t gen, uint64_t page)
{
	return gen ? (uint64_t{0x5a} << 56) | (static_cast<uint64_t>(slot) << 48) | (gen << 8) | page : 0;
}

// ---- faults -----------------------------------------------------------------

Fault load_page(uint64_t addr, uint64_t *buf)
{
	return fault_of([&] { memcpy(buf, ptr(addr), kPage); });
}

Fault load_byte(uint64_t addr)
{
	return fault_of([&] { (void)*reinterpret_cast<volatile char *>(addr); });
}

Fault store_page(uint64_t addr, const uint64_t *buf)
{
	return fault_of([&] { memcpy(ptr(addr), buf, kPage); });
}

Fault store_byte(uint64_t addr, char value)
{
	return fault_of([&] { *reinterpret_cast<volatile char *>(addr) = value; });
}

std::string describe(const Fault &f)
{
	if (!f.sig)
		return "no fault";
	char buf[96];
	snprintf(buf, sizeof(buf), "%s code %d at %p", sigabbrev_np(f.sig), f.code, f.addr);
	return buf;
}

// ---- what a process holds ---------------------------------------------------

struct Usage {
	int fds = 0;	     // descriptors
	int object_fds = 0;  // of region objects and published layouts
	int window_maps = 0; // mappings inside the region's range
	int object_maps = 0; // mappings of region objects and layouts elsewhere
	bool operator==(const Usage &) const = default;
	std::string str() const
	{
		char buf[128];
		snprintf(buf, sizeof(buf), "%d fds (%d of objects), %d mappings in the window, %d of objects elsewhere",
			 fds, object_fds, window_maps, object_maps);
		return buf;
	}
};

bool is_object(const char *name) { return strstr(name, MSHAREFS_TEST_STATE_ROOT "/") || strstr(name, "msharefs-layout"); }

// Descriptors of pid (0: this process), not counting the one reading them.
int count_fds(pid_t pid, int *objects = nullptr)
{
	const std::string dir = pid ? "/proc/" + std::to_string(pid) + "/fd" : "/proc/self/fd";
	DIR *d = opendir(dir.c_str());
	if (!d)
		return -1;
	int n = 0;
	while (dirent *de = readdir(d)) {
		if (de->d_name[0] == '.' || (!pid && atoi(de->d_name) == dirfd(d)))
			continue;
		n++;
		char target[512] = {};
		if (objects && readlink((dir + "/" + de->d_name).c_str(), target, sizeof(target) - 1) > 0 &&
		    is_object(target))
			++*objects;
	}
	closedir(d);
	return n;
}

Usage usage()
{
	Usage u;
	u.fds = count_fds(0, &u.object_fds);
	std::ifstream maps("/proc/self/maps");
	std::string line;
	while (std::getline(maps, line)) {
		unsigned long lo = 0, hi = 0;
		if (sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2)
			continue;
		if (lo < kStart + kSize && hi > kStart)
			u.window_maps++;
		else if (is_object(line.c_str()))
			u.object_maps++;
	}
	return u;
}

// ---- what the workers share -------------------------------------------------

struct Counters {
	uint64_t ops, creates, creates_eexist, unmaps, protects, protects_einval, errno_checks;
	uint64_t pages_written, pages_read, faults_checked, cross_checks, torn, stable_updates, probe_changes;
	uint64_t reattaches, attaches, attach_failures, attach_enoent, attach_eagain, attach_other, full_verifies;
	uint64_t max_ioctl_us; // last
};

struct SlotShared {
	// Stable block: odd while its owner rewrites it; generation = seq / 2.
	std::atomic<uint64_t> stable_seq;
	// Probe page: odd while its owner changes it.
	std::atomic<uint64_t> probe_seq;
	std::atomic<uint32_t> probe_state;
	std::atomic<uint64_t> probe_stamp;
	// Filled in by the worker at the end, for the parent.
	Counters counters;
	uint64_t live_objects;
	bool finished; // final checks passed, final state above
	uint8_t final_prot[kVolPages];
	uint64_t final_stamp[kVolPages];
	uint64_t final_sum[kVolPages];
	char error[4096];
};

struct Shared {
	std::atomic<int> failed;
	std::atomic<int> ready;
	std::atomic<int> stopped;
	SlotShared slot[kWorkers];
};

// ---- one worker -------------------------------------------------------------

class Worker {
public:
	Worker(int index, uint64_t seed, double seconds, Shared *shared, OwnerLink owner)
		: me_(index), rng_(seed * 1000003 + static_cast<uint64_t>(index)), seconds_(seconds), shared_(shared),
		  mine_(shared->slot[index]), owner_(owner)
	{
		prot_.fill(kHole);
		stamp_.fill(0);
		sum_.fill(0);
		obj_.fill(0);
	}

	// 0: all as expected; 1: a failure (in the slot's error); 2: stopped
	// because another worker failed.
	int run()
	{
		const bool ok = work();
		mine_.counters = c_;
		return ok ? 0 : mine_.error[0] ? 1 : 2;
	}

private:
	bool work();
	// Failure reporting: the first failure, with the last operations.
	bool fail(const char *fmt, ...) __attribute__((format(printf, 2, 3)));
	void note(const char *fmt, ...) __attribute__((format(printf, 2, 3)));

	uint64_t rand(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
	bool chance(unsigned percent) { return rand(100) < percent; }
	uint64_t vol(uint64_t page) const { return slot_base(me_) + kVolOff + page * kPage; }
	uint64_t new_stamp() { return (static_cast<uint64_t>(me_ + 1) << 48) | ++stamps_; }
	bool readable(uint64_t page) const { return prot_[page] != kHole && (prot_[page] & kRW); }
	bool writable(uint64_t page) const { return prot_[page] != kHole && (prot_[page] & PROT_WRITE); }
	void pick_range(uint64_t *first, uint64_t *count);
	template <class F> int timed_ioctl(F &&f);

	bool attach();
	bool barrier(std::atomic<int> &count, const char *what);
	bool expect_fault(uint64_t addr, bool store, const char *what);
	bool check_page(uint64_t page, const char *what);
	bool write_page(uint64_t page);

	bool op_create();
	bool op_unmap();
	bool op_protect();
	bool op_write();
	bool op_read();
	bool op_verify_all();
	bool op_errno();
	bool op_reattach();
	bool op_stable_update();
	bool op_probe_change();
	bool check_stable(int slot, bool must_be_stable);
	bool check_probe(int slot, bool must_be_stable);
	bool op_cross_check();

	const int me_;
	std::mt19937_64 rng_;
	const double seconds_;
	Shared *shared_;
	SlotShared &mine_;
	const OwnerLink owner_; // the region's changes go through its owner
	Fd fd_;
	std::optional<Window> window_;
	Counters c_{};
	uint64_t stamps_ = 0;
	uint32_t objects_ = 0;
	uint64_t zero_sum_ = sum_of_stamp(0);
	std::array<uint8_t, kVolPages> prot_;
	std::array<uint64_t, kVolPages> stamp_;
	std::array<uint64_t, kVolPages> sum_;
	std::array<uint32_t, kVolPages> obj_;
	std::array<uint64_t, kWords> buf_;
	char first_attach_failure_[64] = {};
	char history_[16][112] = {};
	unsigned history_next_ = 0;
};

void Worker::note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(history_[history_next_ % 16], sizeof(history_[0]), fmt, ap);
	va_end(ap);
	history_next_++;
}

bool Worker::fail(const char *fmt, ...)
{
	if (mine_.error[0])
		return false;
	char *out = mine_.error;
	size_t room = sizeof(mine_.error);
	int n = snprintf(out, room, "worker %d, op %lu: ", me_, static_cast<unsigned long>(c_.ops));
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(out + n, room - static_cast<size_t>(n), fmt, ap);
	va_end(ap);
	n += snprintf(out + n, room - static_cast<size_t>(n), "\n  last operations, oldest first:");
	for (unsigned i = history_next_ > 16 ? history_next_ - 16 : 0; i < history_next_; i++)
		if (static_cast<size_t>(n) < room)
			n += snprintf(out + n, room - static_cast<size_t>(n), "\n    %s", history_[i % 16]);
	shared_->failed.store(1);
	return false;
}

// A random page range of the volatile area: mostly short, sometimes long.
void Worker::pick_range(uint64_t *first, uint64_t *count)
{
	const uint64_t r = rand(100);
	uint64_t n = r < 60 ? 1 + rand(8) : r < 90 ? 9 + rand(56) : 65 + rand(kVolPages - 64);
	const uint64_t p = rand(kVolPages);
	*first = p;
	*count = std::min(n, kVolPages - p);
}

template <class F> int Worker::timed_ioctl(F &&f)
{
	const auto t0 = std::chrono::steady_clock::now();
	const int err = f();
	const auto us =
		std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
	c_.max_ioctl_us = std::max(c_.max_ioctl_us, static_cast<uint64_t>(us));
	if (us > kSlowIoctlSeconds * 1e6)
		fail("an ioctl took %.1f s: an attacher did not answer in time", static_cast<double>(us) / 1e6);
	return err;
}

bool Worker::barrier(std::atomic<int> &count, const char *what)
{
	count.fetch_add(1);
	const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
	while (count.load() < kWorkers) {
		if (shared_->failed.load())
			return false; // another worker failed: it reports
		if (std::chrono::steady_clock::now() > deadline)
			return fail("the other workers did not reach the %s barrier in 120 s", what);
		usleep(1000);
	}
	return true;
}

// mmap of the region file. It must not fail; if it does, the failure is
// recorded (the run fails at its end) and the attach tried again, so that
// the rest of the run still checks everything else.
bool Worker::attach()
{
	window_.reset();
	for (int tries = 0; tries < 100; tries++) {
		c_.attaches++;
		window_.emplace(fd_.get());
		if (*window_)
			break;
		const int err = errno;
		window_.reset();
		(err == ENOENT ? c_.attach_enoent : err == EAGAIN ? c_.attach_eagain : c_.attach_other)++;
		if (!c_.attach_failures++)
			snprintf(first_attach_failure_, sizeof(first_attach_failure_), "%s at op %lu", err_name(err),
				 static_cast<unsigned long>(c_.ops));
		usleep(1000);
	}
	if (!window_)
		return fail("mmap of the region file failed 100 times in a row (the run's first failure: %s)",
			    first_attach_failure_);
	if (window_->addr() != ptr(kStart))
		return fail("the window is at %p, not at the region's start", window_->addr());
	return true;
}

// An access that must fault with SIGSEGV at exactly addr, changing nothing.
bool Worker::expect_fault(uint64_t addr, bool store, const char *what)
{
	const Fault f = store ? store_byte(addr, 0x5a) : load_byte(addr);
	c_.faults_checked++;
	if (f.sig != SIGSEGV || f.addr != ptr(addr))
		return fail("%s at %#lx (%s): expected SIGSEGV at that address, got %s", store ? "a store" : "a load",
			    static_cast<unsigned long>(addr), what, describe(f).c_str());
	return true;
}

// Reads a readable page back and compares it with the model.
bool Worker::check_page(uint64_t page, const char *what)
{
	const uint64_t addr = vol(page);
	const Fault f = load_page(addr, buf_.data());
	c_.pages_read++;
	if (f.sig)
		return fail("reading page %lu at %#lx (%s, prot %u): %s", static_cast<unsigned long>(page),
			    static_cast<unsigned long>(addr), what, prot_[page], describe(f).c_str());
	const uint64_t sum = checksum(buf_.data());
	if (sum != sum_[page]) {
		const bool zero = sum == zero_sum_;
		return fail("page %lu at %#lx (%s, prot %u) lost its data: expected stamp %#lx (checksum %#lx), "
			    "found %s (word 0 %#lx, checksum %#lx)",
			    static_cast<unsigned long>(page), static_cast<unsigned long>(addr), what, prot_[page],
			    static_cast<unsigned long>(stamp_[page]), static_cast<unsigned long>(sum_[page]),
			    zero ? "zeros" : "other data", static_cast<unsigned long>(buf_[0]),
			    static_cast<unsigned long>(sum));
	}
	return true;
}

bool Worker::write_page(uint64_t page)
{
	const uint64_t stamp = new_stamp();
	fill(buf_.data(), stamp);
	const Fault f = store_page(vol(page), buf_.data());
	if (f.sig)
		return fail("writing read-write page %lu at %#lx: %s", static_cast<unsigned long>(page),
			    static_cast<unsigned long>(vol(page)), describe(f).c_str());
	stamp_[page] = stamp;
	sum_[page] = checksum(buf_.data());
	c_.pages_written++;
	return true;
}

bool Worker::op_create()
{
	uint64_t first, count;
	pick_range(&first, &count);
	if (chance(60)) {
		// Fit it into a hole, so that most creations succeed.
		uint64_t p = first;
		while (p < kVolPages && prot_[p] != kHole)
			p++;
		if (p == kVolPages)
			return true;
		uint64_t n = 0;
		while (n < count && p + n < kVolPages && prot_[p + n] == kHole)
			n++;
		first = p;
		count = n;
	}
	bool overlaps = false;
	for (uint64_t p = first; p < first + count; p++)
		overlaps |= prot_[p] != kHole;
	const uint64_t r = rand(100);
	const uint32_t prot = r < 80 ? kRW : r < 95 ? PROT_READ : PROT_NONE;
	note("CREATE_MAPPING pages [%lu, +%lu) prot %u%s", static_cast<unsigned long>(first),
	     static_cast<unsigned long>(count), prot, overlaps ? " (overlaps)" : "");
	const int err =
		timed_ioctl([&] { return create_mapping(owner_, vol(first), count * kPage, 0, prot, kAnon); });
	const int want = overlaps ? EEXIST : 0;
	if (err != want)
		return fail("CREATE_MAPPING [%#lx, +%lu pages) prot %u: %s, expected %s",
			    static_cast<unsigned long>(vol(first)), static_cast<unsigned long>(count), prot,
			    err_name(err), err_name(want));
	if (overlaps) {
		c_.creates_eexist++;
		return true;
	}
	c_.creates++;
	objects_++;
	for (uint64_t p = first; p < first + count; p++) {
		prot_[p] = static_cast<uint8_t>(prot);
		stamp_[p] = 0;
		sum_[p] = zero_sum_;
		obj_[p] = objects_;
	}
	// A range just created reads zero, whatever was there before.
	const uint64_t p = first + rand(count);
	if (prot != PROT_NONE)
		return check_page(p, "just created") &&
		       (prot != PROT_READ || expect_fault(vol(p) + rand(kPage), true, "just created read-only"));
	return expect_fault(vol(p) + rand(kPage), false, "just created PROT_NONE");
}

bool Worker::op_unmap()
{
	uint64_t first, count;
	pick_range(&first, &count);
	note("UNMAP pages [%lu, +%lu)", static_cast<unsigned long>(first), static_cast<unsigned long>(count));
	const int err = timed_ioctl([&] { return unmap(owner_, vol(first), count * kPage); });
	if (err)
		return fail("UNMAP [%#lx, +%lu pages): %s", static_cast<unsigned long>(vol(first)),
			    static_cast<unsigned long>(count), err_name(err));
	c_.unmaps++;
	for (uint64_t p = first; p < first + count; p++)
		prot_[p] = kHole;
	return expect_fault(vol(first + rand(count)) + rand(kPage), chance(50), "just unmapped");
}

bool Worker::op_protect()
{
	uint64_t first, count;
	pick_range(&first, &count);
	const uint64_t r = rand(100);
	const uint32_t prot = r < 45 ? kRW : r < 85 ? PROT_READ : PROT_NONE;
	if (chance(5)) {
		// Invalid arguments change nothing.
		uint64_t addr = vol(first), size = count * kPage;
		uint32_t bad_prot = prot;
		const uint64_t how = rand(3);
		if (how == 0)
			addr += 512;
		else if (how == 1)
			size -= 100;
		else
			bad_prot |= 0x100;
		note("PROTECT pages [%lu, +%lu) prot %u, invalid (%lu)", static_cast<unsigned long>(first),
		     static_cast<unsigned long>(count), bad_prot, static_cast<unsigned long>(how));
		const int err = timed_ioctl([&] { return protect(owner_, addr, size, bad_prot); });
		if (err != EINVAL)
			return fail("PROTECT [%#lx, +%#lx) prot %#x: %s, expected EINVAL",
				    static_cast<unsigned long>(addr), static_cast<unsigned long>(size), bad_prot,
				    err_name(err));
		c_.protects_einval++;
		return true;
	}
	note("PROTECT pages [%lu, +%lu) prot %u", static_cast<unsigned long>(first), static_cast<unsigned long>(count),
	     prot);
	const int err = timed_ioctl([&] { return protect(owner_, vol(first), count * kPage, prot); });
	if (err)
		return fail("PROTECT [%#lx, +%lu pages) prot %u: %s", static_cast<unsigned long>(vol(first)),
			    static_cast<unsigned long>(count), prot, err_name(err));
	c_.protects++;
	std::vector<uint64_t> mapped;
	for (uint64_t p = first; p < first + count; p++)
		if (prot_[p] != kHole) {
			prot_[p] = static_cast<uint8_t>(prot);
			mapped.push_back(p);
		}
	if (mapped.empty())
		return true;
	// The change holds at once, in this process too.
	const uint64_t p = mapped[rand(mapped.size())];
	if (prot == kRW)
		return write_page(p) && check_page(p, "written after PROTECT read-write");
	if (prot == PROT_READ)
		return expect_fault(vol(p) + rand(kPage), true, "after PROTECT read-only") &&
		       check_page(p, "after PROTECT read-only");
	return expect_fault(vol(p) + rand(kPage), false, "after PROTECT PROT_NONE");
}

bool Worker::op_write()
{
	uint64_t first, count;
	pick_range(&first, &count);
	note("write pages [%lu, +%lu)", static_cast<unsigned long>(first), static_cast<unsigned long>(count));
	int faults = 0;
	for (uint64_t p = first; p < first + count; p++) {
		if (writable(p)) {
			if (!write_page(p))
				return false;
		} else if (faults++ < 3) {
			const char *what = prot_[p] == kHole ? "a hole" : prot_[p] ? "read-only" : "PROT_NONE";
			if (!expect_fault(vol(p) + rand(kPage), true, what))
				return false;
			if (prot_[p] == PROT_READ && !check_page(p, "after a refused store"))
				return false;
		}
	}
	return true;
}

bool Worker::op_read()
{
	uint64_t first, count;
	pick_range(&first, &count);
	note("read pages [%lu, +%lu)", static_cast<unsigned long>(first), static_cast<unsigned long>(count));
	int faults = 0;
	for (uint64_t p = first; p < first + count; p++) {
		if (readable(p)) {
			if (!check_page(p, "read"))
				return false;
		} else if (faults++ < 3) {
			if (!expect_fault(vol(p) + rand(kPage), false, prot_[p] == kHole ? "a hole" : "PROT_NONE"))
				return false;
		}
	}
	return true;
}

bool Worker::op_verify_all()
{
	note("verify every page");
	c_.full_verifies++;
	for (uint64_t p = 0; p < kVolPages; p++)
		if (readable(p) && !check_page(p, "full verification"))
			return false;
	return check_stable(me_, true) && check_probe(me_, true);
}

// Requests the API refuses, in the middle of everything else.
bool Worker::op_errno()
{
	note("invalid requests");
	const uint64_t end = kStart + kSize;
	const uint64_t page = vol(rand(kVolPages));
	const struct {
		const char *what;
		std::function<int()> call;
	} cases[] = {
		{"UNMAP past the region's end", [&] { return unmap(owner_, end - kPage, 2 * kPage); }},
		{"CREATE_MAPPING across the region's end",
		 [&] { return create_mapping(owner_, end - kPage, 2 * kPage, 0, kRW, kAnon); }},
		{"CREATE_MAPPING of a MAP_PRIVATE object",
		 [&] {
			 return create_mapping(owner_, page, kPage, 0, kRW, MAP_ANONYMOUS | MAP_PRIVATE | MAP_FIXED);
		 }},
		{"UNMAP of an unaligned address", [&] { return unmap(owner_, page + 8, kPage); }},
	};
	for (const auto &c : cases) {
		c_.errno_checks++;
		if (const int err = timed_ioctl(c.call); err != EINVAL)
			return fail("%s: %s, expected EINVAL", c.what, err_name(err));
	}
	return true;
}

// The window goes and comes back, while the others carry on.
bool Worker::op_reattach()
{
	note("munmap the window and attach again");
	c_.reattaches++;
	if (!attach())
		return false;
	for (int i = 0; i < 8; i++) {
		const uint64_t p = rand(kVolPages);
		if (readable(p) && !check_page(p, "after attaching again"))
			return false;
	}
	return check_stable(me_, true);
}

bool Worker::op_stable_update()
{
	const uint64_t seq = mine_.stable_seq.load();
	const uint64_t gen = seq / 2 + 1;
	note("stable block: generation %lu", static_cast<unsigned long>(gen));
	mine_.stable_seq.store(seq + 1);
	for (uint64_t page = 0; page < kStablePages; page++) {
		fill(buf_.data(), stable_stamp(me_, gen, page));
		const Fault f = store_page(slot_base(me_) + kStableOff + page * kPage, buf_.data());
		if (f.sig)
			return fail("writing the stable block: %s", describe(f).c_str());
	}
	mine_.stable_seq.store(seq + 2);
	c_.stable_updates++;
	return true;
}

// Checks another slot's stable block through this window: at a stable
// sequence count it holds exactly that generation. must_be_stable: nothing
// changes any more (final checks), so a torn read is a failure.
bool Worker::check_stable(int slot, bool must_be_stable)
{
	SlotShared &s = shared_->slot[slot];
	const uint64_t before = s.stable_seq.load();
	if (before & 1) {
		c_.torn++;
		return must_be_stable ? fail("slot %d's stable block is still being written", slot) : true;
	}
	static std::array<uint64_t, kWords * kStablePages> block;
	const uint64_t base = slot_base(slot) + kStableOff;
	const Fault f = fault_of([&] { memcpy(block.data(), ptr(base), kStablePages * kPage); });
	std::atomic_thread_fence(std::memory_order_acquire);
	if (s.stable_seq.load() != before) {
		c_.torn++;
		return must_be_stable ? fail("slot %d's stable block changed during the final checks", slot) : true;
	}
	if (f.sig)
		return fail("reading slot %d's stable block at %#lx: %s", slot, static_cast<unsigned long>(base),
			    describe(f).c_str());
	const uint64_t gen = before / 2;
	for (uint64_t page = 0; page < kStablePages; page++) {
		const uint64_t *w = block.data() + page * kWords;
		const uint64_t want = stable_stamp(slot, gen, page);
		if (checksum(w) != sum_of_stamp(want))
			return fail(
				"slot %d's stable block page %lu: expected generation %lu (stamp %#lx), found word 0 "
				"%#lx%s",
				slot, static_cast<unsigned long>(page), static_cast<unsigned long>(gen),
				static_cast<unsigned long>(want), static_cast<unsigned long>(w[0]),
				w[0] == want ? " and other data after it" : "");
	}
	c_.cross_checks++;
	return true;
}

// The probe page changes state under its sequence count; the change must
// hold in every attacher when the ioctl returns.
bool Worker::op_probe_change()
{
	const uint32_t state = mine_.probe_state.load();
	uint32_t next = static_cast<uint32_t>(rand(3));
	if (next >= state)
		next++;
	const uint64_t addr = slot_base(me_) + kProbeOff;
	const uint64_t seq = mine_.probe_seq.load();
	note("probe page: state %u -> %u", state, next);
	mine_.probe_seq.store(seq + 1);
	uint64_t stamp = mine_.probe_stamp.load();
	int err = 0;
	const char *what = "PROTECT";
	static constexpr uint32_t kProt[] = {0, kRW, PROT_READ, PROT_NONE};
	if (next == kProbeHole) {
		what = "UNMAP";
		err = timed_ioctl([&] { return unmap(owner_, addr, kPage); });
	} else if (state == kProbeHole) {
		what = "CREATE_MAPPING";
		err = timed_ioctl([&] { return create_mapping(owner_, addr, kPage, 0, kProt[next], kAnon); });
		stamp = 0;
	} else {
		err = timed_ioctl([&] { return protect(owner_, addr, kPage, kProt[next]); });
	}
	if (err)
		return fail("probe page %s (state %u -> %u): %s", what, state, next, err_name(err));
	if (next == kProbeRW && chance(50)) {
		stamp = new_stamp();
		fill(buf_.data(), stamp);
		const Fault f = store_page(addr, buf_.data());
		if (f.sig)
			return fail("writing the read-write probe page: %s", describe(f).c_str());
	}
	mine_.probe_state.store(next);
	mine_.probe_stamp.store(stamp);
	mine_.probe_seq.store(seq + 2);
	c_.probe_changes++;
	return true;
}

bool Worker::check_probe(int slot, bool must_be_stable)
{
	SlotShared &s = shared_->slot[slot];
	const uint64_t before = s.probe_seq.load();
	if (before & 1) {
		c_.torn++;
		return must_be_stable ? fail("slot %d's probe page is still changing", slot) : true;
	}
	const uint32_t state = s.probe_state.load();
	const uint64_t stamp = s.probe_stamp.load();
	const uint64_t addr = slot_base(slot) + kProbeOff;
	// A store of the byte that always holds 0: if it wrongly succeeds it
	// changes nothing, and the owner sees nothing wrong.
	const uint64_t last = addr + kPage - 1;
	Fault read = load_page(addr, buf_.data());
	Fault store;
	if (state == kProbeRO && !read.sig)
		store = store_byte(last, 0);
	std::atomic_thread_fence(std::memory_order_acquire);
	if (s.probe_seq.load() != before) {
		c_.torn++;
		return must_be_stable ? fail("slot %d's probe page changed during the final checks", slot) : true;
	}
	c_.cross_checks++;
	static const char *const kName[] = {"a hole", "read-write", "read-only", "PROT_NONE"};
	if (state == kProbeHole || state == kProbeNone) {
		if (read.sig != SIGSEGV)
			return fail("slot %d's probe page at %#lx is %s: a load must fault with SIGSEGV, got %s", slot,
				    static_cast<unsigned long>(addr), kName[state], describe(read).c_str());
		return true;
	}
	if (read.sig)
		return fail("slot %d's probe page at %#lx is %s: a load faulted: %s", slot,
			    static_cast<unsigned long>(addr), kName[state], describe(read).c_str());
	if (checksum(buf_.data()) != sum_of_stamp(stamp))
		return fail("slot %d's probe page at %#lx (%s): expected stamp %#lx, found word 0 %#lx", slot,
			    static_cast<unsigned long>(addr), kName[state], static_cast<unsigned long>(stamp),
			    static_cast<unsigned long>(buf_[0]));
	if (state == kProbeRO) {
		c_.faults_checked++;
		if (store.sig != SIGSEGV || store.addr != ptr(last))
			return fail("slot %d's probe page at %#lx is read-only: a store must fault with SIGSEGV at "
				    "%#lx, got %s",
				    slot, static_cast<unsigned long>(addr), static_cast<unsigned long>(last),
				    describe(store).c_str());
	}
	return true;
}

bool Worker::op_cross_check()
{
	int other = static_cast<int>(rand(kWorkers - 1));
	if (other >= me_)
		other++;
	note("check slot %d", other);
	return check_stable(other, false) && check_probe(other, false);
}

bool Worker::work()
{
	fd_.reset(open(path("stress").c_str(), O_RDWR | O_CLOEXEC));
	if (!fd_)
		return fail("open: %s", strerror(errno));
	// Attached once and detached: the runtime's own descriptors and
	// threads (per process, not per window) exist from here on.
	if (!attach())
		return false;
	window_.reset();
	// What a window holds (its objects and layout) is let go once no thread
	// of the runtime uses the window any more, a moment after munmap: the
	// baseline is taken when it has gone.
	Usage before = usage();
	for (int i = 0; i < 200 && (before.object_fds || before.object_maps); i++) {
		usleep(10000);
		before = usage();
	}
	if (before.object_fds || before.object_maps)
		return fail("the first window's objects are still held 2 s after its munmap: %s", before.str().c_str());
	if (before.window_maps)
		return fail("%d mappings in the window's range after munmap of the window", before.window_maps);
	if (!attach())
		return false;
	note("CREATE_MAPPING of the stable block");
	if (int err = timed_ioctl([&] {
		    return create_mapping(owner_, slot_base(me_) + kStableOff, kStablePages * kPage, 0, kRW, kAnon);
	    }))
		return fail("CREATE_MAPPING of the stable block: %s", err_name(err));
	objects_++;
	bool ok = check_stable(me_, true) && barrier(shared_->ready, "start");

	const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds_);
	while (ok && !shared_->failed.load() && std::chrono::steady_clock::now() < deadline) {
		c_.ops++;
		const uint64_t r = rand(1000);
		if (r < 150)
			ok = op_create();
		else if (r < 250)
			ok = op_unmap();
		else if (r < 390)
			ok = op_protect();
		else if (r < 570)
			ok = op_write();
		else if (r < 730)
			ok = op_read();
		else if (r < 780)
			ok = op_stable_update();
		else if (r < 830)
			ok = op_probe_change();
		else if (r < 965)
			ok = op_cross_check();
		else if (r < 980)
			ok = op_verify_all();
		else if (r < 995)
			ok = op_errno();
		else
			ok = op_reattach();
	}
	ok = ok && !shared_->failed.load() && barrier(shared_->stopped, "stop");

	// Nothing changes any more: everything this worker wrote is still
	// there, and every other slot's blocks are as their owners left them.
	if (ok)
		ok = op_verify_all();
	for (int slot = 0; ok && slot < kWorkers; slot++)
		ok = check_stable(slot, true) && check_probe(slot, true);

	// For the parent: what stays in the region.
	std::vector<uint32_t> live;
	for (uint64_t p = 0; p < kVolPages; p++) {
		mine_.final_prot[p] = prot_[p];
		mine_.final_stamp[p] = stamp_[p];
		mine_.final_sum[p] = sum_[p];
		if (prot_[p] != kHole && std::find(live.begin(), live.end(), obj_[p]) == live.end())
			live.push_back(obj_[p]);
	}
	mine_.live_objects = live.size() + 1 /* stable block */ + (mine_.probe_state.load() != kProbeHole ? 1 : 0);

	// No leak: after munmap of the window, this process holds what it held
	// before attaching it (a descriptor may close a moment later).
	window_.reset();
	Usage after = usage();
	for (int i = 0; i < 200 && !(after == before); i++) {
		usleep(10000);
		after = usage();
	}
	if (ok && !(after == before))
		ok = fail("leak: before attaching the window %s; after munmap of it %s", before.str().c_str(),
			  after.str().c_str());
	// Everything else held: the parent checks what the workers left.
	mine_.finished = ok;
	if (ok && c_.attach_failures)
		ok = fail("mmap of the region file failed %lu times in %lu attaches, the first with %s",
			  static_cast<unsigned long>(c_.attach_failures), static_cast<unsigned long>(c_.attaches),
			  first_attach_failure_);
	return ok;
}

// ---- the parent ---------------------------------------------------------------

double stress_seconds()
{
	const char *env = getenv("MSHAREFS_STRESS_SECONDS");
	const double s = env ? atof(env) : 0;
	return s > 0 ? s : 15.0;
}

uint64_t stress_seed()
{
	if (const char *env = getenv("MSHAREFS_STRESS_SEED"); env && *env)
		return strtoull(env, nullptr, 0);
	return std::random_device{}() & 0xffffff;
}

void dump_stacks(pid_t pid)
{
	const std::string dir = "/proc/" + std::to_string(pid) + "/task";
	DIR *d = opendir(dir.c_str());
	if (!d)
		return;
	while (dirent *de = readdir(d)) {
		if (de->d_name[0] == '.')
			continue;
		std::ifstream stack(dir + "/" + de->d_name + "/stack");
		std::string text((std::istreambuf_iterator<char>(stack)), std::istreambuf_iterator<char>());
		fprintf(stderr, "  pid %d thread %s:\n%s", pid, de->d_name, text.c_str());
	}
	closedir(d);
}

// Waits for every worker until the deadline; those still running then hang:
// their kernel stacks are printed and they are killed.
std::vector<ChildResult> wait_all(const std::vector<pid_t> &pids, double timeout_s)
{
	std::vector<ChildResult> results(pids.size());
	std::vector<bool> done(pids.size(), false);
	const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
	size_t left = pids.size();
	while (left) {
		for (size_t i = 0; i < pids.size(); i++) {
			int status = 0;
			if (done[i] || waitpid(pids[i], &status, WNOHANG) != pids[i])
				continue;
			done[i] = true;
			left--;
			if (WIFEXITED(status))
				results[i].exit_code = WEXITSTATUS(status);
			else if (WIFSIGNALED(status))
				results[i].signal = WTERMSIG(status);
		}
		if (left && std::chrono::steady_clock::now() > deadline) {
			for (size_t i = 0; i < pids.size(); i++) {
				if (done[i])
					continue;
				fprintf(stderr, "worker %zu (pid %d) hangs:\n", i, pids[i]);
				dump_stacks(pids[i]);
				kill(pids[i], SIGKILL);
				waitpid(pids[i], nullptr, 0);
				results[i].timed_out = true;
			}
			break;
		}
		usleep(5000);
	}
	return results;
}

} // namespace

TEST_CASE("stress: 16 processes change, write and check one region at random; nothing lost, hung or leaked")
{
	REQUIRE_MESSAGE(on_uffd(), "the stress test runs on the uffd data path only (MSHAREFS_TEST_DATAPATH=uffd)");
	const double seconds = stress_seconds();
	const uint64_t seed = stress_seed();
	INFO("seed " << seed << " (MSHAREFS_STRESS_SEED), " << seconds << " s");

	Daemon d;
	void *area = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	REQUIRE(area != MAP_FAILED);
	auto *shared = new (area) Shared();
	// The region starts empty; the parent owns it and outlives the workers.
	Fd fd(open(path("stress").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
	REQUIRE(fd.get() >= 0);
	REQUIRE(set_size(fd.get(), kStart, kSize) == 0);
	// The daemon publishes the region's layout from its first change on:
	// make one before counting its descriptors.
	REQUIRE(create_mapping(fd.get(), kStart + kSize - kPage, kPage, 0, kRW, kAnon) == 0);
	REQUIRE(unmap(fd.get(), kStart + kSize - kPage, kPage) == 0);
	const int daemon_fds_before = count_fds(d.pid());
	REQUIRE(daemon_fds_before > 0);

	const auto t0 = std::chrono::steady_clock::now();
	std::vector<pid_t> pids;
	OwnerService owner(fd.get(), kWorkers);
	for (int i = 0; i < kWorkers; i++) {
		const pid_t pid = spawn([&, i] { return Worker(i, seed, seconds, shared, owner.link(i)).run(); });
		REQUIRE(pid > 0);
		pids.push_back(pid);
	}
	owner.close_worker_ends();
	const std::vector<ChildResult> results = wait_all(pids, seconds + 180);
	const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

	bool all_finished = true;
	for (int i = 0; i < kWorkers; i++) {
		const ChildResult &r = results[static_cast<size_t>(i)];
		INFO("worker " << i << ": exit " << r.exit_code << ", signal " << r.signal << ", hung " << r.timed_out
			       << (r.exit_code == 2 ? " (stopped: another worker failed)" : ""));
		INFO(shared->slot[i].error);
		CHECK(!r.timed_out);
		CHECK(r.signal == 0);
		CHECK(r.exit_code == 0);
		all_finished = all_finished && !r.timed_out && !r.signal && shared->slot[i].finished;
	}

	Counters total{};
	uint64_t live_objects = 0;
	for (int i = 0; i < kWorkers; i++) {
		const Counters &c = shared->slot[i].counters;
		const uint64_t *from = &c.ops;
		uint64_t *to = &total.ops;
		for (size_t k = 0; k < sizeof(Counters) / sizeof(uint64_t) - 1; k++)
			to[k] += from[k];
		total.max_ioctl_us = std::max(total.max_ioctl_us, c.max_ioctl_us);
		live_objects += shared->slot[i].live_objects;
	}
	const auto n = [](uint64_t v) { return std::to_string(v); };
	char head[160];
	snprintf(head, sizeof(head),
		 "stress: %d workers, %.1f s (%.1f s of work), seed %lu, slowest ioctl %.1f ms: ", kWorkers, elapsed,
		 seconds, static_cast<unsigned long>(seed), static_cast<double>(total.max_ioctl_us) / 1000);
	const std::string summary =
		head + n(total.ops) + " ops: create " + n(total.creates) + " (+" + n(total.creates_eexist) +
		" EEXIST), unmap " + n(total.unmaps) + ", protect " + n(total.protects) + " (+" +
		n(total.protects_einval) + " EINVAL), " + n(total.errno_checks) + " errno checks; " +
		n(total.pages_written) + " pages written, " + n(total.pages_read) + " read, " + n(total.full_verifies) +
		" full verifications; " + n(total.faults_checked) + " faults checked; " + n(total.cross_checks) +
		" cross-process checks (" + n(total.torn) + " torn), " + n(total.stable_updates) +
		" stable block generations, " + n(total.probe_changes) + " probe changes; " + n(total.reattaches) +
		" reattaches (" + n(total.attach_failures) + " of " + n(total.attaches) +
		" attaches failed: " + n(total.attach_enoent) + " ENOENT, " + n(total.attach_eagain) + " EAGAIN, " +
		n(total.attach_other) + " other); " + n(live_objects) + " objects left";
	printf("%s\n", summary.c_str());
	fflush(stdout);
	CHECK(total.ops > 0);

	// The daemon is alive and still answers.
	REQUIRE(alive(d.pid()));
	mshare_info info{};
	REQUIRE(get_size(fd.get(), &info) == 0);
	CHECK(info.start == kStart);
	CHECK(info.size == kSize);
	if (!all_finished)
		return;

	// One object per mapping the workers left, no more; the daemon holds
	// one descriptor for each, and nothing for the attachers that left.
	CHECK(region_objects().size() == live_objects);
	int daemon_fds = count_fds(d.pid());
	for (int i = 0; i < 500 && daemon_fds > daemon_fds_before + static_cast<int>(live_objects); i++) {
		usleep(10000);
		daemon_fds = count_fds(d.pid());
	}
	INFO("daemon descriptors: " << daemon_fds_before << " before, " << daemon_fds << " after, " << live_objects
				    << " objects left");
	CHECK(daemon_fds <= daemon_fds_before + static_cast<int>(live_objects));

	// Everything the workers left is still there when they are gone.
	{
		Window w(fd.get());
		REQUIRE(w);
		std::array<uint64_t, kWords> buf;
		int bad = 0;
		std::string first_bad;
		auto bad_page = [&](int slot, const char *what, uint64_t addr, const std::string &detail) {
			if (!bad++)
				first_bad = "slot " + std::to_string(slot) + " " + what + " at " +
					    std::to_string(addr) + ": " + detail;
		};
		for (int slot = 0; slot < kWorkers; slot++) {
			const SlotShared &s = shared->slot[slot];
			for (uint64_t page = 0; page < kStablePages; page++) {
				const uint64_t addr = slot_base(slot) + kStableOff + page * kPage;
				const Fault f = load_page(addr, buf.data());
				if (f.sig || checksum(buf.data()) !=
						     sum_of_stamp(stable_stamp(slot, s.stable_seq.load() / 2, page)))
					bad_page(slot, "stable block", addr, describe(f));
			}
			const uint64_t probe = slot_base(slot) + kProbeOff;
			const uint32_t state = s.probe_state.load();
			const Fault f = load_page(probe, buf.data());
			if (state == kProbeHole || state == kProbeNone
				    ? f.sig != SIGSEGV
				    : f.sig || checksum(buf.data()) != sum_of_stamp(s.probe_stamp.load()))
				bad_page(slot, "probe page", probe, describe(f));
			for (uint64_t p = 0; p < kVolPages; p++) {
				const uint64_t addr = slot_base(slot) + kVolOff + p * kPage;
				const uint8_t prot = s.final_prot[p];
				const Fault g = load_page(addr, buf.data());
				if (prot == kHole || !(prot & kRW)) {
					if (g.sig != SIGSEGV)
						bad_page(slot, "unreadable page", addr, describe(g));
				} else if (g.sig || checksum(buf.data()) != s.final_sum[p]) {
					bad_page(slot, "page", addr,
						 describe(g) + ", word 0 " + std::to_string(buf[0]) + ", stamp " +
							 std::to_string(s.final_stamp[p]));
				} else if (prot == PROT_READ && p % 7 == 0) {
					const Fault h = store_byte(addr + p % kPage, 1);
					if (h.sig != SIGSEGV)
						bad_page(slot, "read-only page", addr, "a store: " + describe(h));
				}
			}
		}
		INFO(first_bad);
		CHECK(bad == 0);
	}

	// UNMAP of everything frees every object; the daemon's descriptors are
	// back where they were.
	CHECK(unmap(fd.get(), kStart, kSize) == 0);
	CHECK(region_objects().empty());
	daemon_fds = count_fds(d.pid());
	for (int i = 0; i < 500 && daemon_fds > daemon_fds_before; i++) {
		usleep(10000);
		daemon_fds = count_fds(d.pid());
	}
	CHECK(daemon_fds <= daemon_fds_before);

	// The name goes, and with the last descriptor the region.
	CHECK(unlink(path("stress").c_str()) == 0);
	fd.reset();
	errno = 0;
	CHECK(open(path("stress").c_str(), O_RDWR) == -1);
	CHECK(errno == ENOENT);
	CHECK(region_objects().empty());

	// Still serving: a new region works end to end.
	Fd again(create_region("after", kStart, kSize));
	REQUIRE(again.get() >= 0);
	{
		Window w(again.get());
		REQUIRE(w);
		strcpy(w.at(kPage), "after the storm");
		CHECK(strcmp(w.at(kPage), "after the storm") == 0);
	}
	CHECK(unlink(path("after").c_str()) == 0);
	CHECK(alive(d.pid()));
	munmap(area, sizeof(Shared));
}
