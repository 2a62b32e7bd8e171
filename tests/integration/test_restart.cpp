// msharefsd killed with SIGKILL and started again on the same mount point:
// the keeper holds the FUSE connection, so the mount, every region and every
// byte attached programs wrote survive; requests made while no daemon ran are
// answered by the next one.
#include <doctest/doctest.h>

#include "harness.hpp"

#include <atomic>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <set>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <csignal>
#include <unistd.h>

using namespace msharefs::test;

namespace {

constexpr uint64_t kStart = 2 * kTiB;
constexpr uint64_t kSize = kGiB;

std::set<std::string> listing(const std::string &dir)
{
	std::set<std::string> names;
	if (DIR *d = opendir(dir.c_str())) {
		while (dirent *de = readdir(d))
			if (std::strcmp(de->d_name, ".") && std::strcmp(de->d_name, ".."))
				names.insert(de->d_name);
		closedir(d);
	}
	return names;
}

// Attaches NAME in this process and checks `text` at `offset`.
int expect_text(const std::string &name, uint64_t offset, const char *text)
{
	int fd = open(path(name).c_str(), O_RDWR);
	if (fd < 0)
		return 10;
	mshare_info info{};
	if (get_size(fd, &info) != 0)
		return 13;
	munmap(reinterpret_cast<void *>(info.start), info.size); // a window inherited by fork
	char *w = static_cast<char *>(attach(fd));
	if (w == MAP_FAILED)
		return 11;
	return std::strcmp(w + offset, text) == 0 ? 0 : 12;
}

} // namespace

TEST_CASE("kill -9 and restart: regions, namespace and unsynced writes survive")
{
	Daemon daemon;
	REQUIRE(mkdir(path("dir").c_str(), 0750) == 0);
	int fd = create_region("dir/db", kStart, kSize);
	REQUIRE(fd >= 0);
	char *w = static_cast<char *>(attach(fd));
	REQUIRE(w != MAP_FAILED);
	std::strcpy(w, "written by the creator, never synced");

	// An attacher writes and stays attached across the crash.
	int to_child[2], from_child[2];
	REQUIRE(pipe(to_child) == 0);
	REQUIRE(pipe(from_child) == 0);
	pid_t attacher = spawn([&] {
		munmap(w, kSize);
		close(fd);
		int afd = open(path("dir/db").c_str(), O_RDWR);
		char *aw = static_cast<char *>(attach(afd));
		if (aw == MAP_FAILED)
			return 1;
		std::strcpy(aw + 64 * kMiB, "written by the attacher, never synced");
		char c = 'r';
		if (write(from_child[1], &c, 1) != 1 || read(to_child[0], &c, 1) != 1)
			return 2;
		// After the restart: what both wrote is still here, and new
		// writes work.
		if (std::strcmp(aw, "written by the creator, never synced") != 0)
			return 3;
		std::strcpy(aw + 128 * kMiB, "written after the restart");
		if (msync(aw + 128 * kMiB, 4096, MS_SYNC) != 0)
			return 4;
		return 0;
	});
	char c;
	REQUIRE(read(from_child[0], &c, 1) == 1);
	const auto before = listing(kMount);

	daemon.kill9();
	// While no daemon runs, the mount is still there and its data mapped.
	CHECK(std::strcmp(w + 64 * kMiB, "written by the attacher, never synced") == 0);
	daemon.restart();

	CHECK(listing(kMount) == before);
	CHECK(listing(path("dir")) == std::set<std::string>{"db"});
	struct stat st {};
	REQUIRE(stat(path("dir/db").c_str(), &st) == 0);
	CHECK(static_cast<uint64_t>(st.st_size) == kSize);
	CHECK((st.st_mode & 07777) == 0600);

	REQUIRE(write(to_child[1], "g", 1) == 1);
	ChildResult r = wait_for(attacher, 30);
	CHECK(r.exit_code == 0);
	CHECK(std::strcmp(w + 128 * kMiB, "written after the restart") == 0);

	// A process that attaches only now sees everything.
	CHECK(run_in_child([] { return expect_text("dir/db", 0, "written by the creator, never synced"); })
		      .exit_code == 0);
	CHECK(run_in_child([] { return expect_text("dir/db", 64 * kMiB, "written by the attacher, never synced"); })
		      .exit_code == 0);
	munmap(w, kSize);
	close(fd);
}

TEST_CASE("requests made while the daemon is down are answered after the restart")
{
	Daemon daemon;
	int fd = create_region("r", kStart, kSize);
	REQUIRE(fd >= 0);
	char *w = static_cast<char *>(attach(fd));
	REQUIRE(w != MAP_FAILED);
	std::strcpy(w + 8 * kMiB, "hello");

	daemon.kill9();
	// These block until a daemon serves the mount again.
	pid_t opener = spawn([] { return expect_text("r", 8 * kMiB, "hello"); });
	pid_t creator = spawn([] {
		int cfd = create_region("made-during-downtime", 4 * kTiB, kSize);
		return cfd >= 0 ? 0 : 1;
	});
	usleep(300000);
	int status;
	CHECK(waitpid(opener, &status, WNOHANG) == 0); // still waiting, not failed
	daemon.restart();
	CHECK(wait_for(opener, 30).exit_code == 0);
	CHECK(wait_for(creator, 30).exit_code == 0);
	CHECK(access(path("made-during-downtime").c_str(), F_OK) == 0);
	munmap(w, kSize);
	close(fd);
}

