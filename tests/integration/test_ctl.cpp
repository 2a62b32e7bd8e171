// msharectl against a real mount: the figures msharefsd reports through
// user.mshare.stats (and user.mshare.unlinked) for regions that real
// processes create, attach, touch and leave.
#include <doctest/doctest.h>

#include "harness.hpp"

#include "msharefs/region_stats.hpp"

#include <cstdlib>
#include <fcntl.h>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <thread>
#include <sys/mman.h>
#include <unistd.h>

using namespace msharefs::test;
using msharefs::RegionStats;

namespace {

constexpr uint64_t kStart = 2 * kTiB;

std::string msharectl()
{
	const char *p = getenv("MSHARECTL");
	REQUIRE_MESSAGE(p, "MSHARECTL is not set");
	return p;
}

ChildResult ctl(const std::vector<std::string> &args, std::string *out)
{
	std::vector<std::string> argv = {msharectl()};
	argv.insert(argv.end(), args.begin(), args.end());
	out->clear();
	return run_program(argv, out, 30);
}

RegionStats stat_json(const std::string &name)
{
	std::string out;
	const ChildResult r = ctl({"--json", "stat", name}, &out);
	INFO("msharectl output: " << out);
	REQUIRE(r.exit_code == 0);
	auto s = msharefs::region_stats_from_json(out);
	REQUIRE(s.has_value());
	return *s;
}

bool has(const std::vector<int32_t> &pids, pid_t pid)
{
	return std::find(pids.begin(), pids.end(), pid) != pids.end();
}

const char *expected_backend() { return on_kmod() ? "kmod" : on_uffd() ? "uffd" : "compat"; }

void touch(char *p, uint64_t len)
{
	for (uint64_t off = 0; off < len; off += 4096)
		p[off] = static_cast<char>(off >> 12);
}

// A child that opens NAME, waits for a byte on go, attaches and reads every
// page of the first len bytes, reports on ready and stays until told to quit.
// Create it before this process attaches the window (a child would inherit it).
struct Attacher {
	pid_t pid = -1;
	int go[2] = {-1, -1}, ready[2] = {-1, -1}, quit[2] = {-1, -1};

	Attacher(const std::string &name, uint64_t len)
	{
		REQUIRE(pipe(go) == 0);
		REQUIRE(pipe(ready) == 0);
		REQUIRE(pipe(quit) == 0);
		pid = spawn([=, this] {
			char c;
			int fd = open(path(name).c_str(), O_RDWR);
			if (fd < 0 || read(go[0], &c, 1) != 1)
				return 1;
			auto *p = static_cast<volatile char *>(attach(fd));
			if (p == MAP_FAILED)
				return 2;
			unsigned sum = 0;
			for (uint64_t off = 0; off < len; off += 4096)
				sum += static_cast<unsigned char>(p[off]);
			(void)sum;
			if (write(ready[1], "r", 1) != 1)
				return 3;
			return read(quit[0], &c, 1) == 1 ? 0 : 4;
		});
		close(go[0]);
		close(ready[1]);
		close(quit[0]);
	}
	void start() { REQUIRE(write(go[1], "g", 1) == 1); }
	void wait_ready()
	{
		char c;
		REQUIRE(read(ready[0], &c, 1) == 1);
	}
	ChildResult finish()
	{
		REQUIRE(write(quit[1], "q", 1) == 1);
		close(quit[1]);
		close(go[1]);
		close(ready[0]);
		return wait_for(pid, 30);
	}
};

} // namespace

