// The /sys/fs/mshare namespace: mshare_info, names, directories, rename,
// unlink and the lifetime of a region's memory, permissions, stat and statfs,
// on a real mount with real processes.
#include <doctest/doctest.h>

#include "harness.hpp"

#include <linux/msharefs.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <map>
#include <set>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <vector>

using namespace msharefs::test;

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

namespace {

constexpr uint64_t kSize = kGiB;
constexpr uint64_t kPage = 4096;
constexpr uid_t kNobody = 65534;



int err_of(int ret) { return ret == 0 ? 0 : errno; }

int open_err(const std::string &p, int flags, mode_t mode = 0600)
{
	int fd = open(p.c_str(), flags, mode);
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

std::string read_text(const std::string &p)
{
	Fd fd(open(p.c_str(), O_RDONLY));
	REQUIRE_MESSAGE(fd.get() >= 0, p << ": " << strerror(errno));
	std::string out;
	char buf[256];
	ssize_t n;
	while ((n = read(fd.get(), buf, sizeof(buf))) > 0)
		out.append(buf, static_cast<size_t>(n));
	return out;
}

// Names in a directory of the mount, without "." and "..", with their d_type.
std::map<std::string, unsigned char> list_dir(const std::string &p)
{
	std::map<std::string, unsigned char> out;
	DIR *d = opendir(p.c_str());
	REQUIRE_MESSAGE(d, p << ": " << strerror(errno));
	while (dirent *de = readdir(d)) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		CHECK_MESSAGE(!out.count(de->d_name), "listed twice: " << de->d_name);
		out[de->d_name] = de->d_type;
	}
	closedir(d);
	return out;
}

std::set<std::string> names_in(const std::string &p)
{
	std::set<std::string> out;
	for (const auto &[name, type] : list_dir(p))
		out.insert(name);
	return out;
}

// Runs fn in a child that has become uid/gid `id` (no supplementary groups).
ChildResult as_user(uid_t id, const std::function<int()> &fn)
{
	return run_in_child([&] {
		if (setgroups(0, nullptr) != 0 || setresgid(id, id, id) != 0 || setresuid(id, id, id) != 0)
			return 100;
		return fn();
	});
}

// The errno an open by another uid gets (0 on success).
int open_as(uid_t id, const std::string &p, int flags, mode_t mode = 0600)
{
	ChildResult r = as_user(id, [&] { return open_err(p, flags, mode); });
	REQUIRE_MESSAGE(r.exit_code >= 0, "child killed by signal " << r.signal);
	REQUIRE_MESSAGE(r.exit_code != 100, "cannot become uid " << id);
	return r.exit_code;
}

// A region of kSize at start, fully mapped, with `text` written at its start
// through a window that is unmapped again. Returns the open fd.
int region_with_text(const std::string &name, uint64_t start, const char *text)
{
	int fd = create_region(name, start, kSize);
	REQUIRE_MESSAGE(fd >= 0, name << ": " << strerror(errno));
	void *w = attach(fd);
	REQUIRE(w != MAP_FAILED);
	strcpy(static_cast<char *>(w), text);
	munmap(w, kSize);
	return fd;
}

} // namespace

TEST_CASE("mshare_info reads the alignment 1 GiB with align=1G and is mode 0444")
{
	Daemon d;
	CHECK(read_text(path(MSHAREFS_INFO_NAME)) == "1073741824\n");
	struct stat st {};
	REQUIRE(stat(path(MSHAREFS_INFO_NAME).c_str(), &st) == 0);
	CHECK(st.st_mode == (S_IFREG | 0444));
	CHECK(st.st_uid == 0);
	CHECK(st.st_size == 11);
}

TEST_CASE("mshare_info reads the upstream alignment 512 GiB with default options")
{
	Daemon d(std::vector<std::string>{});
	CHECK(read_text(path(MSHAREFS_INFO_NAME)) == "549755813888\n");
	CHECK(d.alignment() == MSHAREFS_DEFAULT_ALIGN);
	struct stat st {};
	REQUIRE(stat(path(MSHAREFS_INFO_NAME).c_str(), &st) == 0);
	CHECK(st.st_mode == (S_IFREG | 0444));
}

