// The uffd data path: what the client runtime (libmshare-preload.so, which
// this binary runs under) adds to the compat path. Each case drives a real
// msharefsd (datapath=uffd) with real processes.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <string>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace msharefs::test;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kStart = 2 * kTiB;
constexpr uint64_t kSize = kGiB;
constexpr uint32_t kRW = PROT_READ | PROT_WRITE;
constexpr uint32_t kAnon = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;


// The mappings of this process inside [start, start+size), as /proc shows them.
std::vector<std::string> maps_in(uint64_t start, uint64_t size)
{
	std::vector<std::string> out;
	std::ifstream maps("/proc/self/maps");
	std::string line;
	while (std::getline(maps, line)) {
		unsigned long lo = 0, hi = 0;
		if (sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2 && lo < start + size && hi > start)
			out.push_back(line);
	}
	return out;
}

} // namespace

TEST_CASE("uffd: the window is composed from the region's objects, not the FUSE file")
{
	Daemon d;
	Fd fd(create_region("composed", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(fd.get());
	REQUIRE(w);
	strcpy(w.at(0), "native");
	const auto maps = maps_in(kStart, kSize);
	REQUIRE(!maps.empty());
	for (const auto &line : maps) {
		INFO(line);
		CHECK(line.find(state_dir() + "/") != std::string::npos);
		CHECK(line.find(kMount) == std::string::npos);
	}
}

TEST_CASE("uffd: mprotect, a partial munmap and mremap of a window fail with EINVAL")
{
	Daemon d;
	Fd fd(create_region("split", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(fd.get());
	REQUIRE(w);
	strcpy(w.at(kPage), "kept");
	errno = 0;
	CHECK(mprotect(w.at(0), kPage, PROT_READ) == -1);
	CHECK(errno == EINVAL);
	errno = 0;
	CHECK(mprotect(w.at(0), kSize, PROT_READ) == -1);
	CHECK(errno == EINVAL);
	errno = 0;
	CHECK(munmap(w.at(0), kPage) == -1);
	CHECK(errno == EINVAL);
	errno = 0;
	CHECK(munmap(w.at(kSize - kPage), 2 * kPage) == -1);
	CHECK(errno == EINVAL);
	errno = 0;
	CHECK(mremap(w.at(0), kSize, 2 * kSize, MREMAP_MAYMOVE) == MAP_FAILED);
	CHECK(errno == EINVAL);
	CHECK(strcmp(w.at(kPage), "kept") == 0);
	// The whole window goes cleanly, and can come back.
	w.reset();
	CHECK(maps_in(kStart, kSize).empty());
	Window again(fd.get());
	REQUIRE(again);
	CHECK(strcmp(again.at(kPage), "kept") == 0);
}

TEST_CASE("uffd: faults raise SIGSEGV with the faulting address")
{
	Daemon d;
	Fd fd(open(path("faults").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(fd.get() >= 0);
	REQUIRE(set_size(fd.get(), kStart, kSize) == 0);
	REQUIRE(create_mapping(fd.get(), kStart, 4 * kPage, 0, kRW, kAnon) == 0);
	REQUIRE(create_mapping(fd.get(), kStart + 8 * kPage, 4 * kPage, 0, PROT_READ, kAnon) == 0);
	Window w(fd.get());
	REQUIRE(w);
	// A hole.
	Fault f = fault_of([&] { *reinterpret_cast<volatile char *>(w.at(5 * kPage + 123)) = 1; });
	CHECK(f.sig == SIGSEGV);
	CHECK(f.addr == w.at(5 * kPage + 123));
	// A store into a read-only mapping (a page not touched yet, then one read).
	f = fault_of([&] { *reinterpret_cast<volatile char *>(w.at(9 * kPage + 7)) = 1; });
	CHECK(f.sig == SIGSEGV);
	CHECK(f.code == SEGV_ACCERR);
	CHECK(f.addr == w.at(9 * kPage + 7));
	CHECK(w.at(10 * kPage)[0] == 0);
	f = fault_of([&] { *reinterpret_cast<volatile char *>(w.at(10 * kPage + 9)) = 1; });
	CHECK(f.sig == SIGSEGV);
	CHECK(f.code == SEGV_ACCERR);
	CHECK(f.addr == w.at(10 * kPage + 9));
	// What may be written, may.
	f = fault_of([&] { *reinterpret_cast<volatile char *>(w.at(kPage)) = 1; });
	CHECK(f.sig == 0);
}

namespace {

// The bytes this process maps of its windows' published layouts.
uint64_t layout_bytes_mapped()
{
	uint64_t total = 0;
	std::ifstream maps("/proc/self/maps");
	std::string line;
	while (std::getline(maps, line)) {
		unsigned long lo = 0, hi = 0;
		if (line.find("msharefs-layout") != std::string::npos && sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2)
			total += hi - lo;
	}
	return total;
}

} // namespace

TEST_CASE("uffd: an attacher maps one page of a small layout and more as the region gains mappings")
{
	Daemon d;
	Fd fd(open(path("layout-grows").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(fd.get() >= 0);
	REQUIRE(set_size(fd.get(), kStart, kSize) == 0);
	REQUIRE(create_mapping(fd.get(), kStart, kPage, 0, kRW, kAnon) == 0);
	Window w(fd.get());
	REQUIRE(w);
	strcpy(w.at(0), "first");
	// One mapping: one page of the daemon's 772 KiB page set.
	CHECK(layout_bytes_mapped() == kPage);

	// 400 mappings, alternately writable and read-only (so none merge),
	// made while this process is attached: its fault handler meets a
	// layout longer than its view holds.
	constexpr int kMappings = 400;
	const auto at_mapping = [&](int i) { return 2 * kPage * static_cast<uint64_t>(i + 1); };
	for (int i = 0; i < kMappings; i++)
		REQUIRE(create_mapping(fd.get(), kStart + at_mapping(i), kPage, 0, i % 2 ? PROT_READ : kRW, kAnon) == 0);
	for (int i = 0; i < kMappings; i += 2)
		snprintf(w.at(at_mapping(i)), 32, "mapping %d", i);
	CHECK(layout_bytes_mapped() > kPage);
	CHECK(layout_bytes_mapped() < 200 * 1024);
	// Another process, attached after: every mapping reads what was
	// written, the read-only ones refuse stores, the holes fault.
	ChildResult r = run_in_child([&] {
		w.reset();
		Window mine(fd.get());
		if (!mine)
			return 1;
		for (int i = 0; i < kMappings; i++) {
			char want[32] = "";
			if (i % 2 == 0)
				snprintf(want, sizeof(want), "mapping %d", i);
			if (strcmp(mine.at(at_mapping(i)), want) != 0)
				return 2;
		}
		if (!write_faults(mine.at(at_mapping(kMappings - 1))) || write_faults(mine.at(at_mapping(kMappings - 2))))
			return 3;
		if (!read_faults(mine.at(at_mapping(kMappings) + kPage)))
			return 4;
		return layout_bytes_mapped() > kPage && layout_bytes_mapped() < 200 * 1024 ? 0 : 5;
	});
	INFO("child: exit " << r.exit_code << ", signal " << r.signal
			    << " (2: a mapping read wrong, 3: protections, 4: a hole, 5: its view's size)");
	CHECK(r.exit_code == 0);
	CHECK(strcmp(w.at(0), "first") == 0);
	CHECK(write_faults(w.at(at_mapping(1))));
}

TEST_CASE("uffd: PROTECT reaches an attacher that is stopped while it runs")
{
	// 4 KiB memory: a PROTECT that cuts a huge page must move it for every
	// attacher first, and fails with EBUSY while one is stopped.
	Daemon d({"align=1G", "backing=4k"});
	Fd fd(create_region("protect", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	int ready[2], go[2];
	REQUIRE(pipe(ready) == 0);
	REQUIRE(pipe(go) == 0);
	// The attacher: attaches, writes, says ready, waits, writes again.
	pid_t attacher = spawn([&] {
		Fd own(open(path("protect").c_str(), O_RDWR));
		Window aw(own.get());
		if (!aw)
			return 2;
		strcpy(aw.at(3 * kPage), "first");
		char c = 'r';
		if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			return 3;
		strcpy(aw.at(3 * kPage), "second"); // must fault: the page is read-only now
		return 0;
	});
	char c;
	REQUIRE(read(ready[0], &c, 1) == 1);
	REQUIRE(kill(attacher, SIGSTOP) == 0);
	// The attacher cannot take part; PROTECT still returns, and holds.
	CHECK(protect(fd.get(), kStart, 4 * kPage, PROT_READ) == 0);
	REQUIRE(kill(attacher, SIGCONT) == 0);
	REQUIRE(write(go[1], "g", 1) == 1);
	ChildResult r = wait_for(attacher, 30);
	CHECK(r.signal == SIGSEGV);
	Window w(fd.get());
	REQUIRE(w);
	CHECK(strcmp(w.at(3 * kPage), "first") == 0);
	CHECK(write_faults(w.at(3 * kPage)));
	CHECK(!write_faults(w.at(4 * kPage)));
	// Back to read-write, and PROT_NONE.
	CHECK(protect(fd.get(), kStart, 4 * kPage, kRW) == 0);
	CHECK(!write_faults(w.at(3 * kPage)));
	CHECK(protect(fd.get(), kStart, kPage, PROT_NONE) == 0);
	CHECK(read_faults(w.at(0)));
	CHECK(!read_faults(w.at(kPage)));
	CHECK(protect(fd.get(), kStart, kPage, kRW) == 0);
	CHECK(!read_faults(w.at(0)));
	for (int p : {ready[0], ready[1], go[0], go[1]})
		close(p);
}

TEST_CASE("uffd: a killed daemon loses nothing; attachers keep working and relink")
{
	Daemon d;
	Fd fd(create_region("survivor", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(fd.get());
	REQUIRE(w);
	strcpy(w.at(0), "before the crash");
	d.kill9();
	// No daemon: the window is the process's own mapping of the objects.
	strcpy(w.at(64 * kMiB), "during the outage");
	CHECK(strcmp(w.at(0), "before the crash") == 0);
	// Requests that need the daemon fail at once rather than wait.
	mshare_info info{};
	errno = 0;
	CHECK(ioctl(fd.get(), MSHAREFS_GET_SIZE, &info) == -1);
	CHECK(errno == ENOTCONN);
	errno = 0;
	CHECK(mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0) == MAP_FAILED);
	CHECK(errno == ENOTCONN);
	d.restart();
	CHECK(strcmp(w.at(64 * kMiB), "during the outage") == 0);
	// The runtime attaches again to the new daemon: PROTECT reaches it.
	bool protected_now = false;
	for (int i = 0; i < 50 && !protected_now; i++) {
		CHECK(protect(fd.get(), kStart, kPage, PROT_READ) == 0);
		protected_now = fault_of([&] { *reinterpret_cast<volatile char *>(w.at(0)) = 'b'; }).sig == SIGSEGV;
		if (!protected_now)
			usleep(100000);
	}
	CHECK(protected_now);
	CHECK(strcmp(w.at(0), "before the crash") == 0);
}

namespace {

// Waits (up to 5 s) until the process is in a stop state (T in
// /proc/PID/stat): kill(SIGSTOP) returns before the process has stopped.
bool wait_stopped(pid_t pid)
{
	for (int i = 0; i < 500; i++) {
		std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
		std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
		const size_t paren = text.rfind(')');
		if (paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'T')
			return true;
		usleep(10000);
	}
	return false;
}

double seconds_since(const timespec &t0)
{
	timespec t1{};
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return static_cast<double>(t1.tv_sec - t0.tv_sec) + static_cast<double>(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

bool reads_fault(const char *addr)
{
	return fault_of([&] { (void)*reinterpret_cast<const volatile char *>(addr); }).sig != 0;
}

} // namespace

TEST_CASE("uffd: UNMAP and CREATE_MAPPING with a stopped attacher fail with EBUSY at once and change nothing")
{
	Daemon d;
	Fd fd(create_region("stopped", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(fd.get());
	REQUIRE(w);
	strcpy(w.at(3 * kPage), "kept");
	REQUIRE(unmap(fd.get(), kStart + 16 * kPage, 16 * kPage) == 0); // a hole
	int ready[2], go[2];
	REQUIRE(pipe(ready) == 0);
	REQUIRE(pipe(go) == 0);
	// The attacher reports each stage's view by its exit code.
	pid_t attacher = spawn([&] {
		Fd own(open(path("stopped").c_str(), O_RDWR));
		Window aw(own.get());
		if (!aw || strcmp(aw.at(3 * kPage), "kept") != 0)
			return 2;
		char c = 'r';
		if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			return 3;
		// Stopped through both ioctls: the layout is the one it had.
		if (reads_fault(aw.at(3 * kPage)) || strcmp(aw.at(3 * kPage), "kept") != 0)
			return 4;
		if (!reads_fault(aw.at(16 * kPage)))
			return 5;
		if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			return 6;
		// Running again: the changes made then reached it.
		if (!reads_fault(aw.at(3 * kPage)))
			return 7;
		if (reads_fault(aw.at(16 * kPage)) || aw.at(16 * kPage)[0] != 0)
			return 8;
		return 0;
	});
	char c;
	REQUIRE(read(ready[0], &c, 1) == 1);
	REQUIRE(kill(attacher, SIGSTOP) == 0);
	REQUIRE(wait_stopped(attacher));
	timespec t0{};
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK(unmap(fd.get(), kStart, 8 * kPage) == EBUSY);
	CHECK(create_mapping(fd.get(), kStart + 16 * kPage, 16 * kPage, 0, kRW, kAnon) == EBUSY);
	mshare_unmap_v3 v3{0, 8 * kPage};
	errno = 0;
	CHECK(ioctl(fd.get(), MSHAREFS_UNMAP_V3, &v3) == -1);
	CHECK(errno == EBUSY);
	CHECK(seconds_since(t0) < 2.0);
	// Nothing changed for this attacher either.
	CHECK(!reads_fault(w.at(3 * kPage)));
	CHECK(strcmp(w.at(3 * kPage), "kept") == 0);
	CHECK(reads_fault(w.at(16 * kPage)));
	REQUIRE(kill(attacher, SIGCONT) == 0);
	REQUIRE(write(go[1], "g", 1) == 1);
	REQUIRE(read(ready[0], &c, 1) == 1);
	// With every attacher running, both succeed and reach everyone.
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK(unmap(fd.get(), kStart, 8 * kPage) == 0);
	CHECK(create_mapping(fd.get(), kStart + 16 * kPage, 16 * kPage, 0, kRW, kAnon) == 0);
	CHECK(seconds_since(t0) < 2.0);
	CHECK(reads_fault(w.at(3 * kPage)));
	CHECK(!reads_fault(w.at(16 * kPage)));
	REQUIRE(write(go[1], "g", 1) == 1);
	ChildResult r = wait_for(attacher, 30);
	CHECK(r.exit_code == 0);
	for (int p : {ready[0], ready[1], go[0], go[1]})
		close(p);
}

TEST_CASE("uffd: a PROTECT that a stopped attacher would have to recompose for fails with EBUSY and changes nothing")
{
	// 4 KiB backing: no huge page to cut, so the change itself is refused.
	Daemon d({"align=1G", "backing=4k"});
	Fd fd(create_region("guarded", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(fd.get());
	REQUIRE(w);
	strcpy(w.at(0), "readable");
	int ready[2], go[2];
	REQUIRE(pipe(ready) == 0);
	REQUIRE(pipe(go) == 0);
	pid_t attacher = spawn([&] {
		Fd own(open(path("guarded").c_str(), O_RDWR));
		Window aw(own.get());
		if (!aw || strcmp(aw.at(0), "readable") != 0)
			return 2;
		char c = 'r';
		if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			return 3;
		// The refused PROT_NONE never reached it.
		if (reads_fault(aw.at(0)) || strcmp(aw.at(0), "readable") != 0)
			return 4;
		if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			return 5;
		// The one made while it ran did.
		return reads_fault(aw.at(0)) ? 0 : 6;
	});
	char c;
	REQUIRE(read(ready[0], &c, 1) == 1);
	REQUIRE(kill(attacher, SIGSTOP) == 0);
	REQUIRE(wait_stopped(attacher));
	timespec t0{};
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK(protect(fd.get(), kStart, kPage, PROT_NONE) == EBUSY);
	CHECK(seconds_since(t0) < 5.0); // not the 10 s an unanswered sync may take
	CHECK(!reads_fault(w.at(0))); // taken back for the owner too
	CHECK(strcmp(w.at(0), "readable") == 0);
	REQUIRE(kill(attacher, SIGCONT) == 0);
	REQUIRE(write(go[1], "g", 1) == 1);
	REQUIRE(read(ready[0], &c, 1) == 1);
	CHECK(protect(fd.get(), kStart, kPage, PROT_NONE) == 0);
	CHECK(reads_fault(w.at(0)));
	REQUIRE(write(go[1], "g", 1) == 1);
	ChildResult r = wait_for(attacher, 30);
	CHECK(r.exit_code == 0);
	for (int p : {ready[0], ready[1], go[0], go[1]})
		close(p);
}

namespace {

// Stops every thread of pid but its first (the runtime's own threads, here)
// under ptrace: the process as a whole is not stopped, its runtime is.
// Returns the threads stopped.
std::vector<pid_t> stop_other_threads(pid_t pid)
{
	std::vector<pid_t> stopped;
	DIR *dir = opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
	if (!dir)
		return stopped;
	while (dirent *e = readdir(dir)) {
		const pid_t tid = static_cast<pid_t>(atoi(e->d_name));
		if (tid <= 0 || tid == pid)
			continue;
		int status = 0;
		if (ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0)
			continue;
		if (ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) == 0 && waitpid(tid, &status, __WALL) == tid)
			stopped.push_back(tid);
	}
	closedir(dir);
	return stopped;
}

} // namespace

TEST_CASE("uffd: an attacher whose runtime is stopped while a change is applied: EBUSY at once, the change taken back")
{
	Daemon d;
	Fd fd(create_region("traced", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(fd.get());
	REQUIRE(w);
	strcpy(w.at(3 * kPage), "kept");
	REQUIRE(unmap(fd.get(), kStart + 16 * kPage, 16 * kPage) == 0);
	int ready[2], go[2];
	REQUIRE(pipe(ready) == 0);
	REQUIRE(pipe(go) == 0);
	pid_t attacher = spawn([&] {
		Fd own(open(path("traced").c_str(), O_RDWR));
		Window aw(own.get());
		if (!aw || strcmp(aw.at(3 * kPage), "kept") != 0)
			return 2;
		char c = 'r';
		if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			return 3;
		if (reads_fault(aw.at(3 * kPage)) || strcmp(aw.at(3 * kPage), "kept") != 0)
			return 4;
		if (!reads_fault(aw.at(16 * kPage)))
			return 5;
		return 0;
	});
	char c;
	REQUIRE(read(ready[0], &c, 1) == 1);
	// The process itself runs (the check before a change passes); its
	// runtime cannot answer.
	const std::vector<pid_t> traced = stop_other_threads(attacher);
	if (traced.empty()) {
		// Not allowed to trace it (a process that changed its uid is not
		// dumpable: without CAP_SYS_PTRACE, as uid 65534 here).
		MESSAGE("cannot ptrace the attacher's threads: ", strerror(errno), "; case not run");
		kill(attacher, SIGKILL);
		wait_for(attacher, 30);
		for (int p : {ready[0], ready[1], go[0], go[1]})
			close(p);
		return;
	}
	timespec t0{};
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK(unmap(fd.get(), kStart, 8 * kPage) == EBUSY);
	CHECK(create_mapping(fd.get(), kStart + 16 * kPage, 16 * kPage, 0, kRW, kAnon) == EBUSY);
	CHECK(seconds_since(t0) < 2.0);
	// Taken back for this attacher too.
	CHECK(!reads_fault(w.at(3 * kPage)));
	CHECK(strcmp(w.at(3 * kPage), "kept") == 0);
	CHECK(reads_fault(w.at(16 * kPage)));
	for (pid_t tid : traced)
		CHECK(ptrace(PTRACE_DETACH, tid, nullptr, nullptr) == 0);
	REQUIRE(write(go[1], "g", 1) == 1);
	ChildResult r = wait_for(attacher, 30);
	CHECK(r.exit_code == 0);
	// Everyone runs: the same calls succeed.
	CHECK(unmap(fd.get(), kStart, 8 * kPage) == 0);
	CHECK(create_mapping(fd.get(), kStart + 16 * kPage, 16 * kPage, 0, kRW, kAnon) == 0);
	CHECK(reads_fault(w.at(3 * kPage)));
	CHECK(!reads_fault(w.at(16 * kPage)));
	for (int p : {ready[0], ready[1], go[0], go[1]})
		close(p);
}