TEST_CASE("stat and ls show a region's size, owner, mappings, backend, attachers and resident memory")
{
	Daemon daemon;
	int fd = create_region("ctl-a", kStart, kGiB);
	REQUIRE(fd >= 0);
	Fd closer(fd);
	Attacher one("ctl-a", 64 * kMiB), two("ctl-a", 64 * kMiB);
	Window w(fd);
	REQUIRE(w);
	RegionStats before = stat_json("ctl-a");
	CHECK(before.name == "ctl-a");
	CHECK(before.size == kGiB);
	CHECK(before.start == kStart);
	CHECK(before.owner_pid == getpid());
	CHECK(before.owner_uid == getuid());
	CHECK(before.mode == 0600);
	CHECK(before.backend == expected_backend());
	CHECK_FALSE(before.unlinked);
	REQUIRE(before.mappings.size() == 1);
	CHECK(before.mappings[0].offset == 0);
	CHECK(before.mappings[0].size == kGiB);
	CHECK(before.mappings[0].prot == "rw-");
	CHECK(before.mappings[0].object == "anonymous");
	CHECK(before.page_table_figures == (on_kmod() ? "exact" : "estimated"));

	touch(w.get(), 64 * kMiB);
	one.start();
	two.start();
	one.wait_ready();
	two.wait_ready();
	RegionStats during = stat_json("ctl-a");
	CHECK(has(during.attachers, getpid()));
	CHECK(has(during.attachers, one.pid));
	CHECK(has(during.attachers, two.pid));
	CHECK(during.resident_bytes >= 64 * kMiB);
	CHECK(during.resident_bytes <= 66 * kMiB); // a fill may round up to 2 MiB
	CHECK(during.page_table_bytes_used > 0);

	if (on_kmod()) {
		// The module's own listing has the region with the same figures.
		std::ifstream proc("/proc/msharefs_kmod");
		std::string header;
		REQUIRE(std::getline(proc, header));
		CHECK(header == "id inode size resident_bytes table_bytes windows faults");
		bool found = false;
		uint64_t id, ino, size, resident, tables, windows, faults;
		while (proc >> id >> ino >> size >> resident >> tables >> windows >> faults)
			found |= size == kGiB && resident == during.resident_bytes &&
				 tables == during.page_table_bytes_used && windows == 3;
		CHECK(found);
	}

	// The table: a header and the region's line with its figures.
	std::string out;
	REQUIRE(ctl({"ls"}, &out).exit_code == 0);
	INFO("ls:\n" << out);
	CHECK(out.find("NAME") == 0);
	CHECK(out.find("PT-SAVED") != std::string::npos);
	CHECK(out.find("ctl-a") != std::string::npos);
	CHECK(out.find(expected_backend()) != std::string::npos);
	REQUIRE(ctl({"--json", "ls"}, &out).exit_code == 0);
	auto list = msharefs::region_stats_list_from_json(out);
	REQUIRE(list.has_value());
	REQUIRE(list->size() == 1);
	CHECK((*list)[0].name == "ctl-a");
	REQUIRE(ctl({"stat", "ctl-a"}, &out).exit_code == 0);
	CHECK(out.find("attachers:  3: ") != std::string::npos);
	CHECK(out.find(std::to_string(one.pid)) != std::string::npos);

	// An attacher that exits is no longer listed.
	CHECK(one.finish().exit_code == 0);
	RegionStats after = stat_json("ctl-a");
	CHECK_FALSE(has(after.attachers, one.pid));
	CHECK(has(after.attachers, two.pid));
	CHECK(two.finish().exit_code == 0);
}

TEST_CASE("a page written through a window counts as resident at once")
{
	// On the compat path such a page sits in the FUSE file's page cache until
	// writeback; the figures must show it before then too.
	Daemon daemon;
	int fd = create_region("ctl-fresh", kStart, kGiB);
	REQUIRE(fd >= 0);
	Fd closer(fd);
	Window w(fd);
	REQUIRE(w);
	const RegionStats untouched = stat_json("ctl-fresh");
	CHECK(untouched.resident_bytes == 0);
	w.get()[0] = 1;
	w.get()[kMiB] = 2;
	const RegionStats written = stat_json("ctl-fresh");
	CHECK(written.resident_bytes >= 2 * 4096);
	CHECK(written.resident_bytes <= 4 * kMiB);
	CHECK(written.page_table_bytes_used >= 2 * 4096); // a PTE table and a PMD table at least
}

TEST_CASE("the documented creator's written pages count as resident while it waits")
{
	// As in scripts/run-example.sh (upstream alignment, 512 GiB region): the
	// creator's two messages sit in the FUSE file's page cache on the compat
	// path, not yet in the region's object; the figures must show them.
	const char *creator = getenv("EXAMPLE_CREATOR");
	const char *attacher = getenv("EXAMPLE_ATTACHER");
	REQUIRE_MESSAGE(creator, "EXAMPLE_CREATOR is not set");
	REQUIRE_MESSAGE(attacher, "EXAMPLE_ATTACHER is not set");
	Daemon daemon(std::vector<std::string>{});
	std::string creator_out;
	ChildResult creator_result;
	std::thread creator_thread(
		[&] { creator_result = run_program({creator, "ctl-example", "30"}, &creator_out, 60); });
	for (int i = 0; i < 500 && access(path("ctl-example").c_str(), F_OK) != 0; i++)
		usleep(10000);
	// The creator writes its messages after creating the region, and then
	// waits 30 s: they must show while it waits (slow in an emulated guest).
	RegionStats waiting;
	eventually(
		[&] {
			waiting = stat_json("ctl-example");
			return waiting.resident_bytes >= 2 * 4096 && waiting.page_table_bytes_used >= 2 * 4096;
		},
		20000);
	std::string attacher_out;
	const ChildResult attacher_result = run_program({attacher, "ctl-example"}, &attacher_out, 30);
	creator_thread.join();
	INFO("creator output:\n" << creator_out);
	CHECK(attacher_result.exit_code == 0);
	CHECK(creator_result.exit_code == 0);
	CHECK(waiting.resident_bytes >= 2 * 4096);
	CHECK(waiting.page_table_bytes_used >= 2 * 4096);
}

