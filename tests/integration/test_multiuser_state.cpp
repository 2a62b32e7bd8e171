// The daemon's state and limits on a host with many users (issue 14): its
// state lives in a root-only directory it creates safely, never in
// world-writable /dev/shm; a full backing store fails only the request that
// needed the room (ENOSPC) and loses nothing; descriptors stay bounded (one
// pidfd per owner process, a per-uid region limit, EDQUOT); a daemon started
// under umask 000 creates nothing world-writable but the runtime socket.
// Unprivileged users are uid 65534 in forked children.
#include <doctest/doctest.h>

#include "harness.hpp"

#include <linux/msharefs.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <ftw.h>
#include <grp.h>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace msharefs::test;

namespace {

constexpr uid_t kNobody = 65534;
constexpr uint64_t kStart = 2 * kTiB;
constexpr uint32_t kAnon = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;
constexpr uint32_t kRW = PROT_READ | PROT_WRITE;

// Runs fn in a child that has become uid/gid `id` (no supplementary groups).
ChildResult as_user(uid_t id, const std::function<int()> &fn, int timeout_s = 60)
{
	return run_in_child(
		[&] {
			if (setgroups(0, nullptr) != 0 || setresgid(id, id, id) != 0 || setresuid(id, id, id) != 0)
				return 100;
			return fn();
		},
		timeout_s);
}

int count_fds(pid_t pid)
{
	DIR *d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
	if (!d)
		return -1;
	int n = 0;
	while (dirent *de = readdir(d))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

// The daemon's descriptors once they stop moving (the owner watch and the
// deferred work run on their own threads).
int settled_fds(pid_t pid)
{
	int last = count_fds(pid);
	for (int i = 0; i < 50; i++) {
		usleep(20000);
		const int now = count_fds(pid);
		if (now == last)
			return now;
		last = now;
	}
	return last;
}

std::string fill(size_t n, char c) { return std::string(n, c); }

// The region's bytes [off, off+n) through read(2) on the mount.
std::string read_region(const std::string &name, uint64_t off, size_t n)
{
	Fd fd(open(path(name).c_str(), O_RDONLY));
	std::string out(n, '\0');
	if (!fd || pread(fd.get(), out.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n))
		return {};
	return out;
}

// A region of `size` bytes with one anonymous mapping over all of it.
int make_region(const std::string &name, uint64_t size, mode_t mode = 0600)
{
	return create_region(name, kStart, size, mode);
}

// A sized region without mappings (-1 on failure).
int make_sized_region(const std::string &name)
{
	Fd fd(open(path(name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	if (!fd || set_size(fd.get(), kStart, kGiB) != 0)
		return -1;
	return fd.release();
}

// The msharefsd command line the harness would use, for starts whose
// failure the test wants to see.
std::vector<std::string> daemon_argv(const std::vector<std::string> &options)
{
	const char *bin = getenv("MSHAREFSD");
	std::vector<std::string> argv{bin ? bin : "msharefsd", "-f"};
	for (const auto &o : options) {
		argv.push_back("-o");
		argv.push_back(o);
	}
	argv.push_back(kMount);
	return argv;
}

// From the mount table, without touching the mount (its daemon may be gone).
bool mount_is_msharefs()
{
	std::ifstream mounts("/proc/self/mounts");
	std::string line;
	while (std::getline(mounts, line))
		if (line.find(std::string(" ") + kMount + " fuse.msharefs ") != std::string::npos)
			return true;
	return false;
}

// The prefix of a mount's names in /dev/shm before the state directory
// (FNV-1a of the mount point), as an attacker could compute it.
std::string legacy_state_prefix()
{
	uint64_t h = 1469598103934665603ULL;
	for (unsigned char c : std::string(kMount)) {
		h ^= c;
		h *= 1099511628211ULL;
	}
	char buf[40];
	snprintf(buf, sizeof(buf), "msharefs.%016llx.", static_cast<unsigned long long>(h));
	return buf;
}

std::vector<std::string> world_writable;
int note_world_writable(const char *p, const struct stat *st, int, FTW *)
{
	if (!S_ISLNK(st->st_mode) && (st->st_mode & S_IWOTH))
		world_writable.push_back(p);
	return 0;
}

} // namespace

TEST_CASE("the state is a root-only directory in /run/msharefs; nothing in /dev/shm, even under umask 000")
{
	{
		Daemon d({"align=1G"}, 0);
		Fd fd(make_region("umask-zero", kGiB, 0600));
		REQUIRE(fd.get() >= 0);
		const std::string data = fill(4096, 'u');
		REQUIRE(pwrite(fd.get(), data.data(), data.size(), 0) == 4096);

		const std::string dir = state_dir();
		REQUIRE_MESSAGE(!dir.empty(), "no state directory in " << kStateRoot);
		struct stat st {};
		REQUIRE(lstat(kStateRoot, &st) == 0);
		CHECK(st.st_uid == 0);
		CHECK((st.st_mode & 07777) == 0755);
		REQUIRE(lstat(dir.c_str(), &st) == 0);
		CHECK(S_ISDIR(st.st_mode));
		CHECK(st.st_uid == 0);
		CHECK((st.st_mode & 07777) == 0700);
		for (const char *file : {"registry", "journal", "keeper"}) {
			INFO(file);
			CHECK(lstat((dir + "/" + file).c_str(), &st) == 0);
		}
		CHECK(!region_objects().empty());

		// Nothing of the daemon's in world-writable /dev/shm.
		std::vector<std::string> in_shm;
		if (DIR *shm = opendir("/dev/shm")) {
			while (dirent *de = readdir(shm))
				if (de->d_name[0] != '.')
					in_shm.emplace_back(de->d_name);
			closedir(shm);
		}
		CHECK_MESSAGE(in_shm.empty(), "in /dev/shm: " << (in_shm.empty() ? "" : in_shm.front()));

		// Under umask 000, only the runtime socket is for everyone.
		world_writable.clear();
		nftw(kStateRoot, note_world_writable, 16, FTW_PHYS);
		for (const auto &p : world_writable) {
			INFO(p);
			const bool runtime_socket = p.size() > 8 && p.compare(p.size() - 8, 8, ".runtime") == 0 &&
						    lstat(p.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
			CHECK(runtime_socket);
		}
		if (on_uffd()) {
			REQUIRE(lstat((dir + ".runtime").c_str(), &st) == 0);
			CHECK(S_ISSOCK(st.st_mode));
			CHECK((st.st_mode & 0777) == 0666);
		}
	}
	// umount: the state goes with the mount, and only it.
	CHECK(state_dir().empty());
	struct stat st {};
	CHECK(stat(kStateRoot, &st) == 0);
}

TEST_CASE("a state directory that is a link or not root's own is refused with one line")
{
	const std::string state = std::string(kStateRoot) + "/attacked";
	const std::string target = "/tmp/msharefs-test-link-target";
	mkdir(target.c_str(), 0755);
	auto refused = [&](const std::string &what) {
		INFO(what);
		std::string out;
		const ChildResult r = run_program(daemon_argv({"align=1G", "state=attacked"}), &out, 5);
		if (mount_is_msharefs())
			umount2(kMount, MNT_DETACH);
		INFO(out);
		CHECK(r.exit_code == 1);
		CHECK(out.rfind("msharefsd: " + state, 0) == 0);
		CHECK(std::count(out.begin(), out.end(), '\n') == 1);
	};

	REQUIRE(symlink(target.c_str(), state.c_str()) == 0);
	refused("a symlink");
	DIR *listing = opendir(target.c_str());
	REQUIRE(listing);
	int entries = 0;
	while (dirent *de = readdir(listing))
		entries += de->d_name[0] != '.';
	closedir(listing);
	CHECK(entries == 0); // nothing was made through the link
	unlink(state.c_str());

	REQUIRE(mkdir(state.c_str(), 0777) == 0);
	REQUIRE(chmod(state.c_str(), 0777) == 0);
	REQUIRE(chown(state.c_str(), kNobody, kNobody) == 0);
	refused("another user's directory");
	REQUIRE(chown(state.c_str(), 0, 0) == 0);
	refused("a directory others may write");
	rmdir(state.c_str());
	rmdir(target.c_str());

	// A state root others may write to is refused too.
	std::string out;
	const ChildResult r = run_program(daemon_argv({"align=1G", "statedir=/tmp"}), &out, 5);
	if (mount_is_msharefs())
		umount2(kMount, MNT_DETACH);
	INFO(out);
	CHECK(r.exit_code == 1);
	CHECK(out.rfind("msharefsd: /tmp: mode 1777", 0) == 0);

	// A proper start afterwards.
	Daemon d({"align=1G", "state=attacked"});
	Fd fd(make_region("after-refusal", kGiB));
	CHECK(fd.get() >= 0);
}

TEST_CASE("names an attacker plants in /dev/shm change nothing for root's regions")
{
	const std::string prefix = legacy_state_prefix();
	const std::string link_target = "/tmp/msharefs-test-hugetlb-target";
	mkdir(link_target.c_str(), 0755);
	const ChildResult planted = as_user(kNobody, [&] {
		for (int ino = 3; ino < 40; ino++)
			for (int id = 1; id < 4; id++) {
				const std::string p = "/dev/shm/" + prefix + "obj." + std::to_string(ino) + "." + std::to_string(id);
				Fd f(open(p.c_str(), O_RDWR | O_CREAT | O_EXCL, 0666));
				if (!f)
					return 1;
			}
		const std::string journal = "/dev/shm/" + prefix + "journal";
		Fd j(open(journal.c_str(), O_RDWR | O_CREAT | O_EXCL, 0666));
		if (!j || symlink(link_target.c_str(), ("/dev/shm/" + prefix + "hugetlb").c_str()) != 0 ||
		    symlink(link_target.c_str(), ("/dev/shm/" + prefix + "thp").c_str()) != 0)
			return 2;
		return 0;
	});
	REQUIRE(planted.exit_code == 0);
	{
		Daemon d;
		Fd fd(make_region("root-secret", kGiB));
		REQUIRE(fd.get() >= 0);
		const std::string secret = "TOP-SECRET-of-root" + fill(4096 - 18, 's');
		REQUIRE(pwrite(fd.get(), secret.data(), secret.size(), 0) == 4096);
		CHECK(read_region("root-secret", 0, 4096) == secret);
		// The planted journal holds nothing of root's.
		struct stat st {};
		REQUIRE(stat(("/dev/shm/" + prefix + "journal").c_str(), &st) == 0);
		CHECK(st.st_size == 0);
		struct statfs sfs {}, tmp {};
		REQUIRE(statfs(link_target.c_str(), &sfs) == 0);
		REQUIRE(statfs("/tmp", &tmp) == 0);
		CHECK(sfs.f_type == tmp.f_type); // nothing mounted over the link's target
	}
	if (DIR *shm = opendir("/dev/shm")) {
		std::vector<std::string> names;
		while (dirent *de = readdir(shm))
			if (de->d_name[0] != '.')
				names.emplace_back(de->d_name);
		closedir(shm);
		for (const auto &n : names)
			unlink(("/dev/shm/" + n).c_str());
	}
	rmdir(link_target.c_str());
}

TEST_CASE("a full /dev/shm does not touch the daemon: a 1 MiB write into a region succeeds")
{
	// A small /dev/shm, in this test's namespace only, filled once the
	// daemon runs.
	REQUIRE(mount("tmpfs", "/dev/shm", "tmpfs", 0, "mode=1777,size=16m") == 0);
	{
		Daemon d;
		{
			Fd filler(open("/dev/shm/filler", O_RDWR | O_CREAT, 0600));
			const std::string chunk = fill(4096, 'f');
			while (write(filler.get(), chunk.data(), chunk.size()) > 0) {
			}
		}
		const ChildResult r = as_user(kNobody, [] {
			Fd fd(make_region("nobody-big-write", kGiB));
			if (!fd)
				return 1;
			const std::string mib = fill(kMiB, 'n');
			if (pwrite(fd.get(), mib.data(), mib.size(), 0) != static_cast<ssize_t>(kMiB))
				return 10 + errno % 100;
			return 0;
		});
		CHECK(r.exit_code == 0);
		CHECK(alive(d.pid()));
		Fd fd(make_region("root-after-full-shm", kGiB));
		CHECK(fd.get() >= 0);
	}
	umount2("/dev/shm", MNT_DETACH);
}

TEST_CASE("a full object store fails only the write that needed room, with ENOSPC; nothing is lost")
{
	Daemon d({"align=1G", "store_size=8M"});
	const std::string precious = fill(kMiB, 'p');
	{
		Fd fd(make_region("precious", kGiB, 0644));
		REQUIRE(fd.get() >= 0);
		REQUIRE(pwrite(fd.get(), precious.data(), precious.size(), 0) == static_cast<ssize_t>(kMiB));
	}
	// uid 65534 fills the store through its own region, 1 MiB at a time.
	const ChildResult hog = as_user(kNobody, [] {
		Fd fd(make_region("hog", kGiB));
		if (!fd)
			return 1;
		const std::string mib = fill(kMiB, 'h');
		for (uint64_t off = 0; off < 64 * kMiB; off += kMiB)
			if (pwrite(fd.get(), mib.data(), mib.size(), static_cast<off_t>(off)) < 0)
				return errno == ENOSPC ? 0 : 10 + errno % 100;
		return 2; // never full
	});
	CHECK(hog.exit_code == 0);
	REQUIRE(alive(d.pid()));

	// Everyone is still served, and every region is as it was.
	CHECK(read_region("precious", 0, kMiB) == precious);
	struct stat st {};
	CHECK(stat(path("hog").c_str(), &st) == 0);
	const ChildResult reader = as_user(kNobody, [&] { return read_region("precious", 0, kMiB) == precious ? 0 : 1; });
	CHECK(reader.exit_code == 0);
	{
		Fd fd(make_sized_region("root-while-full"));
		CHECK(fd.get() >= 0);
		CHECK(create_mapping(fd.get(), kStart + kGiB / 2, kMiB, 0, kRW, kAnon) == 0);
	}
	// Room again once the hog's region goes.
	REQUIRE(unlink(path("hog").c_str()) == 0);
	Fd fd(open(path("precious").c_str(), O_RDWR));
	REQUIRE(fd.get() >= 0);
	const std::string more = fill(kMiB, 'q');
	CHECK(pwrite(fd.get(), more.data(), more.size(), static_cast<off_t>(kMiB)) == static_cast<ssize_t>(kMiB));
	CHECK(read_region("precious", 0, kMiB) == precious);
	CHECK(alive(d.pid()));
}

TEST_CASE("a registry that cannot grow fails the next create with ENOSPC; the daemon and its regions stay")
{
	// A state root with room for the journal (64 MiB) and the first 4 MiB
	// of the registry, not for its next 16 MiB.
	const std::string root = "/run/msharefs-small";
	REQUIRE((mkdir(root.c_str(), 0755) == 0 || errno == EEXIST));
	REQUIRE(mount("tmpfs", root.c_str(), "tmpfs", 0, "mode=0755,size=72m") == 0);
	{
		Daemon d({"align=1G", "statedir=" + root});
		const std::string data = fill(4096, 'k');
		{
			Fd fd(make_sized_region("kept"));
			REQUIRE(fd.get() >= 0);
			REQUIRE(create_mapping(fd.get(), kStart, kMiB, 0, kRW, kAnon) == 0);
			REQUIRE(pwrite(fd.get(), data.data(), data.size(), 0) == 4096);
		}
		const std::string long_name(200, 'r');
		int made = 0, err = 0;
		for (; made < 100000; made++) {
			const int fd = open(path(long_name.substr(0, 190) + std::to_string(made)).c_str(),
					    O_RDWR | O_CREAT | O_EXCL, 0600);
			if (fd < 0) {
				err = errno;
				break;
			}
			close(fd);
		}
		MESSAGE(made << " regions before the registry was full");
		CHECK(err == ENOSPC);
		CHECK(alive(d.pid()));
		CHECK(read_region("kept", 0, 4096) == data);
		// Removing regions makes room again.
		for (int i = 0; i < 2000; i++)
			CHECK(unlink(path(long_name.substr(0, 190) + std::to_string(i)).c_str()) == 0);
		Fd again(open(path("after-room").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
		CHECK(again.get() >= 0);
	}
	umount2(root.c_str(), MNT_DETACH);
	rmdir(root.c_str());
}

namespace {

// uid 65534 creates `want` regions (unsized: no layout, no objects) and
// reports through `report` how many it got and the errno that stopped it;
// it then waits for a byte on `go` before exiting.
pid_t spawn_region_creator(int want, int report, int go)
{
	return spawn([=] {
		if (setgroups(0, nullptr) != 0 || setresgid(kNobody, kNobody, kNobody) != 0 ||
		    setresuid(kNobody, kNobody, kNobody) != 0)
			return 100;
		int made = 0, err = 0;
		for (int i = 0; i < want; i++) {
			const int fd = open(path("idle-" + std::to_string(i)).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
			if (fd < 0) {
				err = errno;
				break;
			}
			close(fd);
			made++;
		}
		const int counts[2] = {made, err};
		if (write(report, counts, sizeof(counts)) != sizeof(counts))
			return 101;
		char c;
		return read(go, &c, 1) == 1 ? 0 : 102;
	});
}

struct CreatorRun {
	int made = -1;
	int err = -1;
	int fds_while_held = -1;
	int fds_after_exit = -1;
};

// Runs a creator of `want` regions against daemon d and measures d's
// descriptors while they are held and after the creator is gone.
CreatorRun run_region_creator(Daemon &d, int want)
{
	int report[2], go[2];
	REQUIRE(pipe(report) == 0);
	REQUIRE(pipe(go) == 0);
	const pid_t child = spawn_region_creator(want, report[1], go[0]);
	close(report[1]);
	close(go[0]);
	CreatorRun run;
	int counts[2] = {-1, -1};
	CHECK(read(report[0], counts, sizeof(counts)) == sizeof(counts));
	run.made = counts[0];
	run.err = counts[1];
	run.fds_while_held = settled_fds(d.pid());

	// Root is not limited and is served while the user holds its regions.
	{
		Fd fd(make_sized_region("root-next"));
		CHECK(fd.get() >= 0);
		CHECK(create_mapping(fd.get(), kStart, kMiB, 0, kRW, kAnon) == 0);
		const std::string data = fill(4096, 'r');
		CHECK(pwrite(fd.get(), data.data(), data.size(), 0) == 4096);
		CHECK(read_region("root-next", 0, 4096) == data);
	}
	CHECK(unlink(path("root-next").c_str()) == 0);

	CHECK(write(go[1], "x", 1) == 1);
	close(go[1]);
	close(report[0]);
	CHECK(wait_for(child).exit_code == 0);
	run.fds_after_exit = settled_fds(d.pid());
	return run;
}

} // namespace

TEST_CASE("max_regions_per_uid: uid 65534 gets EDQUOT at its limit, root does not; one pidfd per owner")
{
	Daemon d({"align=1G", "max_regions_per_uid=20"});
	const int baseline = settled_fds(d.pid());
	REQUIRE(baseline > 0);
	const CreatorRun run = run_region_creator(d, 50);
	CHECK(run.made == 20);
	CHECK(run.err == EDQUOT);
	// 20 idle regions of one process: at most its one pidfd more.
	CHECK(run.fds_while_held <= baseline + 2);
	CHECK(run.fds_after_exit <= baseline + 1);

	// The user's regions still count (they exist); removed, they free the quota.
	CHECK(as_user(kNobody, [] {
		      const int fd = open(path("one-more").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
		      return fd < 0 && errno == EDQUOT ? 0 : 1;
	      }).exit_code == 0);
	for (int i = 0; i < 20; i++)
		CHECK(unlink(path("idle-" + std::to_string(i)).c_str()) == 0);
	CHECK(as_user(kNobody, [] {
		      const int fd = open(path("one-more").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
		      return fd >= 0 ? 0 : 1;
	      }).exit_code == 0);
	// Root may hold any number; a region with memory costs no descriptor
	// while idle either (its object is opened only while used).
	const std::string data = fill(4096, 'm');
	for (int i = 0; i < 30; i++) {
		const std::string name = "root-" + std::to_string(i);
		Fd fd(make_sized_region(name));
		CHECK(fd.get() >= 0);
		CHECK(create_mapping(fd.get(), kStart, kMiB, 0, kRW, kAnon) == 0);
		CHECK(pwrite(fd.get(), data.data(), data.size(), 0) == 4096);
	}
	// datapath=uffd: the runtime service still holds each sized region's
	// published layout (a memfd).
	const int layouts = on_uffd() ? 30 : 0;
	CHECK(settled_fds(d.pid()) <= baseline + 2 + layouts);
	for (int i = 0; i < 30; i++)
		CHECK(read_region("root-" + std::to_string(i), 0, 4096) == data);
}

TEST_CASE("1,100 regions of one user: 1,024 by default, then EDQUOT; the daemon's descriptors stay bounded")
{
	Daemon d;
	const int baseline = settled_fds(d.pid());
	REQUIRE(baseline > 0);
	// The daemon took the hard limit of descriptors.
	std::ifstream limits("/proc/" + std::to_string(d.pid()) + "/limits");
	std::string line;
	bool checked = false;
	while (std::getline(limits, line)) {
		if (line.rfind("Max open files", 0) != 0)
			continue;
		unsigned long soft = 0, hard = 0;
		CHECK(sscanf(line.c_str() + 14, "%lu %lu", &soft, &hard) == 2);
		CHECK(soft == hard);
		checked = true;
	}
	CHECK(checked);

	const CreatorRun run = run_region_creator(d, 1100);
	CHECK(run.made == 1024);
	CHECK(run.err == EDQUOT);
	CHECK(run.fds_while_held <= baseline + 2);
	CHECK(run.fds_after_exit <= baseline + 1);
	CHECK(alive(d.pid()));
}
