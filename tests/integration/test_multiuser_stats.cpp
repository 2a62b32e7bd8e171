// user.mshare.stats and user.mshare.unlinked on a mount used by several
// users: each sees the figures of the regions it could open only, and
// readers looping on them never hold up region operations.
#include <doctest/doctest.h>

#include "harness.hpp"

#include "msharefs/region_stats.hpp"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <string>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <vector>

using namespace msharefs::test;
using msharefs::RegionStats;

namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kSharedGroup = 4242;
constexpr uint64_t kStart = 2 * kTiB;

// The value of an extended attribute, or the errno in *err.
std::string xattr(const std::string &file, const char *name, int *err)
{
	*err = 0;
	std::string value(256 * 1024, '\0');
	const ssize_t n = getxattr(file.c_str(), name, value.data(), value.size());
	if (n < 0) {
		*err = errno;
		return {};
	}
	value.resize(static_cast<size_t>(n));
	return value;
}

// The names listed in the mount root's user.mshare.unlinked; "!errno" if it
// could not be read or parsed.
std::vector<std::string> unlinked_names()
{
	int err = 0;
	const std::string text = xattr(kMount, msharefs::kUnlinkedAttribute, &err);
	if (err)
		return {"!" + std::to_string(err)};
	auto list = msharefs::region_stats_list_from_json(text);
	if (!list)
		return {"!parse"};
	std::vector<std::string> names;
	for (const RegionStats &s : *list)
		names.push_back(s.name);
	std::sort(names.begin(), names.end());
	return names;
}

bool lists(const std::vector<std::string> &names, const std::string &name)
{
	return std::find(names.begin(), names.end(), name) != names.end();
}

// Runs fn in a child that has become uid/gid `id`, with `groups` as its
// supplementary groups.
ChildResult as_user(uid_t id, std::vector<gid_t> groups, const std::function<int()> &fn)
{
	return run_in_child([&] {
		if (setgroups(groups.size(), groups.data()) != 0 || setresgid(id, id, id) != 0 ||
		    setresuid(id, id, id) != 0)
			return 100;
		return fn();
	});
}

// A region created here, then unlinked: held by its descriptor only.
int unlinked_region(const std::string &name, mode_t mode)
{
	const int fd = open(path(name).c_str(), O_RDWR | O_CREAT | O_EXCL, mode);
	if (fd < 0 || fchmod(fd, mode) != 0 || unlink(path(name).c_str()) != 0)
		return -1;
	return fd;
}

double ms_since(const timespec &t0)
{
	timespec t1{};
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return static_cast<double>(t1.tv_sec - t0.tv_sec) * 1e3 + static_cast<double>(t1.tv_nsec - t0.tv_nsec) / 1e6;
}

} // namespace

TEST_CASE("user.mshare.unlinked lists only the regions the reader could open")
{
	Daemon d;
	// Root's: inside a 0700 directory; at the top, 0600; at the top, 0640
	// in a group the reader may or may not be in.
	REQUIRE(mkdir(path("root-only").c_str(), 0700) == 0);
	Fd hidden(unlinked_region("root-only/secret", 0644));
	Fd private_mode(unlinked_region("root-0600", 0600));
	REQUIRE(hidden.get() >= 0);
	REQUIRE(private_mode.get() >= 0);
	{
		Fd grp(open(path("group-0640").c_str(), O_RDWR | O_CREAT | O_EXCL, 0640));
		REQUIRE(grp.get() >= 0);
		REQUIRE(fchown(grp.get(), 0, kSharedGroup) == 0);
	}
	Fd group_region(open(path("group-0640").c_str(), O_RDWR));
	REQUIRE(group_region.get() >= 0);
	REQUIRE(unlink(path("group-0640").c_str()) == 0);
	// The other user's own, in a 0700 directory of its own.
	int made[2], done[2];
	REQUIRE(pipe(made) == 0);
	REQUIRE(pipe(done) == 0);
	pid_t nobody = spawn([&] {
		if (setgroups(0, nullptr) != 0 || setresgid(kNobody, kNobody, kNobody) != 0 ||
		    setresuid(kNobody, kNobody, kNobody) != 0)
			return 100;
		if (mkdir(path("nobody-only").c_str(), 0700) != 0)
			return 1;
		Fd own(unlinked_region("nobody-only/mine", 0600));
		if (own.get() < 0)
			return 2;
		char c = 'm';
		if (write(made[1], &c, 1) != 1 || read(done[0], &c, 1) != 1)
			return 3;
		return 0;
	});
	char c;
	REQUIRE(read(made[0], &c, 1) == 1);

	// Root sees every one.
	const std::vector<std::string> all = unlinked_names();
	INFO("root sees: " << doctest::toString(all.size()));
	CHECK(lists(all, "root-only/secret"));
	CHECK(lists(all, "root-0600"));
	CHECK(lists(all, "group-0640"));
	CHECK(lists(all, "nobody-only/mine"));

	// uid 65534 sees its own only; with the group, the group's region too.
	ChildResult r = as_user(kNobody, {}, [] {
		const std::vector<std::string> seen = unlinked_names();
		if (seen.size() != 1 || seen[0] != "nobody-only/mine")
			return 1;
		return 0;
	});
	CHECK(r.exit_code == 0);
	r = as_user(kNobody, {kSharedGroup}, [] {
		const std::vector<std::string> seen = unlinked_names();
		if (seen != std::vector<std::string>{"group-0640", "nobody-only/mine"})
			return 1;
		return 0;
	});
	CHECK(r.exit_code == 0);
	// Another unprivileged user sees none of them.
	r = as_user(kNobody - 1, {}, [] { return unlinked_names().empty() ? 0 : 1; });
	CHECK(r.exit_code == 0);

	REQUIRE(write(done[1], "d", 1) == 1);
	CHECK(wait_for(nobody, 30).exit_code == 0);
	for (int p : {made[0], made[1], done[0], done[1]})
		close(p);
}