TEST_CASE("mshare_info cannot be unlinked, renamed, replaced, written or recreated")
{
	Daemon d;
	const std::string info = path(MSHAREFS_INFO_NAME);
	Fd region(open(path("r").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(region.get() >= 0);

	CHECK(err_of(unlink(info.c_str())) == EPERM);
	CHECK(err_of(rename(info.c_str(), path("renamed").c_str())) == EPERM);
	CHECK(err_of(rename(path("r").c_str(), info.c_str())) == EPERM); // over it
	CHECK(err_of(syscall(SYS_renameat2, AT_FDCWD, path("r").c_str(), AT_FDCWD, info.c_str(), 0)) == EPERM);
	// Read-only even for root.
	CHECK(open_err(info, O_WRONLY) == EACCES);
	CHECK(open_err(info, O_RDWR) == EACCES);
	CHECK(open_err(info, O_RDWR | O_CREAT) == EACCES);
	CHECK(err_of(chmod(info.c_str(), 0666)) == EPERM);
	CHECK(err_of(truncate(info.c_str(), 0)) != 0);
	// Its name is taken.
	CHECK(open_err(info, O_RDWR | O_CREAT | O_EXCL) == EEXIST);
	CHECK(err_of(mkdir(info.c_str(), 0755)) == EEXIST);
	CHECK(err_of(mknod(info.c_str(), S_IFREG | 0600, 0)) == EEXIST);

	// Still there, unchanged, and the region kept its own name.
	CHECK(read_text(info) == "1073741824\n");
	struct stat st {};
	REQUIRE(stat(info.c_str(), &st) == 0);
	CHECK(st.st_mode == (S_IFREG | 0444));
	CHECK(stat(path("r").c_str(), &st) == 0);
	CHECK(stat(path("renamed").c_str(), &st) != 0);
}

TEST_CASE("create with O_EXCL of an existing name fails with EEXIST, open of a missing name with ENOENT")
{
	Daemon d;
	Fd fd(open(path("r").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(fd.get() >= 0);
	CHECK(open_err(path("r"), O_RDWR | O_CREAT | O_EXCL) == EEXIST);
	CHECK(open_err(path("r"), O_RDONLY | O_CREAT | O_EXCL) == EEXIST);
	REQUIRE(mkdir(path("dir").c_str(), 0755) == 0);
	CHECK(open_err(path("dir"), O_RDWR | O_CREAT | O_EXCL) == EEXIST);
	CHECK(err_of(mkdir(path("r").c_str(), 0755)) == EEXIST);
	CHECK(err_of(mkdir(path("dir").c_str(), 0755)) == EEXIST);
	// Without O_EXCL, O_CREAT opens the existing region.
	CHECK(open_err(path("r"), O_RDWR | O_CREAT) == 0);

	CHECK(open_err(path("missing"), O_RDWR) == ENOENT);
	CHECK(open_err(path("missing"), O_RDONLY) == ENOENT);
	CHECK(open_err(path("dir/missing"), O_RDWR) == ENOENT);
	CHECK(open_err(path("nodir/missing"), O_RDWR | O_CREAT) == ENOENT);
	struct stat st {};
	CHECK(stat(path("missing").c_str(), &st) != 0);
	CHECK(errno == ENOENT);
}

TEST_CASE("readdir lists exactly the live regions and directories, across many creates and unlinks")
{
	Daemon d;
	CHECK(names_in(kMount) == std::set<std::string>{MSHAREFS_INFO_NAME});
	// Long names: the listing needs more than one readdir buffer.
	auto name = [](int i) {
		char buf[64];
		snprintf(buf, sizeof(buf), "region-with-a-rather-long-name-%03d", i);
		return std::string(buf);
	};
	std::set<std::string> live{MSHAREFS_INFO_NAME};
	for (int i = 0; i < 100; i++) {
		Fd fd(open(path(name(i)).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
		REQUIRE_MESSAGE(fd.get() >= 0, name(i) << ": " << strerror(errno));
		live.insert(name(i));
	}
	REQUIRE(mkdir(path("a-directory").c_str(), 0755) == 0);
	live.insert("a-directory");
	CHECK(names_in(kMount) == live);

	for (int i = 0; i < 100; i++)
		if (i % 3 != 1) {
			REQUIRE(unlink(path(name(i)).c_str()) == 0);
			live.erase(name(i));
		}
	CHECK(names_in(kMount) == live);
	// Some names come back, others are new.
	for (int i = 0; i < 100; i += 9) {
		if (live.count(name(i)))
			continue;
		Fd fd(open(path(name(i)).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
		REQUIRE(fd.get() >= 0);
		live.insert(name(i));
	}
	for (int i = 100; i < 130; i++) {
		Fd fd(open(path(name(i)).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
		REQUIRE(fd.get() >= 0);
		live.insert(name(i));
	}
	const auto listing = list_dir(kMount);
	std::set<std::string> listed;
	for (const auto &[n, type] : listing)
		listed.insert(n);
	CHECK(listed == live);
	CHECK(listing.size() == live.size());
	CHECK(listing.at("a-directory") == DT_DIR);
	CHECK(listing.at(MSHAREFS_INFO_NAME) == DT_REG);
	CHECK(listing.at(name(1)) == DT_REG);

	// Regions in a directory are listed there, not at the root.
	REQUIRE(mkdir(path("a-directory/sub").c_str(), 0755) == 0);
	Fd inner(open(path("a-directory/inner").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(inner.get() >= 0);
	CHECK(names_in(path("a-directory")) == std::set<std::string>{"inner", "sub"});
	CHECK(names_in(path("a-directory/sub")).empty());
	CHECK(names_in(kMount) == live);
}

TEST_CASE("directories: nested regions, rmdir of a non-empty directory fails with ENOTEMPTY")
{
	Daemon d;
	REQUIRE(mkdir(path("db").c_str(), 0750) == 0);
	REQUIRE(mkdir(path("db/inner").c_str(), 0755) == 0);
	struct stat st {};
	REQUIRE(stat(path("db").c_str(), &st) == 0);
	CHECK(S_ISDIR(st.st_mode));
	CHECK((st.st_mode & 07777) == 0750);

	// Regions inside directories work like those at the root.
	Fd fd(create_region("db/inner/buffers", 2 * kTiB, kSize));
	REQUIRE(fd.get() >= 0);
	{
		Window w(attach(fd.get()), kSize);
		REQUIRE(w.ok());
		strcpy(w.at(0), "nested");
		ChildResult r = run_in_child([&] {
			Fd again(open(path("db/inner/buffers").c_str(), O_RDWR));
			mshare_info info{};
			if (again.get() < 0 || get_size(again.get(), &info) != 0 || info.size != kSize)
				return 1;
			return strcmp(w.at(0), "nested") == 0 ? 0 : 2;
		});
		CHECK(r.exit_code == 0);
	}
	CHECK(err_of(rmdir(path("db").c_str())) == ENOTEMPTY);
	CHECK(err_of(rmdir(path("db/inner").c_str())) == ENOTEMPTY);
	CHECK(err_of(rmdir(path("db/inner/buffers").c_str())) == ENOTDIR);
	CHECK(err_of(unlink(path("db/inner").c_str())) == EISDIR);
	CHECK(err_of(rmdir(path("missing").c_str())) == ENOENT);

	// Emptied, they go.
	REQUIRE(unlink(path("db/inner/buffers").c_str()) == 0);
	CHECK(err_of(rmdir(path("db").c_str())) == ENOTEMPTY);
	CHECK(rmdir(path("db/inner").c_str()) == 0);
	CHECK(rmdir(path("db").c_str()) == 0);
	CHECK(stat(path("db").c_str(), &st) != 0);
	CHECK(errno == ENOENT);
	CHECK(names_in(kMount) == std::set<std::string>{MSHAREFS_INFO_NAME});
	// The already open fd still answers.
	mshare_info info{};
	CHECK(get_size(fd.get(), &info) == 0);
}

TEST_CASE("rename keeps a region's data; RENAME_NOREPLACE onto an existing name fails with EEXIST")
{
	Daemon d;
	{
		Fd fd(region_with_text("before", 2 * kTiB, "data kept across rename"));
	}
	REQUIRE(mkdir(path("dir").c_str(), 0755) == 0);
	REQUIRE(rename(path("before").c_str(), path("after").c_str()) == 0);
	CHECK(open_err(path("before"), O_RDWR) == ENOENT);
	{
		Fd fd(open(path("after").c_str(), O_RDWR));
		REQUIRE(fd.get() >= 0);
		mshare_info info{};
		REQUIRE(get_size(fd.get(), &info) == 0);
		CHECK(info.start == 2 * kTiB);
		CHECK(info.size == kSize);
		Window w(attach(fd.get()), kSize);
		REQUIRE(w.ok());
		CHECK(strcmp(w.at(0), "data kept across rename") == 0);
	}
	// Into a directory and back out.
	REQUIRE(rename(path("after").c_str(), path("dir/moved").c_str()) == 0);
	CHECK(names_in(path("dir")) == std::set<std::string>{"moved"});
	REQUIRE(rename(path("dir/moved").c_str(), path("final").c_str()) == 0);
	{
		Fd fd(open(path("final").c_str(), O_RDWR));
		REQUIRE(fd.get() >= 0);
		Window w(attach(fd.get()), kSize);
		REQUIRE(w.ok());
		CHECK(strcmp(w.at(0), "data kept across rename") == 0);
	}

	Fd other(open(path("other").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(other.get() >= 0);
	CHECK(err_of(syscall(SYS_renameat2, AT_FDCWD, path("final").c_str(), AT_FDCWD, path("other").c_str(),
			     RENAME_NOREPLACE)) == EEXIST);
	CHECK(err_of(syscall(SYS_renameat2, AT_FDCWD, path("final").c_str(), AT_FDCWD, path("dir").c_str(),
			     RENAME_NOREPLACE)) == EEXIST);
	// Both names are untouched.
	CHECK(names_in(kMount) == std::set<std::string>{MSHAREFS_INFO_NAME, "dir", "final", "other"});
	// RENAME_NOREPLACE onto a free name works.
	CHECK(syscall(SYS_renameat2, AT_FDCWD, path("final").c_str(), AT_FDCWD, path("free").c_str(),
		      RENAME_NOREPLACE) == 0);
	CHECK(names_in(kMount) == std::set<std::string>{MSHAREFS_INFO_NAME, "dir", "free", "other"});
}

TEST_CASE("rename over an existing region replaces the name only: the old target's fd still works")
{
	Daemon d;
	Fd a(region_with_text("a", 2 * kTiB, "region A"));
	Fd b(region_with_text("b", 3 * kTiB, "region B"));
	a.reset();
	REQUIRE(eventually([] { return region_objects().size() == 2; }));

	REQUIRE(rename(path("a").c_str(), path("b").c_str()) == 0);
	CHECK(open_err(path("a"), O_RDWR) == ENOENT);
	CHECK(names_in(kMount) == std::set<std::string>{MSHAREFS_INFO_NAME, "b"});
	// The name "b" now opens region A.
	{
		Fd fd(open(path("b").c_str(), O_RDWR));
		REQUIRE(fd.get() >= 0);
		mshare_info info{};
		REQUIRE(get_size(fd.get(), &info) == 0);
		CHECK(info.start == 2 * kTiB);
		Window w(attach(fd.get()), kSize);
		REQUIRE(w.ok());
		CHECK(strcmp(w.at(0), "region A") == 0);
	}
	// The old region B lives on through its fd: size, data, new mappings.
	{
		mshare_info info{};
		REQUIRE(get_size(b.get(), &info) == 0);
		CHECK(info.start == 3 * kTiB);
		CHECK(info.size == kSize);
		Window w(attach(b.get()), kSize);
		REQUIRE(w.ok());
		CHECK(strcmp(w.at(0), "region B") == 0);
		strcpy(w.at(kPage), "still writable");
		CHECK(unmap(b.get(), 3 * kTiB + kSize - kPage, kPage) == 0);
		CHECK(create_mapping(b.get(), 3 * kTiB + kSize - kPage, kPage, 0, PROT_READ | PROT_WRITE,
				     MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED) == 0);
		ChildResult r = run_in_child([&] { return strcmp(w.at(kPage), "still writable") == 0 ? 0 : 1; });
		CHECK(r.exit_code == 0);
	}
	// A second mapping is a second object, except in the module, where the
	// region is the object.
	CHECK(region_objects().size() == (on_kmod() ? 2 : 3));
	// When its last fd goes, so does region B's memory; A's stays.
	b.reset();
	CHECK(eventually([] { return region_objects().size() == 1; }));
	CHECK(region_objects().size() == 1);
}

TEST_CASE("unlink removes the name only; open fds and windows keep working, then memory is freed")
{
	Daemon d;
	Fd fd(create_region("r", 2 * kTiB, kSize));
	REQUIRE(fd.get() >= 0);
	Window w(attach(fd.get()), kSize);
	REQUIRE(w.ok());
	strcpy(w.at(0), "before unlink");
	REQUIRE(!region_objects().empty());

	REQUIRE(unlink(path("r").c_str()) == 0);
	CHECK(open_err(path("r"), O_RDWR) == ENOENT);
	CHECK(open_err(path("r"), O_RDONLY) == ENOENT);
	CHECK(err_of(unlink(path("r").c_str())) == ENOENT);
	CHECK(names_in(kMount) == std::set<std::string>{MSHAREFS_INFO_NAME});
	// The name is free for a new region.
	{
		Fd again(open(path("r").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
		CHECK(again.get() >= 0);
		mshare_info info{};
		CHECK(get_size(again.get(), &info) == EINVAL); // a new, unsized region
	}
	REQUIRE(unlink(path("r").c_str()) == 0);

	// The fd and the window still work, in this process and in a child.
	mshare_info info{};
	CHECK(get_size(fd.get(), &info) == 0);
	CHECK(info.size == kSize);
	CHECK(strcmp(w.at(0), "before unlink") == 0);
	strcpy(w.at(5 * kMiB), "after unlink");
	ChildResult r = run_in_child([&] {
		if (strcmp(w.at(0), "before unlink") != 0 || strcmp(w.at(5 * kMiB), "after unlink") != 0)
			return 1;
		strcpy(w.at(7 * kMiB), "from the child");
		return 0;
	});
	CHECK(r.exit_code == 0);
	CHECK(strcmp(w.at(7 * kMiB), "from the child") == 0);
	CHECK(unmap(fd.get(), 2 * kTiB + 7 * kMiB, kPage) == 0);
	CHECK(read_faults(w.at(7 * kMiB)));
	CHECK(!read_faults(w.at(5 * kMiB)));

	// The fd goes; the window still holds the region.
	fd.reset();
	usleep(200000);
	CHECK(!region_objects().empty());
	CHECK(strcmp(w.at(5 * kMiB), "after unlink") == 0);
	// The last user goes: the memory is freed.
	w.reset();
	CHECK(eventually([] { return region_objects().empty(); }));
	CHECK(region_objects().empty());
}

TEST_CASE("unlink of a region nobody holds frees its memory")
{
	Daemon d;
	{
		Fd fd(region_with_text("r", 2 * kTiB, "short lived"));
	}
	usleep(100000);
	CHECK(!region_objects().empty()); // a name alone keeps the region
	REQUIRE(unlink(path("r").c_str()) == 0);
	CHECK(eventually([] { return region_objects().empty(); }));
}

TEST_CASE("mode, uid and gid are enforced and changed with chmod and chown")
{
	Daemon d;
	const std::string p = path("private");
	{
		Fd fd(open(p.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
		REQUIRE(fd.get() >= 0);
	}
	struct stat st {};
	REQUIRE(stat(p.c_str(), &st) == 0);
	CHECK(st.st_uid == 0);
	CHECK(st.st_gid == 0);
	CHECK(st.st_mode == (S_IFREG | 0600));
	CHECK(open_as(kNobody, p, O_RDWR) == EACCES);
	CHECK(open_as(kNobody, p, O_RDONLY) == EACCES);
	// Another uid can neither change the mode nor, the root being sticky, unlink it.
	ChildResult r = as_user(kNobody, [&] { return err_of(chmod(p.c_str(), 0666)); });
	CHECK(r.exit_code == EPERM);
	r = as_user(kNobody, [&] { return err_of(unlink(p.c_str())); });
	CHECK(r.exit_code == EPERM);

	REQUIRE(chmod(p.c_str(), 0666) == 0);
	REQUIRE(stat(p.c_str(), &st) == 0);
	CHECK(st.st_mode == (S_IFREG | 0666));
	CHECK(open_as(kNobody, p, O_RDWR) == 0);

	REQUIRE(chmod(p.c_str(), 0644) == 0);
	CHECK(open_as(kNobody, p, O_RDONLY) == 0);
	CHECK(open_as(kNobody, p, O_RDWR) == EACCES);

	REQUIRE(chmod(p.c_str(), 0600) == 0);
	CHECK(open_as(kNobody, p, O_RDONLY) == EACCES);
	REQUIRE(chown(p.c_str(), kNobody, kNobody) == 0);
	REQUIRE(stat(p.c_str(), &st) == 0);
	CHECK(st.st_uid == kNobody);
	CHECK(st.st_gid == kNobody);
	CHECK(st.st_mode == (S_IFREG | 0600));
	CHECK(open_as(kNobody, p, O_RDWR) == 0);
	CHECK(open_as(kNobody - 1, p, O_RDONLY) == EACCES);
	// Group bits apply to the group.
	REQUIRE(chmod(p.c_str(), 0640) == 0);
	r = run_in_child([&] {
		if (setgroups(0, nullptr) != 0 || setresgid(kNobody, kNobody, kNobody) != 0 ||
		    setresuid(kNobody - 1, kNobody - 1, kNobody - 1) != 0)
			return 100;
		int a = open_err(p, O_RDONLY);
		int b = open_err(p, O_RDWR);
		return a == 0 && b == EACCES ? 0 : 1;
	});
	CHECK(r.exit_code == 0);
	// The owner may now chmod it.
	r = as_user(kNobody, [&] { return err_of(chmod(p.c_str(), 0604)); });
	CHECK(r.exit_code == 0);
	REQUIRE(stat(p.c_str(), &st) == 0);
	CHECK(st.st_mode == (S_IFREG | 0604));
	CHECK(open_as(kNobody - 1, p, O_RDONLY) == 0);
}

TEST_CASE("a directory's mode controls who may create, open and list inside it")
{
	Daemon d;
	const mode_t old_umask = umask(0);
	REQUIRE(mkdir(path("closed").c_str(), 0700) == 0);
	REQUIRE(mkdir(path("open").c_str(), 0777) == 0);
	umask(old_umask);
	{
		Fd inside(open(path("closed/region").c_str(), O_RDWR | O_CREAT | O_EXCL, 0666));
		REQUIRE(inside.get() >= 0);
		REQUIRE(fchmod(inside.get(), 0666) == 0);
	}

	CHECK(open_as(kNobody, path("closed/new"), O_RDWR | O_CREAT | O_EXCL) == EACCES);
	CHECK(open_as(kNobody, path("closed/region"), O_RDWR) == EACCES); // no search permission
	ChildResult r = as_user(kNobody, [&] { return err_of(mkdir(path("closed/sub").c_str(), 0755)); });
	CHECK(r.exit_code == EACCES);
	r = as_user(kNobody, [&] {
		DIR *dir = opendir(path("closed").c_str());
		if (dir) {
			closedir(dir);
			return 0;
		}
		return errno;
	});
	CHECK(r.exit_code == EACCES);
	CHECK(names_in(path("closed")) == std::set<std::string>{"region"});

	// Where the mode allows it, the other uid creates and owns its region.
	CHECK(open_as(kNobody, path("open/mine"), O_RDWR | O_CREAT | O_EXCL) == 0);
	struct stat st {};
	REQUIRE(stat(path("open/mine").c_str(), &st) == 0);
	CHECK(st.st_uid == kNobody);
	CHECK(st.st_gid == kNobody);
	// Opening it up lets the other uid in.
	REQUIRE(chmod(path("closed").c_str(), 0777) == 0);
	CHECK(open_as(kNobody, path("closed/region"), O_RDWR) == 0);
	CHECK(open_as(kNobody, path("closed/new"), O_RDWR | O_CREAT | O_EXCL) == 0);
}

TEST_CASE("stat of a region: st_size is its size, st_mode is S_IFREG|mode")
{
	Daemon d;
	Fd unsized(open(path("unsized").c_str(), O_RDWR | O_CREAT | O_EXCL, 0640));
	REQUIRE(unsized.get() >= 0);
	struct stat st {};
	REQUIRE(stat(path("unsized").c_str(), &st) == 0);
	CHECK(st.st_size == 0);
	CHECK(st.st_mode == (S_IFREG | 0640));
	CHECK(st.st_nlink == 1);

	Fd seed(create_region("seed", 2 * kTiB, 4 * kGiB, 0600));
	REQUIRE(seed.get() >= 0);
	REQUIRE(stat(path("seed").c_str(), &st) == 0);
	CHECK(static_cast<uint64_t>(st.st_size) == 4 * kGiB);
	CHECK(st.st_mode == (S_IFREG | 0600));
	REQUIRE(fstat(seed.get(), &st) == 0);
	CHECK(static_cast<uint64_t>(st.st_size) == 4 * kGiB);

	Fd v3(open(path("v3").c_str(), O_RDWR | O_CREAT | O_EXCL, 0604));
	REQUIRE(v3.get() >= 0);
	REQUIRE(ftruncate(v3.get(), static_cast<off_t>(3 * kGiB)) == 0);
	REQUIRE(stat(path("v3").c_str(), &st) == 0);
	CHECK(static_cast<uint64_t>(st.st_size) == 3 * kGiB);
	CHECK(st.st_mode == (S_IFREG | 0604));

	REQUIRE(stat(path(".").c_str(), &st) == 0);
	CHECK(S_ISDIR(st.st_mode));
	CHECK((st.st_mode & 07777) == 01777);
}

TEST_CASE("statfs of the mount works")
{
	Daemon d;
	struct statfs sfs {};
	REQUIRE(statfs(kMount, &sfs) == 0);
	CHECK(static_cast<unsigned long>(sfs.f_type) == FUSE_SUPER_MAGIC);
	CHECK(sfs.f_bsize == 4096);
	CHECK(sfs.f_namelen == 255);
	Fd fd(create_region("r", 2 * kTiB, kSize));
	REQUIRE(fd.get() >= 0);
	struct statfs by_fd {};
	REQUIRE(fstatfs(fd.get(), &by_fd) == 0);
	CHECK(static_cast<unsigned long>(by_fd.f_type) == FUSE_SUPER_MAGIC);
	CHECK(by_fd.f_files >= 3); // root, mshare_info and the region
}

TEST_CASE("symlink and link are refused")
{
	Daemon d;
	Fd fd(open(path("r").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	REQUIRE(fd.get() >= 0);
	const int symlink_err = err_of(symlink("r", path("sym").c_str()));
	const int link_err = err_of(link(path("r").c_str(), path("hard").c_str()));
	MESSAGE("symlink -> " << std::string(strerror(symlink_err)) << ", link -> " << std::string(strerror(link_err)));
	CHECK((symlink_err == EPERM || symlink_err == ENOSYS));
	CHECK((link_err == EPERM || link_err == ENOSYS));
	CHECK(names_in(kMount) == std::set<std::string>{MSHAREFS_INFO_NAME, "r"});
	struct stat st {};
	REQUIRE(stat(path("r").c_str(), &st) == 0);
	CHECK(st.st_nlink == 1);
}
