// Data sharing through windows on a real mount: many attachers, fork, files
// mapped into a region, read-only mappings, UNMAP, holes, unlink, owner exit,
// independent regions, threaded creators and a large transfer. Every test
// drives real processes; a child reports through its exit code (0 = as
// expected), and window accesses in this process are made fault-safe.
#include <doctest/doctest.h>

#include "harness.hpp"
#include "window_data.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <set>
#include <string>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace msharefs::test;

namespace {

// ---- barriers between processes -------------------------------------------

// Reads exactly len bytes within timeout_ms; false on EOF, error or timeout.
bool read_full(int fd, void *buf, size_t len, int timeout_ms = 20000)
{
	const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
	size_t done = 0;
	while (done < len) {
		const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
					  deadline - std::chrono::steady_clock::now())
					  .count();
		if (left <= 0)
			return false;
		pollfd p{fd, POLLIN, 0};
		int n = poll(&p, 1, static_cast<int>(left));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		ssize_t got = ::read(fd, static_cast<char *>(buf) + done, len - done);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return false;
		done += static_cast<size_t>(got);
	}
	return true;
}

bool write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = ::write(fd, static_cast<const char *>(buf) + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		done += static_cast<size_t>(n);
	}
	return true;
}

bool signal_byte(int fd)
{
	char c = 'x';
	return write_full(fd, &c, 1);
}

bool wait_byte(int fd, int timeout_ms = 20000)
{
	char c;
	return read_full(fd, &c, 1, timeout_ms);
}

bool wait_bytes(int fd, int n, int timeout_ms = 20000)
{
	std::vector<char> buf(static_cast<size_t>(n));
	return read_full(fd, buf.data(), buf.size(), timeout_ms);
}

bool send_bytes(int fd, int n)
{
	std::vector<char> buf(static_cast<size_t>(n), 'g');
	return write_full(fd, buf.data(), buf.size());
}

// ---- faults checked in the process itself -----------------------------------

// True if reading *p in this process raised SIGBUS or SIGSEGV; the byte
// read is stored in *out otherwise.
bool probe_read(const void *p, unsigned char *out = nullptr)
{
	unsigned char v = 0;
	if (!without_fault([&] { v = *static_cast<const volatile unsigned char *>(p); }))
		return true;
	if (out)
		*out = v;
	return false;
}

bool probe_write(void *p, unsigned char value)
{
	return !without_fault([&] { *static_cast<volatile unsigned char *>(p) = value; });
}

// True if any page of [p, p+len) faults on read in this process.
bool range_faults(const char *p, uint64_t len)
{
	for (uint64_t off = 0; off < len; off += kPage)
		if (probe_read(p + off))
			return true;
	return false;
}

// True if every page of [p, p+len) faults on read in this process.
bool range_all_fault(const char *p, uint64_t len)
{
	for (uint64_t off = 0; off < len; off += kPage)
		if (!probe_read(p + off))
			return false;
	return true;
}

// ---- patterns -----------------------------------------------------------------

// memcmp(window, buffer) == 0, false if the window faulted.
bool same_bytes(const char *window, const char *buffer, uint64_t len)
{
	int diff = 1;
	if (!without_fault([&] { diff = std::memcmp(window, buffer, len); }))
		return false;
	return diff == 0;
}

// memcpy into the window; false if it faulted.
[[nodiscard]] bool store(char *window, const void *src, uint64_t len)
{
	return without_fault([&] { std::memcpy(window, src, len); });
}

std::set<std::string> objects_now()
{
	auto v = region_objects();
	return {v.begin(), v.end()};
}

// Polls until pred() holds or timeout_ms passes.
template <class Pred> bool eventually(Pred pred, int timeout_ms = 2000)
{
	const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
	for (;;) {
		if (pred())
			return true;
		if (std::chrono::steady_clock::now() > deadline)
			return false;
		usleep(10000);
	}
}

// The state letter of a task in /proc/PID/stat, 0 if unreadable.
char thread_state(pid_t pid)
{
	char buf[512] = {};
	Fd f(open(("/proc/" + std::to_string(pid) + "/stat").c_str(), O_RDONLY));
	if (f.get() < 0 || read(f.get(), buf, sizeof(buf) - 1) <= 0)
		return 0;
	const char *close = strrchr(buf, ')');
	return close && close[1] == ' ' ? close[2] : 0;
}

// Pages of [0, len) of fd in the page cache (cachestat(2)), -1 if unknown.
int64_t cached_pages(int fd, uint64_t len)
{
	struct {
		uint64_t off, len;
	} range{0, len};
	struct {
		uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
	} cs{};
	constexpr long kSysCachestat = 451;
	if (syscall(kSysCachestat, fd, &range, &cs, 0) != 0)
		return -1;
	return static_cast<int64_t>(cs.nr_cache);
}

} // namespace

// ---------------------------------------------------------------------------

TEST_CASE("sharing: 12 processes attach by name and see each other's writes")
{
	Daemon d;
	Fd region(create_region("many", kStart, kSize));
	REQUIRE(region.get() >= 0);

	constexpr int kChildren = 12;
	constexpr uint64_t kSlice = 64 * kKiB;
	constexpr uint64_t kBase = kStart + 8 * kMiB;
	Pipe ready, go;
	REQUIRE(ready.r >= 0);
	REQUIRE(go.r >= 0);
	std::vector<pid_t> pids;
	for (int i = 0; i < kChildren; i++)
		pids.push_back(spawn([&, i] {
			ready.close_r();
			go.close_w();
			char *w = child_attach("many");
			if (!w)
				return int(kAttachFailed);
			if (!fill(at(kBase + i * kSlice), kSlice, static_cast<uint64_t>(i)))
				return int(kUnexpectedFault);
			if (!signal_byte(ready.w) || !wait_byte(go.r))
				return int(kBarrierFailed);
			for (int j = 0; j < kChildren; j++)
				if (!matches(at(kBase + j * kSlice), kSlice, static_cast<uint64_t>(j)))
					return int(kBadData) + 100 + j;
			return int(kOk);
		}));
	ready.close_w();
	go.close_r();
	CHECK_MESSAGE(wait_bytes(ready.r, kChildren), "not every child reached the barrier");
	send_bytes(go.w, kChildren);
	go.close_w();
	for (int i = 0; i < kChildren; i++) {
		ChildResult r = wait_for(pids[static_cast<size_t>(i)], 30);
		INFO("child " << i << ": " << describe(r) << " (113+j: child j's slice was wrong)");
		CHECK(r.exit_code == 0);
	}

	// The creator attaches last and sees all twelve slices too, read back
	// from the region's memory once the page cache has let them go.
	CHECK(fsync(region.get()) == 0);
	CHECK(posix_fadvise(region.get(), 0, 0, POSIX_FADV_DONTNEED) == 0);
	Window w(region.get());
	REQUIRE(w);
	for (int j = 0; j < kChildren; j++) {
		INFO("slice of child " << j);
		CHECK(matches(at(kBase + j * kSlice), kSlice, static_cast<uint64_t>(j)));
	}
}