TEST_CASE("user.mshare.stats of a region is readable only by who could open it")
{
	Daemon d;
	Fd secret(create_region("stats-0600", kStart, kGiB, 0600));
	REQUIRE(secret.get() >= 0);
	Fd shared(create_region("stats-0644", kStart, kGiB, 0644));
	REQUIRE(shared.get() >= 0);
	int err = 0;
	CHECK(!xattr(path("stats-0600"), msharefs::kStatsAttribute, &err).empty());
	CHECK(err == 0);
	ChildResult r = as_user(kNobody, {}, [] {
		int e = 0;
		xattr(path("stats-0600"), msharefs::kStatsAttribute, &e);
		if (e != EACCES)
			return 1;
		const std::string text = xattr(path("stats-0644"), msharefs::kStatsAttribute, &e);
		auto s = msharefs::region_stats_from_json(text);
		if (e || !s || s->name != "stats-0644" || s->size != kGiB)
			return 2;
		// Its own region.
		Fd own(open(path("nobody-region").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
		if (own.get() < 0)
			return 3;
		s = msharefs::region_stats_from_json(xattr(path("nobody-region"), msharefs::kStatsAttribute, &e));
		if (e || !s || s->owner_uid != kNobody)
			return 4;
		return 0;
	});
	CHECK(r.exit_code == 0);
}

TEST_CASE("readers looping on user.mshare.unlinked do not hold up creating and unlinking regions")
{
	Daemon d;
	// Unlinked regions with a window each: every read has figures to
	// compute (a scan of every process's mappings per region).
	std::vector<Fd> held;
	Window windows[4];
	for (int i = 0; i < 4; i++) {
		const std::string name = "held-" + std::to_string(i);
		held.emplace_back(create_region(name, kStart + static_cast<uint64_t>(i) * kGiB, kGiB));
		REQUIRE(held.back().get() >= 0);
		windows[i] = Window(held.back().get());
		REQUIRE(windows[i]);
		windows[i].at(0)[0] = 1;
		REQUIRE(unlink(path(name).c_str()) == 0);
	}
	int stop[2], reads[2];
	REQUIRE(pipe(stop) == 0);
	REQUIRE(pipe(reads) == 0);
	std::vector<pid_t> readers;
	for (int i = 0; i < 4; i++)
		readers.push_back(spawn([&] {
			close(stop[1]);
			pollfd p{stop[0], POLLIN, 0};
			uint32_t n = 0;
			std::string value(256 * 1024, '\0');
			// At most 15 s: a writer starved by them gets through then,
			// and its latency is what the case reports.
			timespec t0{};
			clock_gettime(CLOCK_MONOTONIC, &t0);
			while (poll(&p, 1, 0) == 0 && ms_since(t0) < 15000) {
				if (getxattr(kMount, msharefs::kUnlinkedAttribute, value.data(), value.size()) < 0)
					return 1;
				n++;
			}
			return write(reads[1], &n, sizeof(n)) == sizeof(n) ? 0 : 2;
		}));
	usleep(200000); // the readers are looping
	double total = 0, worst = 0;
	constexpr int kCycles = 100;
	for (int i = 0; i < kCycles; i++) {
		timespec t0{};
		clock_gettime(CLOCK_MONOTONIC, &t0);
		Fd fd(open(path("cycle").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
		REQUIRE(fd.get() >= 0);
		REQUIRE(unlink(path("cycle").c_str()) == 0);
		const double ms = ms_since(t0);
		total += ms;
		worst = std::max(worst, ms);
		usleep(5000); // spread over the readers' loops
	}
	close(stop[1]);
	uint32_t read_count = 0;
	for (pid_t p : readers) {
		CHECK(wait_for(p, 60).exit_code == 0);
		uint32_t n = 0;
		REQUIRE(read(reads[0], &n, sizeof(n)) == sizeof(n));
		read_count += n;
	}
	MESSAGE("create+unlink over " << kCycles << " cycles: average " << total / kCycles << " ms, max " << worst
				      << " ms; " << read_count << " reads of user.mshare.unlinked meanwhile");
	CHECK(read_count > 0);
	CHECK(worst < 200.0);
	for (int p : {stop[0], reads[0], reads[1]})
		close(p);
}