TEST_CASE("repeated kill -9 under a steady writer loses no write")
{
	Daemon daemon;
	int fd = create_region("busy", kStart, kSize);
	REQUIRE(fd >= 0);
	close(fd);
	constexpr int kRounds = 4000;
	std::atomic<int> *progress = static_cast<std::atomic<int> *>(
		mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
	progress->store(0);
	pid_t writer = spawn([&] {
		int wfd = open(path("busy").c_str(), O_RDWR);
		char *bw = static_cast<char *>(attach(wfd));
		if (bw == MAP_FAILED)
			return 1;
		// Each round writes a page far from the last and syncs it, so
		// requests are in flight when the daemon dies.
		for (int i = 0; i < kRounds; i++) {
			uint64_t *page = reinterpret_cast<uint64_t *>(bw + (static_cast<uint64_t>(i) * 37 % 8192) * 4096);
			page[0] = static_cast<uint64_t>(i) + 1;
			if (i % 16 == 0 && msync(page, 4096, MS_SYNC) != 0)
				return 2;
			progress->store(i);
		}
		return msync(bw, 8192 * 4096, MS_SYNC) == 0 ? 0 : 3;
	});
	for (int k = 0; k < 3; k++) {
		int seen = progress->load();
		for (int i = 0; i < 500 && progress->load() < seen + kRounds / 8; i++)
			usleep(2000);
		daemon.kill9();
		usleep(50000);
		daemon.restart();
	}
	ChildResult r = wait_for(writer, 60);
	REQUIRE(r.exit_code == 0);
	// A fresh process checks the last value written to every page.
	ChildResult check = run_in_child([] {
		int cfd = open(path("busy").c_str(), O_RDWR);
		char *cw = static_cast<char *>(attach(cfd));
		if (cw == MAP_FAILED)
			return 1;
		std::vector<uint64_t> expect(8192, 0);
		for (int i = 0; i < kRounds; i++)
			expect[static_cast<uint64_t>(i) * 37 % 8192] = static_cast<uint64_t>(i) + 1;
		for (size_t p = 0; p < expect.size(); p++)
			if (*reinterpret_cast<uint64_t *>(cw + p * 4096) != expect[p])
				return 2;
		return 0;
	});
	CHECK(check.exit_code == 0);
	munmap(progress, 4096);
}

// An owner that dies while the daemon is down. With keep_fd, it still holds
// its region descriptor: FUSE forces the FLUSH of that close, so the owner
// cannot finish exiting until the restarted daemon answers, and only then
// does its pidfd report the exit. Without it, the owner holds only its
// (clean) mapping and is fully gone before the new daemon starts.
static void owner_dies_while_daemon_down(bool keep_fd)
{
	Daemon daemon;
	int ready[2];
	REQUIRE(pipe(ready) == 0);
	pid_t owner = spawn([&] {
		int ofd = create_region("owned", kStart, kSize);
		char *ow = static_cast<char *>(attach(ofd));
		if (ow == MAP_FAILED)
			return 1;
		std::strcpy(ow, "owner data");
		msync(ow, 4096, MS_SYNC);
		if (!keep_fd)
			close(ofd);
		char c = 'r';
		if (write(ready[1], &c, 1) != 1)
			return 2;
		pause();
		return 0;
	});
	char c;
	REQUIRE(read(ready[0], &c, 1) == 1);
	close(ready[0]);
	close(ready[1]);
	int fd = open(path("owned").c_str(), O_RDWR);
	REQUIRE(fd >= 0);
	daemon.kill9();
	kill(owner, SIGKILL);
	if (!keep_fd)
		CHECK(wait_for(owner, 30).signal == SIGKILL);
	daemon.restart();
	if (keep_fd)
		CHECK(wait_for(owner, 30).signal == SIGKILL);
	// The new daemon finds the owner gone and removes every mapping.
	mshare_info info{};
	bool torn_down = false;
	for (int i = 0; i < 500 && !torn_down; i++) {
		torn_down = create_mapping(fd, kStart, 4096, 0, PROT_READ | PROT_WRITE,
					   MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED) == EINVAL;
		if (!torn_down)
			usleep(10000);
	}
	CHECK(torn_down);
	CHECK(get_size(fd, &info) == 0);
	// The region is sealed before its mappings go: the memory follows.
	CHECK(eventually([] { return region_objects().empty(); }));
	close(fd);
}

TEST_CASE("an owner that exits while the daemon is down still tears its region down")
{
	SUBCASE("the owner holds only its mapping") { owner_dies_while_daemon_down(false); }
	SUBCASE("the owner dies holding its region descriptor") { owner_dies_while_daemon_down(true); }
}