TEST_CASE("sharing: a store is visible to another attacher at once, without msync")
{
	Daemon d;
	Fd region(create_region("instant", kStart, kSize));
	REQUIRE(region.get() >= 0);

	constexpr uint64_t kData = kStart + 3 * kMiB + 123 * kPage;
	constexpr uint64_t kFlag = kStart + 700 * kMiB;	  // another page, far away
	constexpr uint64_t kAnswer = kStart + 900 * kMiB; // and another
	Pipe attached;
	// Both sides spin on words in the window: no syscall between the store
	// and the load that must see it.
	auto spin_until = [](uint64_t addr, uint64_t value) {
		auto *word = reinterpret_cast<std::atomic<uint64_t> *>(at(addr));
		const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
		while (word->load(std::memory_order_acquire) != value)
			if (std::chrono::steady_clock::now() > deadline)
				return false;
		return true;
	};
	pid_t reader = spawn([&] {
		attached.close_r();
		if (!child_attach("instant"))
			return int(kAttachFailed);
		// Fault the pages in before the writer stores, so the test is
		// about a store into pages both processes have mapped.
		volatile char c = *at(kData) + *at(kFlag) + *at(kAnswer);
		(void)c;
		signal_byte(attached.w);
		if (!spin_until(kFlag, 0xF1A6))
			return int(kTimeout);
		if (!matches(at(kData), 4 * kPage, 77))
			return int(kBadData);
		if (!fill(at(kData + 4 * kPage), kPage, 78))
			return int(kUnexpectedFault);
		reinterpret_cast<std::atomic<uint64_t> *>(at(kAnswer))->store(0xA45, std::memory_order_release);
		return int(kOk);
	});
	pid_t writer = spawn([&] {
		attached.close_r();
		if (!child_attach("instant"))
			return int(kAttachFailed);
		volatile char c = *at(kData) + *at(kFlag) + *at(kAnswer);
		(void)c;
		signal_byte(attached.w);
		if (!fill(at(kData), 4 * kPage, 77))
			return int(kUnexpectedFault);
		reinterpret_cast<std::atomic<uint64_t> *>(at(kFlag))->store(0xF1A6, std::memory_order_release);
		if (!spin_until(kAnswer, 0xA45))
			return int(kTimeout);
		if (!matches(at(kData + 4 * kPage), kPage, 78))
			return int(kBadData);
		return int(kOk);
	});
	attached.close_w();
	ChildResult rr = wait_for(reader, 20);
	ChildResult wr = wait_for(writer, 20);
	INFO("reader: " << describe(rr) << ", writer: " << describe(wr));
	CHECK(rr.exit_code == 0);
	CHECK(wr.exit_code == 0);
}

TEST_CASE("sharing: a forked child inherits the window both ways")
{
	Daemon d;
	Fd region(create_region("fork", kStart, kSize));
	REQUIRE(region.get() >= 0);
	Window w(region.get());
	REQUIRE(w);
	constexpr uint64_t kA = kStart + 5 * kMiB;
	constexpr uint64_t kB = kStart + 6 * kMiB;
	constexpr uint64_t kC = kStart + 7 * kMiB;
	REQUIRE(fill(at(kA), 64 * kKiB, 1));

	SUBCASE("child of the creator")
	{
		ChildResult r = run_in_child([&] {
			if (!matches(at(kA), 64 * kKiB, 1))
				return int(kBadData);
			if (!fill(at(kB), 64 * kKiB, 2))
				return int(kUnexpectedFault);
			return int(kOk);
		});
		INFO("child: " << describe(r));
		CHECK(r.exit_code == 0);
		CHECK(matches(at(kB), 64 * kKiB, 2));
	}
	SUBCASE("grandchild of an attacher that opened the name itself")
	{
		w.reset(); // the attacher's window must be its own, not inherited
		ChildResult r = run_in_child([&] {
			if (!child_attach("fork"))
				return int(kAttachFailed);
			if (!matches(at(kA), 64 * kKiB, 1))
				return int(kBadData);
			ChildResult g = run_in_child([&] {
				if (!matches(at(kA), 64 * kKiB, 1))
					return int(kBadData);
				if (!fill(at(kC), 64 * kKiB, 3))
					return int(kUnexpectedFault);
				return int(kOk);
			});
			if (g.exit_code != 0)
				return 40 + (g.exit_code & 0x3f);
			if (!matches(at(kC), 64 * kKiB, 3))
				return int(kBadData) + 100;
			return int(kOk);
		});
		INFO("attacher: " << describe(r) << " (40+n: its child failed with n)");
		CHECK(r.exit_code == 0);
		Window again(region.get());
		REQUIRE(again);
		CHECK(matches(at(kC), 64 * kKiB, 3));
	}
}

