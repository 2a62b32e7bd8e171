// The data path a mount and each window take: a default mount takes the best
// one available (the module when it is loaded, else the uffd runtime, which
// serves programs without it through the page cache on the same mount), and
// user.mshare.datapath and msharectl say which.
#include <doctest/doctest.h>

#include "harness.hpp"

#include <linux/msharefs.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/xattr.h>
#include <unistd.h>

using namespace msharefs::test;

namespace {

constexpr uint64_t kStart = 2 * kTiB;
constexpr const char *kAttribute = "user.mshare.datapath";

std::string attribute(const std::string &p)
{
	char buf[4096];
	const ssize_t n = getxattr(p.c_str(), kAttribute, buf, sizeof(buf));
	REQUIRE_MESSAGE(n >= 0, "getxattr " << p << ": " << strerror(errno));
	return std::string(buf, static_cast<size_t>(n));
}

bool listed(const std::string &p)
{
	char buf[4096];
	const ssize_t n = listxattr(p.c_str(), buf, sizeof(buf));
	REQUIRE(n >= 0);
	for (const char *name = buf; name < buf + n; name += std::strlen(name) + 1)
		if (std::strcmp(name, kAttribute) == 0)
			return true;
	return false;
}

// The best path on this machine: the module only where it is loaded.
std::string best_path() { return access("/dev/msharefs_kmod", F_OK) == 0 ? "kmod" : "uffd"; }

// This test binary runs under libmshare-preload.so in the -uffd variant.
bool under_runtime()
{
	const char *p = getenv("LD_PRELOAD");
	return p && std::strstr(p, "libmshare-preload");
}

std::string msharectl_stat(const std::string &name)
{
	const char *ctl = getenv("MSHARECTL");
	REQUIRE(ctl);
	std::string out;
	REQUIRE(run_program({ctl, "stat", name}, &out, 30).exit_code == 0);
	return out;
}

} // namespace

// First: under the shim, a process that has attached through a runtime
// socket takes a later mount on the same device without one for its daemon
// gone (ENOTCONN), so this file starts with the mount without the runtime.
TEST_CASE("datapath=pagecache says so, and PROTECT is not served there")
{
	Daemon d({"align=1G", "datapath=pagecache"});
	CHECK(attribute(kMount) == "pagecache");
	Fd fd(create_region("compat", kStart, kGiB));
	REQUIRE(fd.get() >= 0);
	Window w(fd.get());
	REQUIRE(w);
	CHECK(attribute(path("compat")) == "pagecache");
	CHECK(msharectl_stat("compat").find("datapath:   pagecache\n") != std::string::npos);
	CHECK(protect(fd.get(), kStart, kGiB, PROT_READ) == EOPNOTSUPP);
}

TEST_CASE("a default mount takes the best data path; the root, each region and each window say which")
{
	Daemon d({"align=1G", kDefaultDataPath});
	const std::string best = best_path();
	CHECK(listed(kMount));
	CHECK(attribute(kMount) == best);

	Fd fd(create_region("default", kStart, kGiB));
	REQUIRE(fd.get() >= 0);
	CHECK(listed(path("default")));
	CHECK(attribute(path("default")) == best); // no window yet

	Window w(fd.get());
	REQUIRE(w);
	std::strcpy(w.get(), "through the window");
	char back[32] = {};
	REQUIRE(pread(fd.get(), back, sizeof(back), 0) > 0);
	CHECK(std::string(back) == "through the window");
	if (best == "uffd") {
		// Composed by the runtime under the shim, the page cache without it.
		const std::string window = std::to_string(getpid()) + (under_runtime() ? "=uffd" : "=pagecache");
		CHECK(attribute(path("default")) == best + " " + window);
		const std::string shown = msharectl_stat("default");
		INFO(shown);
		CHECK(shown.find("datapath:   uffd (windows: " + std::to_string(getpid()) +
				 (under_runtime() ? " uffd)" : " pagecache)")) != std::string::npos);
	}
	// The best path serves PROTECT (the page cache alone cannot).
	CHECK(protect(fd.get(), kStart, kGiB, PROT_READ) == 0);
}