TEST_CASE("the page-table figures follow the kernel's PageTables")
{
	// Extra attachers of a populated region: what they add to the region's
	// page_table_bytes_used must match what they add to /proc/meminfo
	// PageTables, beyond what the same processes cost before attaching.
	Daemon daemon;
	int fd = create_region("ctl-pt", kStart, kGiB);
	REQUIRE(fd >= 0);
	Fd closer(fd);
	constexpr uint64_t kTouched = 256 * kMiB;
	constexpr int kAttachers = 4;
	std::vector<std::unique_ptr<Attacher>> attachers;
	for (int i = 0; i < kAttachers; i++)
		attachers.push_back(std::make_unique<Attacher>("ctl-pt", kTouched));
	Window w(fd);
	REQUIRE(w);
	touch(w.get(), kTouched);
	const RegionStats idle = stat_json("ctl-pt");
	const uint64_t idle_tables = settled_page_tables();
	for (auto &a : attachers)
		a->start();
	for (auto &a : attachers)
		a->wait_ready();
	const uint64_t attached_tables = settled_page_tables();
	const RegionStats attached = stat_json("ctl-pt");
	const double measured = static_cast<double>(attached_tables) - static_cast<double>(idle_tables);
	const double estimated = static_cast<double>(attached.page_table_bytes_used) -
				 static_cast<double>(idle.page_table_bytes_used);
	INFO("backing " << attached.backing << ": PageTables grew by " << measured / 1024 << " KiB, "
			<< "page_table_bytes_used by " << estimated / 1024 << " KiB, saved "
			<< attached.page_table_bytes_saved / 1024 << " KiB");
	// Each process may add a few tables of its own (the runtime's thread
	// stacks, the window's upper levels): 16 KiB each.
	CHECK(std::abs(measured - estimated) <= estimated * 0.2 + 16384.0 * kAttachers);
	CHECK(attached.attachers.size() == kAttachers + 1);
	for (auto &a : attachers)
		CHECK(a->finish().exit_code == 0);
}

TEST_CASE("an unlinked region that is still held is listed as unlinked")
{
	Daemon daemon;
	int fd = create_region("ctl-gone", kStart, kGiB);
	REQUIRE(fd >= 0);
	{
		Fd closer(fd);
		Window w(fd);
		REQUIRE(w);
		touch(w.get(), 4 * kMiB);
		REQUIRE(unlink(path("ctl-gone").c_str()) == 0);
		std::string out;
		REQUIRE(ctl({"--json", "ls"}, &out).exit_code == 0);
		auto list = msharefs::region_stats_list_from_json(out);
		REQUIRE(list.has_value());
		REQUIRE(list->size() == 1);
		CHECK((*list)[0].name == "ctl-gone");
		CHECK((*list)[0].unlinked);
		CHECK((*list)[0].resident_bytes >= 4 * kMiB);
		REQUIRE(ctl({"ls"}, &out).exit_code == 0);
		CHECK(out.find("ctl-gone (unlinked)") != std::string::npos);
	}
	// The last user is gone: so is the region.
	std::string out;
	for (int i = 0; i < 100; i++) {
		REQUIRE(ctl({"--json", "ls"}, &out).exit_code == 0);
		if (out == "[]\n")
			break;
		usleep(50000);
	}
	CHECK(out == "[]\n");
}

TEST_CASE("top prints successive snapshots; errors are one line with the documented status")
{
	Daemon daemon;
	int fd = create_region("ctl-top", kStart, kGiB);
	REQUIRE(fd >= 0);
	Fd closer(fd);
	std::string out;
	REQUIRE(ctl({"top", "--count", "2", "--interval", "0.1"}, &out).exit_code == 0);
	INFO("top:\n" << out);
	size_t headers = 0;
	for (size_t at = 0; (at = out.find("msharectl top - ", at)) != std::string::npos; at++)
		headers++;
	CHECK(headers == 2);
	CHECK(out.find("ctl-top") != std::string::npos);

	auto one_line_error = [&](const std::vector<std::string> &args, int status, const std::string &text) {
		ChildResult r = ctl(args, &out);
		INFO("msharectl output: " << out);
		CHECK(r.exit_code == status);
		CHECK(out.find(text) != std::string::npos);
		CHECK(std::count(out.begin(), out.end(), '\n') == 1);
	};
	one_line_error({"stat", "no-such-region"}, 1, "msharectl: stat no-such-region: no such region");
	one_line_error({"stat", "mshare_info"}, 1, "msharectl: stat mshare_info: not a region");
	one_line_error({"--mount", "/proc", "ls"}, 1, "msharectl: /proc: not an msharefs mount");
	one_line_error({"frobnicate"}, 2, "msharectl: unknown command 'frobnicate'");
	one_line_error({"top", "--sort", "colour"}, 2, "--sort colour");
	one_line_error({"stat"}, 2, "stat needs exactly one NAME");
	REQUIRE(ctl({"--help"}, &out).exit_code == 0);
	CHECK(out.find("Usage: msharectl") == 0);

	closer.reset();
	daemon.stop();
	one_line_error({"ls"}, 1, "msharectl: no msharefs mount found (is msharefsd running?)");
}