TEST_CASE("sharing: a file mapped into the region with the caller's fd")
{
	Daemon d;
	constexpr uint64_t kFileSize = 1 * kMiB;
	constexpr uint64_t kFileOffset = 64 * kKiB;
	constexpr uint64_t kMapSize = kFileSize - kFileOffset;
	constexpr uint64_t kAt = kStart + 16 * kMiB;
	constexpr uint64_t kRoAt = kStart + 32 * kMiB;
	const std::string file = "/dev/shm/sharing-backing-file";
	const std::string ro_file = "/dev/shm/sharing-readonly-file";

	std::vector<char> contents(kFileSize);
	fill_buffer(contents.data(), kFileSize, 500);
	for (const auto &[name, seed] : {std::pair{file, 500}, std::pair{ro_file, 600}}) {
		Fd f(open(name.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644));
		REQUIRE(f.get() >= 0);
		std::vector<char> data(kFileSize);
		fill_buffer(data.data(), kFileSize, static_cast<uint64_t>(seed));
		REQUIRE(pwrite(f.get(), data.data(), data.size(), 0) == static_cast<ssize_t>(kFileSize));
	}

	Fd region(open(path("filemap").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(region.get() >= 0);
	REQUIRE(set_size(region.get(), kStart, kSize) == 0);
	{
		// The caller's descriptor, closed right after the ioctl: the
		// daemon keeps its own reference.
		Fd f(open(file.c_str(), O_RDWR));
		REQUIRE(f.get() >= 0);
		CHECK(create_mapping(region.get(), kAt, kMapSize, kFileOffset, PROT_READ | PROT_WRITE,
				     MAP_SHARED | MAP_FIXED, f.get()) == 0);
	}
	{
		Fd ro(open(ro_file.c_str(), O_RDONLY));
		REQUIRE(ro.get() >= 0);
		CHECK(create_mapping(region.get(), kRoAt + 4 * kMiB, kMiB, 0, PROT_READ | PROT_WRITE,
				     MAP_SHARED | MAP_FIXED, ro.get()) == EACCES);
		CHECK(create_mapping(region.get(), kRoAt, kMiB, 0, PROT_READ, MAP_SHARED | MAP_FIXED, ro.get()) ==
		      0);
	}

	Window w(region.get());
	REQUIRE(w);
	// The window shows the file from kFileOffset on.
	for (uint64_t off : {uint64_t{0}, kPage, 17 * kPage + 8, kMapSize / 2, kMapSize - 8}) {
		INFO("window offset " << off);
		uint64_t got = 0;
		CHECK(without_fault([&] { std::memcpy(&got, at(kAt + off), 8); }));
		uint64_t want = 0;
		std::memcpy(&want, contents.data() + kFileOffset + off, 8);
		CHECK(got == want);
	}
	CHECK(same_bytes(at(kAt), contents.data() + kFileOffset, kMapSize));
	// A separate attacher process sees the same.
	ChildResult r = run_in_child([&] {
		w.reset();
		if (!child_attach("filemap"))
			return int(kAttachFailed);
		return same_bytes(at(kAt), contents.data() + kFileOffset, kMapSize) ? int(kOk) : int(kBadData);
	});
	INFO("attacher: " << describe(r));
	CHECK(r.exit_code == 0);

	// A write through the window reaches the file after msync.
	constexpr uint64_t kWriteAt = 100 * kPage + 40;
	const char msg[] = "written through the mshare window";
	CHECK(store(at(kAt + kWriteAt), msg, sizeof(msg)));
	CHECK(msync(at(kStart), kSize, MS_SYNC) == 0);
	{
		Fd f(open(file.c_str(), O_RDONLY));
		REQUIRE(f.get() >= 0);
		char back[sizeof(msg)] = {};
		CHECK(pread(f.get(), back, sizeof(back), static_cast<off_t>(kFileOffset + kWriteAt)) ==
		      static_cast<ssize_t>(sizeof(back)));
		CHECK(std::string(back) == msg);
		// The rest of the file is untouched.
		std::vector<char> all(kFileSize);
		CHECK(pread(f.get(), all.data(), all.size(), 0) == static_cast<ssize_t>(kFileSize));
		std::memcpy(contents.data() + kFileOffset + kWriteAt, msg, sizeof(msg));
		CHECK(std::memcmp(all.data(), contents.data(), kFileSize) == 0);
	}

	// The read-only file maps with PROT_READ and reads fine.
	std::vector<char> ro_contents(kFileSize);
	fill_buffer(ro_contents.data(), kFileSize, 600);
	CHECK(same_bytes(at(kRoAt), ro_contents.data(), kMiB));
	ChildResult ro_reader = run_in_child([&] {
		w.reset();
		if (!child_attach("filemap", PROT_READ))
			return int(kAttachFailed);
		return same_bytes(at(kRoAt), ro_contents.data(), kMiB) ? int(kOk) : int(kBadData);
	});
	INFO("attacher with a read-only window: " << describe(ro_reader));
	CHECK(ro_reader.exit_code == 0);
	// Next to the file mapping there is nothing.
	CHECK(read_faults(at(kAt - kPage)));
	CHECK(read_faults(at(kAt + kMapSize)));

	// A store made without msync is not lost when the mapping goes: UNMAP
	// writes it back to the file before the range disappears.
	const char late[] = "stored just before UNMAP";
	CHECK(store(at(kAt + 200 * kPage), late, sizeof(late)));
	CHECK(unmap(region.get(), kAt, kMapSize) == 0);
	CHECK(read_faults(at(kAt + 200 * kPage)));
	{
		Fd f(open(file.c_str(), O_RDONLY));
		REQUIRE(f.get() >= 0);
		char back[sizeof(late)] = {};
		CHECK(pread(f.get(), back, sizeof(back), static_cast<off_t>(kFileOffset + 200 * kPage)) ==
		      static_cast<ssize_t>(sizeof(back)));
		CHECK(std::string(back) == late);
	}

	w.reset();
	region.reset();
	unlink(path("filemap").c_str());
	unlink(file.c_str());
	unlink(ro_file.c_str());
}

// A store at addr (in a child) into a read-only mapping is refused. The
// compat path cannot make it fault (FUSE maps the page cache writable;
// README, "compat path"): the store lands in the page cache, the daemon
// refuses it at writeback with EIO and drops the page. A backend that
// refuses it faults instead.
static void store_is_refused(void *addr, int region_fd)
{
	const bool faulted = write_faults(addr);
	const int synced = fsync(region_fd) == 0 ? 0 : errno;
	MESSAGE("store " << (faulted ? "faulted" : "did not fault") << ", fsync after it: "
			 << std::string(synced ? strerror(synced) : "ok"));
	if (exact_semantics())
		CHECK(faulted);
	else if (!faulted)
		CHECK(synced == EIO);
}

TEST_CASE("sharing: a store into a read-only mapping reaches nobody")
{
	// Protections come from the region's mappings, not the window: the
	// window is mapped read-write, the mappings are PROT_READ.
	Daemon d;
	constexpr uint64_t kFileAt = kStart + 8 * kMiB;
	constexpr uint64_t kAnonAt = kStart + 16 * kMiB;
	const std::string ro_file = "/dev/shm/sharing-readonly-target";
	std::vector<char> contents(kMiB);
	fill_buffer(contents.data(), kMiB, 700);
	{
		Fd f(open(ro_file.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644));
		REQUIRE(f.get() >= 0);
		REQUIRE(pwrite(f.get(), contents.data(), kMiB, 0) == static_cast<ssize_t>(kMiB));
	}
	Fd region(open(path("readonly").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(region.get() >= 0);
	REQUIRE(set_size(region.get(), kStart, kSize) == 0);
	{
		Fd ro(open(ro_file.c_str(), O_RDONLY));
		REQUIRE(ro.get() >= 0);
		REQUIRE(create_mapping(region.get(), kFileAt, kMiB, 0, PROT_READ, MAP_SHARED | MAP_FIXED, ro.get()) ==
			0);
	}
	REQUIRE(create_mapping(region.get(), kAnonAt, kMiB, 0, PROT_READ, MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED) ==
		0);
	Window w(region.get());
	REQUIRE(w);
	CHECK(same_bytes(at(kFileAt), contents.data(), kMiB));
	CHECK(all_zero(at(kAnonAt), kMiB));

	SUBCASE("file mapping of an O_RDONLY descriptor")
	{
		store_is_refused(at(kFileAt + 3 * kPage), region.get());
		// Either way the file itself is untouched ...
		Fd ro(open(ro_file.c_str(), O_RDONLY));
		REQUIRE(ro.get() >= 0);
		std::vector<char> now(kMiB);
		CHECK(pread(ro.get(), now.data(), now.size(), 0) == static_cast<ssize_t>(kMiB));
		CHECK(std::memcmp(now.data(), contents.data(), kMiB) == 0);
		// ... and so is what every attacher reads there.
		ChildResult r = run_in_child([&] {
			w.reset();
			if (!child_attach("readonly", PROT_READ))
				return int(kAttachFailed);
			return same_bytes(at(kFileAt), contents.data(), kMiB) ? int(kOk) : int(kBadData);
		});
		INFO("another attacher: " << describe(r) << " (13: it reads the refused store, not the file)");
		CHECK(r.exit_code == 0);
		CHECK(same_bytes(at(kFileAt), contents.data(), kMiB));
	}
	SUBCASE("anonymous mapping created PROT_READ")
	{
		store_is_refused(at(kAnonAt + 5 * kPage), region.get());
		ChildResult r = run_in_child([&] {
			w.reset();
			if (!child_attach("readonly", PROT_READ))
				return int(kAttachFailed);
			return all_zero(at(kAnonAt), kMiB) ? int(kOk) : int(kBadData);
		});
		INFO("another attacher: " << describe(r) << " (13: it reads the refused store)");
		CHECK(r.exit_code == 0);
		CHECK(all_zero(at(kAnonAt), kMiB));
	}
	w.reset();
	region.reset();
	unlink(path("readonly").c_str());
	unlink(ro_file.c_str());
}

TEST_CASE("sharing: UNMAP by one process makes every attacher fault there")
{
	Daemon d;
	Fd region(create_region("unmap", kStart, kSize));
	REQUIRE(region.get() >= 0);
	Window w(region.get());
	REQUIRE(w);
	constexpr uint64_t kGone = kStart + 4 * kMiB;
	constexpr uint64_t kGoneSize = 2 * kMiB;
	constexpr uint64_t kBefore = kGone - 1 * kMiB;
	constexpr uint64_t kAfter = kGone + kGoneSize;
	constexpr uint64_t kCold = kStart + 512 * kMiB; // never touched before the UNMAP
	REQUIRE(fill(at(kBefore), kMiB, 11));
	REQUIRE(fill(at(kGone), kGoneSize, 12));
	REQUIRE(fill(at(kAfter), kMiB, 13));

	constexpr int kAttachers = 3;
	// Each attacher has its own go pipe: with one shared pipe, an attacher
	// through its first checks could take another's first go and start
	// the second round before the new mapping exists.
	Pipe ready;
	std::array<Pipe, kAttachers> go;
	std::vector<pid_t> pids;
	for (int i = 0; i < kAttachers; i++)
		pids.push_back(spawn([&, i] {
			ready.close_r();
			for (Pipe &g : go)
				g.close_w();
			const int my_go = go[static_cast<size_t>(i)].r;
			w.reset(); // attach by name, not by inheritance
			if (!child_attach("unmap"))
				return int(kAttachFailed);
			// Read the range (its pages are now in this process's
			// page tables) and its neighbours.
			if (!matches(at(kGone), kGoneSize, 12) || !matches(at(kBefore), kMiB, 11) ||
			    !matches(at(kAfter), kMiB, 13))
				return int(kBadData);
			if (!signal_byte(ready.w) || !wait_byte(my_go))
				return int(kBarrierFailed);
			// The ioctl has returned: every page of the range faults,
			// for reads and for writes.
			if (!range_all_fault(at(kGone), kGoneSize))
				return int(kNoFault);
			if (!probe_write(at(kGone + kPage), 1))
				return int(kNoFault) + 100;
			if (range_faults(at(kBefore), kMiB) || range_faults(at(kAfter), kMiB))
				return int(kUnexpectedFault);
			if (!matches(at(kBefore), kMiB, 11) || !matches(at(kAfter), kMiB, 13))
				return int(kBadData) + 100;
			// A part of the same mapping nobody touched yet is still
			// there, read from the region's memory.
			if (range_faults(at(kCold), kMiB))
				return int(kUnexpectedFault) + 100;
			if (!all_zero(at(kCold), kMiB))
				return 22;
			// Then a new mapping is made over the hole: this process,
			// which faulted there, now reads zeros.
			if (!signal_byte(ready.w) || !wait_byte(my_go))
				return int(kBarrierFailed);
			if (range_faults(at(kGone), kGoneSize))
				return 20;
			if (!all_zero(at(kGone), kGoneSize))
				return 21;
			return int(kOk);
		}));
	ready.close_w();
	for (Pipe &g : go)
		g.close_r();
	const auto go_all = [&go] {
		for (Pipe &g : go)
			send_bytes(g.w, 1);
	};
	REQUIRE_MESSAGE(wait_bytes(ready.r, kAttachers), "attachers did not get ready");

	CHECK(unmap(region.get(), kGone, kGoneSize) == 0);
	go_all();
	const bool checked = wait_bytes(ready.r, kAttachers, 60000);
	CHECK_MESSAGE(checked, "not every attacher got through its checks after the UNMAP");
	// The process that made the call, and a fresh child of it.
	CHECK(range_all_fault(at(kGone), kGoneSize));
	CHECK(read_faults(at(kGone)));
	CHECK(read_faults(at(kGone + kGoneSize - 1)));
	CHECK(write_faults(at(kGone + kMiB)));
	CHECK_FALSE(read_faults(at(kGone - 1)));
	CHECK_FALSE(read_faults(at(kAfter)));
	CHECK(matches(at(kBefore), kMiB, 11));
	CHECK(matches(at(kAfter), kMiB, 13));

	// A new mapping over the hole reads zeros, everywhere, for everyone.
	CHECK(create_mapping(region.get(), kGone, kGoneSize, 0, PROT_READ | PROT_WRITE,
			     MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED) == 0);
	go_all();
	for (int i = 0; i < kAttachers; i++) {
		ChildResult r = wait_for(pids[static_cast<size_t>(i)], 30);
		INFO("attacher " << i << ": " << describe(r)
				 << " (14: a read did not fault after UNMAP, 114: a write did not, 15/13/113/115/22: the"
				    " rest of the mapping was lost, 20/21: the new mapping faulted / was not zero)");
		CHECK(r.exit_code == 0);
	}
	CHECK_FALSE(range_faults(at(kGone), kGoneSize));
	CHECK(all_zero(at(kGone), kGoneSize));
	ChildResult r = run_in_child([&] {
		w.reset();
		if (!child_attach("unmap"))
			return int(kAttachFailed);
		if (range_faults(at(kGone), kGoneSize))
			return int(kUnexpectedFault);
		return all_zero(at(kGone), kGoneSize) ? int(kOk) : int(kBadData);
	});
	INFO("new attacher over the re-created mapping: " << describe(r));
	CHECK(r.exit_code == 0);
	CHECK(matches(at(kBefore), kMiB, 11));
	CHECK(matches(at(kAfter), kMiB, 13));
}

TEST_CASE("sharing: addresses no mapping covers fault on read and on write")
{
	Daemon d;
	Fd region(open(path("holes").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(region.get() >= 0);
	REQUIRE(set_size(region.get(), kStart, kSize) == 0);
	constexpr uint64_t kMapped = kStart + 2 * kMiB;
	REQUIRE(create_mapping(region.get(), kMapped, kMiB, 0, PROT_READ | PROT_WRITE,
			       MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED) == 0);
	Window w(region.get());
	REQUIRE(w);

	for (uint64_t addr : {kStart, kMapped - kPage, kMapped - 1, kMapped + kMiB, kStart + 512 * kMiB,
			      kStart + kSize - 1}) {
		INFO("address start+" << (addr - kStart));
		CHECK(read_faults(at(addr)));
		CHECK(write_faults(at(addr)));
		// In this process too, and a store did not make the page appear.
		CHECK(probe_write(at(addr), 7));
		CHECK(probe_read(at(addr)));
	}
	CHECK_FALSE(read_faults(at(kMapped)));
	CHECK_FALSE(write_faults(at(kMapped + kMiB - 1)));

	// A small mapping between two holes, at no particular alignment: every
	// one of its pages reads, for a fresh attacher, and the pages on
	// either side fault (readahead across the edges must not change that).
	constexpr uint64_t kSmall = kStart + 6 * kMiB + 12 * kKiB;
	constexpr uint64_t kSmallSize = 20 * kKiB;
	REQUIRE(create_mapping(region.get(), kSmall, kSmallSize, 0, PROT_READ | PROT_WRITE,
			       MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED) == 0);
	ChildResult r = run_in_child([&] {
		w.reset();
		if (!child_attach("holes"))
			return int(kAttachFailed);
		for (uint64_t off = 0; off < kSmallSize; off += kPage)
			if (probe_read(at(kSmall + off)) || probe_write(at(kSmall + off), 0x5A))
				return int(kUnexpectedFault);
		if (!probe_read(at(kSmall - 1)) || !probe_read(at(kSmall + kSmallSize)))
			return int(kNoFault);
		if (!probe_write(at(kSmall - kPage), 1) || !probe_write(at(kSmall + kSmallSize + kPage), 1))
			return int(kNoFault) + 100;
		return int(kOk);
	});
	INFO("fresh attacher around the small mapping: " << describe(r)
		<< " (15: a mapped page faulted, 14/114: a hole did not)");
	CHECK(r.exit_code == 0);
	unsigned char small = 0;
	CHECK_FALSE(probe_read(at(kSmall + kSmallSize - kPage), &small));
	CHECK(small == 0x5A);
	CHECK(read_faults(at(kSmall + kSmallSize)));
	CHECK_FALSE(probe_write(at(kMapped + kPage), 9));
	unsigned char v = 0;
	CHECK_FALSE(probe_read(at(kMapped + kPage), &v));
	CHECK(v == 9);
}

TEST_CASE("sharing: unlink removes the name; the memory goes once, with the last user")
{
	Daemon d;
	const auto before = objects_now();
	Fd a(create_region("doomed", kStart, kSize));
	REQUIRE(a.get() >= 0);
	const auto with_a = objects_now();
	Fd b(create_region("bystander", kStart + kSize, kSize));
	REQUIRE(b.get() >= 0);
	const auto with_both = objects_now();
	std::set<std::string> a_objects, b_objects;
	std::set_difference(with_a.begin(), with_a.end(), before.begin(), before.end(),
			    std::inserter(a_objects, a_objects.end()));
	std::set_difference(with_both.begin(), with_both.end(), with_a.begin(), with_a.end(),
			    std::inserter(b_objects, b_objects.end()));
	REQUIRE(a_objects.size() == 1);
	REQUIRE(b_objects.size() == 1);

	Window wa(a.get());
	Window wb(b.get());
	REQUIRE(wa);
	REQUIRE(wb);
	constexpr uint64_t kA = kStart + 10 * kMiB;
	constexpr uint64_t kB = kStart + kSize + 10 * kMiB;
	REQUIRE(fill(at(kA), kMiB, 21));
	REQUIRE(fill(at(kB), kMiB, 22));

	// Another attacher, attached before the unlink.
	Pipe ready, go;
	pid_t other = spawn([&] {
		ready.close_r();
		go.close_w();
		wa.reset();
		wb.reset();
		if (!child_attach("doomed"))
			return int(kAttachFailed);
		if (!signal_byte(ready.w) || !wait_byte(go.r))
			return int(kBarrierFailed);
		if (!matches(at(kA), kMiB, 21) || !matches(at(kA + kMiB), kMiB, 23))
			return int(kBadData);
		if (!fill(at(kA + 2 * kMiB), kMiB, 24))
			return int(kUnexpectedFault);
		return int(kOk);
	});
	ready.close_w();
	go.close_r();
	REQUIRE(wait_byte(ready.r));

	REQUIRE(unlink(path("doomed").c_str()) == 0);
	errno = 0;
	CHECK(open(path("doomed").c_str(), O_RDWR) == -1);
	CHECK(errno == ENOENT);
	// Existing windows keep working, for reads and writes.
	CHECK(matches(at(kA), kMiB, 21));
	REQUIRE(fill(at(kA + kMiB), kMiB, 23));
	CHECK(objects_now() == with_both);
	signal_byte(go.w);
	ChildResult r = wait_for(other, 20);
	INFO("other attacher: " << describe(r));
	CHECK(r.exit_code == 0);
	CHECK(matches(at(kA + 2 * kMiB), kMiB, 24));
	// Still mapped here: still there.
	usleep(100000);
	CHECK(objects_now() == with_both);

	// The fd goes first, then the window: the last user is gone.
	a.reset();
	usleep(100000);
	CHECK(objects_now() == with_both);
	CHECK(matches(at(kA), kMiB, 21));
	wa.reset();
	std::set<std::string> only_b = before;
	only_b.insert(b_objects.begin(), b_objects.end());
	CHECK_MESSAGE(eventually([&] { return objects_now() == only_b; }),
		      "the unlinked region's object is still in the state directory");
	// The other region did not notice.
	CHECK(objects_now().count(*b_objects.begin()) == 1);
	CHECK(matches(at(kB), kMiB, 22));

	// A new region under the old name is a new region; nothing freed
	// late takes its memory.
	Fd again(create_region("doomed", kStart, kSize));
	REQUIRE(again.get() >= 0);
	Window wagain(again.get());
	REQUIRE(wagain);
	CHECK(all_zero(at(kA), kMiB));
	REQUIRE(fill(at(kA), kMiB, 25));
	usleep(300000);
	CHECK(objects_now().size() == before.size() + 2);
	CHECK(matches(at(kA), kMiB, 25));
	CHECK(matches(at(kB), kMiB, 22));
}

TEST_CASE("sharing: when the owner exits, attachers fault and the memory is freed")
{
	Daemon d;
	const auto before = objects_now();
	constexpr uint64_t kData = kStart + 20 * kMiB;
	Pipe created, die;
	pid_t creator = spawn([&] {
		created.close_r();
		die.close_w();
		int fd = create_region("orphan", kStart, kSize);
		if (fd < 0)
			return int(kOpenFailed);
		if (attach(fd) == MAP_FAILED)
			return int(kAttachFailed);
		if (!fill(at(kData), kMiB, 31))
			return int(kUnexpectedFault);
		signal_byte(created.w);
		wait_byte(die.r, 30000); // a byte or EOF: either way, exit
		return int(kOk);
	});
	created.close_w();
	die.close_r();
	REQUIRE_MESSAGE(wait_byte(created.r), "the creator did not make its region");
	const auto with_region = objects_now();
	CHECK(with_region.size() == before.size() + 1);

	// An attacher that reports the fault it takes itself.
	Pipe ready, exited, report;
	pid_t attacher = spawn([&] {
		ready.close_r();
		exited.close_w();
		report.close_r();
		if (!child_attach("orphan"))
			return int(kAttachFailed);
		if (!matches(at(kData), kMiB, 31))
			return int(kBadData);
		if (!signal_byte(ready.w) || !wait_byte(exited.r))
			return int(kBarrierFailed);
		const auto t0 = std::chrono::steady_clock::now();
		const auto deadline = t0 + std::chrono::seconds(2);
		while (!probe_read(at(kData + 5 * kPage))) {
			if (std::chrono::steady_clock::now() > deadline)
				return int(kNoFault);
			usleep(5000);
		}
		const int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(
					   std::chrono::steady_clock::now() - t0)
					   .count();
		write_full(report.w, &ms, sizeof(ms));
		// Every other page faults as well, and writes too.
		if (!range_all_fault(at(kData), kMiB) || !probe_write(at(kData), 1))
			return int(kNoFault) + 100;
		return int(kOk);
	});
	ready.close_w();
	exited.close_r();
	report.close_w();
	// This process attaches too (it is not the owner).
	Fd mine(open(path("orphan").c_str(), O_RDWR));
	REQUIRE(mine.get() >= 0);
	Window w(mine.get());
	REQUIRE(w);
	CHECK(matches(at(kData), kMiB, 31));
	REQUIRE_MESSAGE(wait_byte(ready.r), "the attacher did not get ready");

	signal_byte(die.w); // children forked meanwhile hold the write end too
	die.close_w();
	ChildResult cr = wait_for(creator, 20);
	INFO("creator: " << describe(cr));
	CHECK(cr.exit_code == 0);
	signal_byte(exited.w);

	CHECK_MESSAGE(eventually([&] { return read_faults(at(kData)); }, 2000),
		      "a process with the window still reads the region 2 s after its owner exited");
	int64_t ms = -1;
	const bool reported = read_full(report.r, &ms, sizeof(ms), 5000);
	ChildResult ar = wait_for(attacher, 20);
	INFO("attacher: " << describe(ar) << " (14: no fault within 2 s, 114: some page still readable)");
	CHECK(ar.exit_code == 0);
	if (reported)
		MESSAGE("the attacher faulted " << ms << " ms after the owner was reaped");

	CHECK(create_mapping(mine.get(), kStart, kMiB, 0, PROT_READ | PROT_WRITE,
			     MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED) == EINVAL);
	CHECK(read_faults(at(kData)));
	CHECK_MESSAGE(eventually([&] { return objects_now() == before; }),
		      "the orphaned region's memory object is still in the state directory");
	w.reset();
	mine.reset();
	unlink(path("orphan").c_str());
}

TEST_CASE("sharing: two regions side by side stay independent")
{
	Daemon d;
	constexpr uint64_t kStartB = kStart + kSize; // right after the first one
	Fd a(create_region("left", kStart, kSize));
	Fd b(create_region("right", kStartB, kSize));
	REQUIRE(a.get() >= 0);
	REQUIRE(b.get() >= 0);
	mshare_info ia{}, ib{};
	REQUIRE(get_size(a.get(), &ia) == 0);
	REQUIRE(get_size(b.get(), &ib) == 0);
	CHECK(ia.start == kStart);
	CHECK(ib.start == kStartB);
	CHECK(ia.size == kSize);
	CHECK(ib.size == kSize);
	Window wa(a.get());
	Window wb(b.get());
	REQUIRE(wa);
	REQUIRE(wb);

	// The same offsets in both regions hold different data.
	constexpr uint64_t kOff = 40 * kMiB;
	REQUIRE(fill(at(kStart + kOff), kMiB, 41));
	REQUIRE(fill(at(kStartB + kOff), kMiB, 42));
	REQUIRE(fill(at(kStart + kSize - kMiB), kMiB, 43)); // the last MiB of left, next to right
	REQUIRE(fill(at(kStartB), kMiB, 44));		   // the first MiB of right

	ChildResult r = run_in_child([&] {
		wa.reset();
		wb.reset();
		if (!child_attach("left") || !child_attach("right"))
			return int(kAttachFailed);
		if (!matches(at(kStart + kOff), kMiB, 41) || !matches(at(kStartB + kOff), kMiB, 42) ||
		    !matches(at(kStart + kSize - kMiB), kMiB, 43) || !matches(at(kStartB), kMiB, 44))
			return int(kBadData);
		if (!fill(at(kStart + kOff + kMiB), kMiB, 45))
			return int(kUnexpectedFault); // into left only
		return int(kOk);
	});
	INFO("attacher of both: " << describe(r));
	CHECK(r.exit_code == 0);
	CHECK(matches(at(kStart + kOff + kMiB), kMiB, 45));
	CHECK(all_zero(at(kStartB + kOff + kMiB), kMiB));

	// UNMAP in one leaves the other alone.
	CHECK(unmap(a.get(), kStart + kOff, kMiB) == 0);
	CHECK(read_faults(at(kStart + kOff)));
	CHECK_FALSE(read_faults(at(kStartB + kOff)));
	CHECK(matches(at(kStartB + kOff), kMiB, 42));
	CHECK(matches(at(kStartB), kMiB, 44));
	CHECK(matches(at(kStart + kSize - kMiB), kMiB, 43));
	// An address of the other region is not a valid UNMAP argument here.
	CHECK(unmap(a.get(), kStartB + kOff, kMiB) == EINVAL);
	CHECK(matches(at(kStartB + kOff), kMiB, 42));

	// Removing one name leaves the other name and its data.
	wa.reset();
	a.reset();
	REQUIRE(unlink(path("left").c_str()) == 0);
	Fd b2(open(path("right").c_str(), O_RDWR));
	CHECK(b2.get() >= 0);
	CHECK(matches(at(kStartB + kOff), kMiB, 42));
	wb.reset();
	ChildResult r2 = run_in_child([&] {
		if (!child_attach("right"))
			return int(kAttachFailed);
		return matches(at(kStartB + kOff), kMiB, 42) && matches(at(kStartB), kMiB, 44) ? int(kOk)
												: int(kBadData);
	});
	INFO("attacher of the remaining region: " << describe(r2));
	CHECK(r2.exit_code == 0);
}

TEST_CASE("sharing: a region created from a thread is owned by the process, not the thread")
{
	Daemon d;
	constexpr uint64_t kData = kStart + 30 * kMiB;
	Pipe created, die;
	pid_t creator = spawn([&] {
		created.close_r();
		die.close_w();
		int fd = -1;
		std::thread t([&] { fd = create_region("threaded", kStart, kSize); });
		t.join(); // the creating thread is gone; the process lives on
		if (fd < 0)
			return int(kOpenFailed);
		if (attach(fd) == MAP_FAILED)
			return int(kAttachFailed);
		if (!fill(at(kData), kMiB, 51))
			return int(kUnexpectedFault);
		signal_byte(created.w);
		wait_byte(die.r, 30000);
		return int(kOk);
	});
	created.close_w();
	die.close_r();
	REQUIRE_MESSAGE(wait_byte(created.r), "the creator did not make its region");
	usleep(300000);

	ChildResult r = run_in_child([&] {
		if (!child_attach("threaded"))
			return int(kAttachFailed);
		if (range_faults(at(kData), kMiB))
			return int(kUnexpectedFault);
		if (!matches(at(kData), kMiB, 51))
			return int(kBadData);
		if (!fill(at(kData + kMiB), kMiB, 52))
			return int(kUnexpectedFault);
		return int(kOk);
	});
	INFO("attacher 300 ms after the creating thread exited: " << describe(r)
		<< " (15: the region was orphaned)");
	CHECK(r.exit_code == 0);

	Fd mine(open(path("threaded").c_str(), O_RDWR));
	REQUIRE(mine.get() >= 0);
	Window w(mine.get());
	REQUIRE(w);
	CHECK_FALSE(read_faults(at(kData)));
	CHECK(matches(at(kData + kMiB), kMiB, 52));
	// The region is not orphaned: the process still owns it.
	CHECK(region_owner("threaded") == creator);

	// The process's exit is the owner's exit.
	signal_byte(die.w); // children forked meanwhile hold the write end too
	die.close_w();
	ChildResult cr = wait_for(creator, 20);
	INFO("creator: " << describe(cr));
	CHECK(cr.exit_code == 0);
	CHECK_MESSAGE(eventually([&] { return read_faults(at(kData)); }, 2000),
		      "the region outlived its creating process by 2 s");
	w.reset();
	mine.reset();
	unlink(path("threaded").c_str());
}

TEST_CASE("sharing: the creating main thread exits while another thread of the process lives")
{
	Daemon d;
	constexpr uint64_t kData = kStart + 30 * kMiB;
	Pipe created, die;
	pid_t creator = spawn([&] {
		created.close_r();
		die.close_w();
		int fd = create_region("leaderless", kStart, kSize);
		if (fd < 0)
			return int(kOpenFailed);
		if (attach(fd) == MAP_FAILED)
			return int(kAttachFailed);
		if (!fill(at(kData), kMiB, 53))
			return int(kUnexpectedFault);
		std::thread([&] {
			wait_byte(die.r, 30000);
			_exit(kOk);
		}).detach();
		signal_byte(created.w);
		// Only this thread ends (exit, not exit_group; no unwinding
		// through spawn()): the process lives on in the other thread.
		syscall(SYS_exit, 0);
		return int(kOk);
	});
	created.close_w();
	die.close_r();
	REQUIRE_MESSAGE(wait_byte(created.r), "the creator did not make its region");
	usleep(300000);
	// The scenario is the intended one: the leader is a zombie, the
	// process is alive.
	CHECK(kill(creator, 0) == 0);
	CHECK(thread_state(creator) == 'Z');

	ChildResult r = run_in_child([&] {
		if (!child_attach("leaderless"))
			return int(kAttachFailed);
		if (range_faults(at(kData), kMiB))
			return int(kUnexpectedFault);
		return matches(at(kData), kMiB, 53) ? int(kOk) : int(kBadData);
	});
	INFO("attacher 300 ms after the creating thread exited: " << describe(r)
		<< " (15: the region was orphaned)");
	CHECK(r.exit_code == 0);
	Fd mine(open(path("leaderless").c_str(), O_RDWR));
	REQUIRE(mine.get() >= 0);
	CHECK(region_owner("leaderless") == creator);

	Window w(mine.get());
	REQUIRE(w);
	signal_byte(die.w);
	die.close_w();
	ChildResult cr = wait_for(creator, 20);
	INFO("creator: " << describe(cr));
	CHECK(cr.exit_code == 0);
	CHECK_MESSAGE(eventually([&] { return read_faults(at(kData)); }, 2000),
		      "the region outlived its creating process by 2 s");
	w.reset();
	mine.reset();
	unlink(path("leaderless").c_str());
}

TEST_CASE("sharing: 256 MiB written by one process, checksummed by another")
{
	Daemon d;
	Fd region(create_region("large", kStart, kSize));
	REQUIRE(region.get() >= 0);
	constexpr uint64_t kLarge = 256 * kMiB;
	constexpr uint64_t kSeed = 1000;
	struct Report {
		int64_t ns;
		uint64_t sum;
		uint64_t mismatch;
	};
	auto checksum = [](const char *p, uint64_t len) {
		const auto *w = reinterpret_cast<const uint64_t *>(p);
		uint64_t sum = 0;
		for (uint64_t i = 0; i < len / 8; i++)
			sum = (sum ^ w[i]) * 0x100000001B3ULL;
		return sum;
	};
	Pipe report;
	pid_t writer = spawn([&] {
		report.close_r();
		if (!child_attach("large"))
			return int(kAttachFailed);
		const auto t0 = std::chrono::steady_clock::now();
		if (!fill(at(kStart), kLarge, kSeed))
			return int(kUnexpectedFault);
		const auto t1 = std::chrono::steady_clock::now();
		Report rep{std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(), 0, 0};
		write_full(report.w, &rep, sizeof(rep));
		return int(kOk);
	});
	Report wrep{};
	const bool wrote = read_full(report.r, &wrep, sizeof(wrep), 40000);
	ChildResult wr = wait_for(writer, 40);
	INFO("writer: " << describe(wr));
	REQUIRE(wr.exit_code == 0);
	REQUIRE(wrote);

	// Nobody has the window now. Write the pages back to the daemon and
	// drop them from the page cache, so the reader's faults are answered
	// from the region's memory, not from pages the writer left behind.
	const int64_t cached_before = cached_pages(region.get(), kLarge);
	CHECK(fsync(region.get()) == 0);
	CHECK(posix_fadvise(region.get(), 0, static_cast<off_t>(kLarge), POSIX_FADV_DONTNEED) == 0);
	const int64_t cached_after = cached_pages(region.get(), kLarge);
	if (cached_before >= 0 && cached_after >= 0)
		MESSAGE("pages of the 256 MiB in the page cache: " << cached_before << " after writing, "
								    << cached_after << " after fsync + DONTNEED");

	pid_t reader = spawn([&] {
		report.close_r();
		if (!child_attach("large"))
			return int(kAttachFailed);
		const auto t0 = std::chrono::steady_clock::now();
		const uint64_t sum = checksum(at(kStart), kLarge);
		const auto t1 = std::chrono::steady_clock::now();
		Report rep{std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(), sum,
			   first_mismatch(at(kStart), kLarge, kSeed)};
		write_full(report.w, &rep, sizeof(rep));
		return int(kOk);
	});
	Report rrep{};
	const bool read_back = read_full(report.r, &rrep, sizeof(rrep), 40000);
	ChildResult rr = wait_for(reader, 40);
	INFO("reader: " << describe(rr));
	REQUIRE(rr.exit_code == 0);
	REQUIRE(read_back);

	std::vector<char> expected(kLarge);
	fill_buffer(expected.data(), kLarge, kSeed);
	CHECK(rrep.mismatch == kAllMatch);
	CHECK(rrep.sum == checksum(expected.data(), kLarge));
	auto mib_s = [](int64_t ns) { return ns > 0 ? double(kLarge >> 20) * 1e9 / double(ns) : 0.0; };
	MESSAGE("256 MiB through the window: written in " << wrep.ns / 1000000 << " ms (" << int(mib_s(wrep.ns))
							   << " MiB/s), checksummed by another process in "
							   << rrep.ns / 1000000 << " ms (" << int(mib_s(rrep.ns))
							   << " MiB/s)");
}

namespace {
int handoff_ioctl(int fd, unsigned long cmd) { return ioctl(fd, cmd) == 0 ? 0 : errno; }
} // namespace

// On the module each window flips between the region's writable and
// read-only view; the runtime write-protects each attacher.
TEST_CASE("sharing: LOCK hands the region over; only the holder writes (uffd and kmod)")
{
	if (!exact_semantics()) {
		MESSAGE("LOCK is EOPNOTSUPP on the page-cache path (test_errno checks it)");
		return;
	}
	Daemon d;
	Fd fd(create_region("handoff", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(fd.get());
	REQUIRE(w);
	CHECK(handoff_ioctl(fd.get(), MSHAREFS_LOCK) == 0);
	CHECK(fault_of([&] { strcpy(w.at(0), "holder"); }).sig == 0);
	// Another process (a child is a process of its own) may not write, and
	// may not take the lock while it is held.
	CHECK(write_faults(w.at(kPage)));
	CHECK(!read_faults(w.at(0)));
	ChildResult r = run_in_child([&] {
		Fd own(open(path("handoff").c_str(), O_RDWR));
		return handoff_ioctl(own.get(), MSHAREFS_LOCK) == EBUSY &&
				       handoff_ioctl(own.get(), MSHAREFS_UNLOCK) == EPERM
			       ? 0
			       : 1;
	});
	CHECK(r.exit_code == 0);
	// Handed over: while another process holds it, it writes and this
	// one faults; after its UNLOCK every attacher writes again.
	CHECK(handoff_ioctl(fd.get(), MSHAREFS_UNLOCK) == 0);
	int held[2], release[2];
	REQUIRE(pipe(held) == 0);
	REQUIRE(pipe(release) == 0);
	pid_t holder = spawn([&] {
		Fd own(open(path("handoff").c_str(), O_RDWR));
		if (handoff_ioctl(own.get(), MSHAREFS_LOCK) != 0)
			return 1;
		strcpy(w.at(2 * kPage), "next holder");
		char c = 'h';
		if (write(held[1], &c, 1) != 1 || read(release[0], &c, 1) != 1)
			return 2;
		return handoff_ioctl(own.get(), MSHAREFS_UNLOCK);
	});
	char c;
	REQUIRE(read(held[0], &c, 1) == 1);
	CHECK(strcmp(w.at(2 * kPage), "next holder") == 0);
	Fault f = fault_of([&] { *reinterpret_cast<volatile char *>(w.at(3 * kPage)) = 1; });
	CHECK(f.sig == SIGSEGV);
	CHECK(f.addr == w.at(3 * kPage));
	REQUIRE(write(release[1], "r", 1) == 1);
	r = wait_for(holder, 30);
	CHECK(r.exit_code == 0);
	CHECK(fault_of([&] { *reinterpret_cast<volatile char *>(w.at(3 * kPage)) = 1; }).sig == 0);
	for (int p : {held[0], held[1], release[0], release[1]})
		close(p);
}
