// The documented examples, unchanged, on a real mount at /sys/fs/mshare with
// the upstream alignment (512 GiB).
#include <doctest/doctest.h>

#include "harness.hpp"

#include <cstdlib>
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

void run_pair(const std::string &creator, const std::string &attacher, const std::string &name)
{
	Daemon daemon(std::vector<std::string>{});
	REQUIRE(daemon.alignment() == MSHAREFS_DEFAULT_ALIGN);
	std::string creator_out;
	ChildResult creator_result;
	std::thread creator_thread([&] { creator_result = run_program({creator, name, "30"}, &creator_out, 60); });
	// Wait for the region to appear and be written, then attach.
	for (int i = 0; i < 500 && access(path(name).c_str(), F_OK) != 0; i++)
		usleep(10000);
	usleep(200000);
	std::string attacher_out;
	ChildResult attacher_result = run_program({attacher, name}, &attacher_out, 30);
	creator_thread.join();
	INFO("creator output:\n" << creator_out);
	INFO("attacher output:\n" << attacher_out);
	CHECK(attacher_result.exit_code == 0);
	CHECK(creator_result.exit_code == 0);
	CHECK(attacher_out.find("Hello from the mshare creator!") != std::string::npos);
	CHECK(creator_out.find("was here") != std::string::npos);
	// The creator unlinked the name and the last user is gone: memory freed.
	CHECK(access(path(name).c_str(), F_OK) != 0);
	CHECK(region_objects().empty());
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
