// The documented examples, unchanged, on a real mount at /sys/fs/mshare with
// the upstream alignment (512 GiB), run by root and by another user (uid
// 65534, in the mount's 1777 root); in the -uffd variant under
// libmshare-preload.so.
#include <doctest/doctest.h>

#include "harness.hpp"

#include <atomic>
#include <cstdlib>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace msharefs::test;

namespace {

std::string example(const char *var)
{
	const char *p = getenv(var);
	REQUIRE_MESSAGE(p, var << " is not set");
	return p;
}

constexpr int kRoot = -1; // run_program's: as the test runs

// What mshare_advise prints: the module frees no range (EOPNOTSUPP).
std::string advise_line()
{
	return on_kmod() ? "MADV_DONTNEED is not supported on this data path" : "byte 0 is 0, byte 1 MiB is 'a'";
}
constexpr int kNobody = 65534;

// Another user's run is on a default mount (no datapath= at all).
void run_pair(const std::string &creator, const std::string &attacher, const std::string &name, int uid = kRoot)
{
	Daemon daemon(uid == kRoot ? std::vector<std::string>{} : std::vector<std::string>{kDefaultDataPath});
	REQUIRE(daemon.alignment() == MSHAREFS_DEFAULT_ALIGN);
	struct stat root {};
	REQUIRE(stat(kMount, &root) == 0);
	REQUIRE((root.st_mode & 07777) == 01777);
	std::string creator_out;
	ChildResult creator_result;
	std::atomic<bool> creator_ready{false};
	std::thread creator_thread([&] {
		creator_result = run_program({creator, name, "30"}, &creator_out, 60, uid, [&](const std::string &out) {
			if (out.find("creator: ready") != std::string::npos)
				creator_ready = true;
		});
	});
	// Attach once the creator says it is ready, as its documentation says
	// (a slow machine can take longer than any fixed pause).
	for (int i = 0; i < 3000 && !creator_ready; i++)
		usleep(10000);
	CHECK_MESSAGE(creator_ready, "the creator did not print \"creator: ready\" within 30 s");
	std::string attacher_out;
	ChildResult attacher_result = run_program({attacher, name}, &attacher_out, 30, uid);
	creator_thread.join();
	INFO("creator output:\n" << creator_out);
	INFO("attacher output:\n" << attacher_out);
	CHECK(attacher_result.exit_code == 0);
	CHECK(creator_result.exit_code == 0);
	CHECK(attacher_out.find("Hello from the mshare creator!") != std::string::npos);
	CHECK(creator_out.find("was here") != std::string::npos);
	// The creator unlinked the name and the last user is gone: memory freed.
	CHECK(access(path(name).c_str(), F_OK) != 0);
	// Released asynchronously (FUSE RELEASE, the module's host worker).
	CHECK(eventually([] { return region_objects().empty(); }));
}

} // namespace

TEST_CASE("documented example: creator and attacher with the ioctl API")
{
	run_pair(example("EXAMPLE_CREATOR"), example("EXAMPLE_ATTACHER"), "example");
}

TEST_CASE("documented example: creator and attacher with the 2022 library calls")
{
	run_pair(example("EXAMPLE_LIB_CREATOR"), example("EXAMPLE_LIB_ATTACHER"), "lib-example");
}

namespace {

// One of the 2026 API's examples on a default mount (the best data path):
// it exits 0 and says what it showed.
void run_2026_example(const char *name, const std::vector<std::string> &says, int uid = kRoot)
{
	Daemon daemon({kDefaultDataPath});
	std::string out;
	const ChildResult r = run_program({example("EXAMPLES_DIR") + "/" + name}, &out, 60, uid);
	INFO(name << " output:\n" << out);
	CHECK(r.exit_code == 0);
	for (const std::string &line : says)
		CHECK(out.find(line) != std::string::npos);
	// Nameless regions are gone with their last descriptor.
	CHECK(eventually([] { return region_objects().empty(); }));
}

} // namespace

TEST_CASE("2026 API example: mshare_create")
{
	run_2026_example("mshare_create", {"mshare_create: a nameless region of 549755813888 bytes"});
}

TEST_CASE("2026 API example: mshare_attach")
{
	run_2026_example("mshare_attach", {"the child's window at"});
}

TEST_CASE("2026 API example: mshare_map")
{
	run_2026_example("mshare_map", {"the memfd reads \"text of a memfd\", the anonymous mapping \"anonymous memory\"",
					"after mshare_unmap and mshare_map again the range reads zeros"});
}

TEST_CASE("2026 API example: mshare_protect")
{
	run_2026_example("mshare_protect", {"PROT_READ | PROT_WRITE: stores work again"});
}

TEST_CASE("2026 API example: mshare_advise")
{
	run_2026_example("mshare_advise", {advise_line()});
}

TEST_CASE("2026 API example: mshare_set_owner")
{
	run_2026_example("mshare_set_owner", {"maps the region"});
}

TEST_CASE("documented example as uid 65534: creator and attacher with the ioctl API")
{
	run_pair(example("EXAMPLE_CREATOR"), example("EXAMPLE_ATTACHER"), "example", kNobody);
}

TEST_CASE("documented example as uid 65534: creator and attacher with the 2022 library calls")
{
	run_pair(example("EXAMPLE_LIB_CREATOR"), example("EXAMPLE_LIB_ATTACHER"), "lib-example", kNobody);
}

TEST_CASE("2026 API examples as uid 65534")
{
	run_2026_example("mshare_create", {"mshare_create: a nameless region of 549755813888 bytes"}, kNobody);
	run_2026_example("mshare_attach", {"the child's window at"}, kNobody);
	run_2026_example("mshare_map", {"the memfd reads \"text of a memfd\", the anonymous mapping \"anonymous memory\"",
					"after mshare_unmap and mshare_map again the range reads zeros"}, kNobody);
	run_2026_example("mshare_protect", {"PROT_READ | PROT_WRITE: stores work again"}, kNobody);
	run_2026_example("mshare_advise", {advise_line()}, kNobody);
	run_2026_example("mshare_set_owner", {"maps the region"}, kNobody);
}
