// Unit tests of the runtime's layout views (uffd-fallback/layout_views.cpp):
// a page set published the way msharefsd publishes it (a memfd of the full
// size, mapped writable), read through LayoutViews as an attacher reads it,
// with what the process maps checked in /proc/self/maps.
#include <doctest/doctest.h>

#include "layout_views.hpp"
#include "msharefs/published_layout.hpp"
#include "msharefs/region.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

using namespace msharefs;
using msharefs::runtime::LayoutViews;

namespace {

constexpr uint64_t kPage = 4096;
constexpr char kName[] = "msharefs-test-layout";

// The daemon's side: the full page set, written through a writable mapping.
class PageSet {
public:
	PageSet()
	{
		fd_ = memfd_create(kName, MFD_CLOEXEC);
		REQUIRE(fd_ >= 0);
		REQUIRE(ftruncate(fd_, kPublishedLayoutBytes) == 0);
		void *p = mmap(nullptr, kPublishedLayoutBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
		REQUIRE(p != MAP_FAILED);
		page_ = static_cast<PublishedLayoutPage *>(p);
	}
	~PageSet()
	{
		munmap(page_, kPublishedLayoutBytes);
		close(fd_);
	}
	// n mappings of one page each, every other page of the region.
	void publish(size_t n)
	{
		std::vector<Mapping> maps;
		for (size_t i = 0; i < n; i++) {
			Mapping m{};
			m.region_offset = 2 * kPage * i;
			m.size = kPage;
			m.object_id = i + 1;
			m.prot = PROT_READ | PROT_WRITE;
			maps.push_back(m);
		}
		REQUIRE(publish_layout(page_, 1ULL << 30, maps, 0, 0) == 0);
	}
	// What an attacher gets: a read-only descriptor of it.
	UniqueFd reader_fd() const
	{
		return UniqueFd(open(("/proc/self/fd/" + std::to_string(fd_)).c_str(), O_RDONLY | O_CLOEXEC));
	}
	uint64_t seq() const { return page_->seq.load(); }

private:
	int fd_ = -1;
	PublishedLayoutPage *page_ = nullptr;
};

// Bytes this process maps of the page set, read-only (the reader's views).
uint64_t viewed_bytes()
{
	uint64_t total = 0;
	std::ifstream maps("/proc/self/maps");
	std::string line;
	while (std::getline(maps, line)) {
		unsigned long lo = 0, hi = 0;
		char perms[8] = "";
		if (line.find(kName) != std::string::npos &&
		    sscanf(line.c_str(), "%lx-%lx %7s", &lo, &hi, perms) == 3 && perms[1] == '-')
			total += hi - lo;
	}
	return total;
}

} // namespace

TEST_CASE("layout views: one page for a small layout, a view that grows in a fault's lookup for a large one")
{
	PageSet set;
	set.publish(1);
	LayoutViews views;
	REQUIRE(views.adopt(set.reader_fd()) == 0);
	PublishedLookup r = views.lookup(100);
	REQUIRE(r.mapping);
	CHECK(r.mapping->object_id == 1);
	CHECK(viewed_bytes() == kPage);
	CHECK(published_capacity(kPage) == 84);

	// 500 mappings, met first by a lookup (as a fault meets them before
	// the window recomposes): it maps a view of twice as many and finds
	// the one asked; the one-page view goes.
	set.publish(500);
	r = views.lookup(2 * kPage * 400 + 5);
	REQUIRE(r.mapping);
	CHECK(r.mapping->object_id == 401);
	CHECK(r.needed_capacity == 0);
	CHECK(viewed_bytes() == published_layout_bytes(1000));
	CHECK(!views.lookup(2 * kPage * 400 + kPage).mapping); // the hole after it
	PublishedState state;
	REQUIRE(views.read(&state) == 0);
	CHECK(state.mappings.size() == 500);
	CHECK(state.mappings.back().object_id == 500);
	CHECK(views.seq() == set.seq());

	// Fewer again: the larger view reads them as well.
	set.publish(3);
	REQUIRE(views.read(&state) == 0);
	CHECK(state.mappings.size() == 3);
	CHECK(viewed_bytes() == published_layout_bytes(1000));

	// The largest layout there is: a view of the whole page set.
	set.publish(PublishedLayoutPage::kMaxMappings);
	r = views.lookup(2 * kPage * (PublishedLayoutPage::kMaxMappings - 1));
	REQUIRE(r.mapping);
	CHECK(r.mapping->object_id == PublishedLayoutPage::kMaxMappings);
	CHECK(viewed_bytes() == (kPublishedLayoutBytes + kPage - 1) / kPage * kPage);
}

TEST_CASE("layout views: attaching again and again keeps one view")
{
	PageSet set;
	set.publish(200);
	LayoutViews views;
	// A window relinks after each daemon restart, and a forked child
	// attaches again: more times than there are slots for views.
	for (int i = 0; i < 100; i++) {
		INFO("adoption " << i);
		REQUIRE(views.adopt(set.reader_fd()) == 0);
		PublishedState state;
		REQUIRE(views.read(&state) == 0);
		REQUIRE(state.mappings.size() == 200);
	}
	CHECK(viewed_bytes() == published_layout_bytes(400));
}

TEST_CASE("layout views: before the first handshake nothing is found; a descriptor the program replaced is not mapped")
{
	LayoutViews none;
	CHECK(!none.lookup(0).mapping);
	PublishedState state;
	CHECK(none.read(&state) == ENOENT);
	CHECK(none.seq() == 0);

	PageSet set;
	set.publish(1);
	LayoutViews views;
	UniqueFd fd = set.reader_fd();
	const int number = fd.get();
	REQUIRE(views.adopt(std::move(fd)) == 0);
	// The program closes the runtime's descriptor and opens another file,
	// which gets the same number.
	close(number);
	const int other = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	REQUIRE(other == number);
	set.publish(500);
	const PublishedLookup r = views.lookup(2 * kPage * 400);
	CHECK(!r.mapping);
	CHECK(r.needed_capacity == 500);
	CHECK(views.read(&state) == ENOMEM);
	CHECK(viewed_bytes() == kPage);
}
