// Backing of anonymous memory on the uffd data path (msharefsd -o backing=):
// hugetlbfs when the huge page pool can reserve it, shmem THP, or 4 KiB
// pages; what each costs an extra attacher in page tables (VmPTE), and the
// 4 KiB granularity of UNMAP and PROTECT kept on huge pages. This binary runs
// under libmshare-preload.so against a real msharefsd; the huge page pool
// is the machine's (/proc/sys/vm/nr_hugepages, restored afterwards).
#include "harness.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <fstream>
#include <string>
#include <sys/ioctl.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <vector>

using namespace msharefs::test;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kHuge = 2 * kMiB;
constexpr uint64_t kStart = 2 * kTiB;
constexpr uint64_t kSize = kGiB;
constexpr uint32_t kRW = PROT_READ | PROT_WRITE;
constexpr uint32_t kAnon = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;

long meminfo_kib(const char *field)
{
	std::ifstream in("/proc/meminfo");
	std::string line;
	while (std::getline(in, line))
		if (line.rfind(field, 0) == 0)
			return std::stol(line.substr(std::strlen(field)));
	return -1;
}

std::string backing_of(int fd)
{
	char value[64] = {};
	const ssize_t n = fgetxattr(fd, "user.mshare.backing", value, sizeof(value) - 1);
	return n < 0 ? std::string("error: ") + strerror(errno) : std::string(value, static_cast<size_t>(n));
}

// Sets the huge page pool for the test's lifetime.
class HugePagePool {
public:
	explicit HugePagePool(long pages) : saved_(read())
	{
		std::ofstream("/proc/sys/vm/nr_hugepages") << pages << "\n";
	}
	~HugePagePool() { std::ofstream("/proc/sys/vm/nr_hugepages") << saved_ << "\n"; }
	static long read()
	{
		long n = 0;
		std::ifstream("/proc/sys/vm/nr_hugepages") >> n;
		return n;
	}

private:
	long saved_;
};

// Reads every page of the window of region `name` in this process.
int attach_and_read(const std::string &name, Window *w)
{
	Fd fd(open(path(name).c_str(), O_RDWR));
	*w = Window(fd.get());
	if (!*w)
		return 2;
	volatile uint64_t sum = 0;
	for (uint64_t off = 0; off < kSize; off += kPage)
		sum = sum + static_cast<unsigned char>(w->at(off)[0]);
	return 0;
}

// Page-table kilobytes an extra attacher pays for the window, from the
// machine's PageTables (VmPTE counts a shared PMD table in every process
// that uses it; PageTables counts the pages once): while a first attacher
// holds the window, a second attaches and reads every page. The least of
// three tries, so that other activity on the machine does not count.
long attacher_page_table_kib(const std::string &name)
{
	long best = -1;
	for (int attempt = 0; attempt < 3; attempt++) {
		// ready: children to parent; hold: the first ends at its EOF;
		// go: the second attaches at the first byte, ends at EOF.
		int ready[2], hold[2], go[2];
		if (pipe(ready) < 0 || pipe(hold) < 0 || pipe(go) < 0)
			return -1;
		pid_t first = spawn([&] {
			close(hold[1]);
			close(go[1]);
			Window w;
			if (int err = attach_and_read(name, &w))
				return err;
			char c = 'r';
			return write(ready[1], &c, 1) == 1 && read(hold[0], &c, 1) == 0 ? 0 : 3;
		});
		char c;
		if (read(ready[0], &c, 1) != 1)
			return -1;
		pid_t second = spawn([&] {
			close(hold[1]);
			close(go[1]);
			char r = 'r';
			if (write(ready[1], &r, 1) != 1 || read(go[0], &r, 1) != 1)
				return 3;
			Window w;
			if (int err = attach_and_read(name, &w))
				return err;
			return write(ready[1], &r, 1) == 1 && read(go[0], &r, 1) == 0 ? 0 : 3;
		});
		long before = 0, after = 0;
		if (read(ready[0], &c, 1) == 1) {
			before = static_cast<long>(settled_page_tables() / 1024);
			if (write(go[1], "g", 1) == 1 && read(ready[0], &c, 1) == 1)
				after = static_cast<long>(settled_page_tables() / 1024);
		}
		close(go[1]);
		close(hold[1]);
		const bool ok = wait_for(second, 60).exit_code == 0 && wait_for(first, 60).exit_code == 0;
		for (int fd : {ready[0], ready[1], hold[0], go[0]})
			close(fd);
		if (!ok || after == 0)
			return -1;
		if (best < 0 || after - before < best)
			best = std::max(0L, after - before);
	}
	return best;
}

void fill(char *p, uint64_t size, char seed)
{
	for (uint64_t off = 0; off < size; off += kPage)
		p[off] = static_cast<char>(seed + off / kPage);
}

bool holds(const char *p, uint64_t size, char seed)
{
	for (uint64_t off = 0; off < size; off += kPage)
		if (p[off] != static_cast<char>(seed + off / kPage))
			return false;
	return true;
}

// True if storing to p raises SIGSEGV in this process.
bool store_faults(char *p)
{
	return fault_of([p] { *reinterpret_cast<volatile char *>(p) = 1; }).sig == SIGSEGV;
}

} // namespace

TEST_CASE("backing: 4 KiB pages cost each attacher about 2 MiB of page tables per GiB")
{
	Daemon d({"align=1G", "backing=4k"});
	Fd fd(create_region("small", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	CHECK(backing_of(fd.get()) == "4k");
	Window w(fd.get());
	REQUIRE(w);
	fill(w.get(), kSize, 1);
	w.reset(); // the attachers are forked without a window
	const long kib = attacher_page_table_kib("small");
	MESSAGE("4k: an extra attacher of 1 GiB costs " << kib << " KiB of page tables");
	CHECK(kib >= 2000);
}

TEST_CASE("backing: shmem THP maps the window by PMD entries")
{
	Daemon d({"align=1G", "backing=thp"});
	Fd fd(create_region("thp", kStart, kSize));
	REQUIRE(fd.get() >= 0);
	CHECK(backing_of(fd.get()) == "thp");
	Window w(fd.get());
	REQUIRE(w);
	fill(w.get(), kSize, 2);
	w.reset();
	const long kib = attacher_page_table_kib("thp");
	MESSAGE("thp: an extra attacher of 1 GiB costs " << kib << " KiB of page tables");
	// No PTE table for the window (those would be 2 MiB): its PUD and PMD
	// table pages, and at most two more of the runtime's own small mappings
	// for the window (where they land decides whether they need a new table).
	CHECK(kib >= 0);
	CHECK(kib <= 16);
	Window again(fd.get());
	REQUIRE(again);
	CHECK(holds(again.get(), kSize, 2));
}

TEST_CASE("backing: hugetlbfs when the pool can reserve it; 4 KiB edits still work")
{
	const long free_before = meminfo_kib("HugePages_Free:");
	HugePagePool pool(HugePagePool::read() + 600);
	REQUIRE(meminfo_kib("HugePages_Free:") >= free_before + 512);
	const long pool_free = meminfo_kib("HugePages_Free:");
	{
		Daemon d({"align=1G"}); // backing=auto
		Fd fd(create_region("huge", kStart, kSize));
		REQUIRE(fd.get() >= 0);
		CHECK(backing_of(fd.get()) == "hugetlb");
		Window first(fd.get());
		REQUIRE(first);
		fill(first.get(), kSize, 3);
		first.reset();
		const long kib = attacher_page_table_kib("huge");
		MESSAGE("hugetlb: an extra attacher of 1 GiB costs " << kib << " KiB of page tables");
		CHECK(kib >= 0);
		CHECK(kib <= 8);

		// A writer stores into the huge page that an UNMAP of one of its
		// 4 KiB pages splits, each store once (a store lost to the move
		// is not made again), paced to last across the UNMAP: none may be
		// lost. Slots: 63 cache lines of every page but the unmapped one
		// (offset 0 keeps the fill pattern).
		auto *started = static_cast<std::atomic<int> *>(
			mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
		REQUIRE(started != MAP_FAILED);
		new (started) std::atomic<int>{0};
		std::vector<uint64_t> slots;
		for (uint64_t page = 0; page < kHuge / kPage; page++)
			for (uint64_t line = 1; line < kPage / 64 && page != 5; line++)
				slots.push_back(page * kPage + line * 64);
		pid_t writer = spawn([&] {
			Fd own(open(path("huge").c_str(), O_RDWR));
			Window aw(own.get());
			if (!aw)
				return 2;
			for (size_t i = 0; i < slots.size(); i++) {
				*reinterpret_cast<volatile uint64_t *>(aw.at(slots[i])) = i + 1;
				if (i == 1000)
					started->store(1);
				timespec t0{}, t{};
				clock_gettime(CLOCK_MONOTONIC, &t0);
				do
					clock_gettime(CLOCK_MONOTONIC, &t);
				while ((t.tv_sec - t0.tv_sec) * 1000000000L + t.tv_nsec - t0.tv_nsec < 5000);
			}
			return 0;
		});
		Window w(fd.get());
		REQUIRE(w);
		while (!started->load())
			usleep(1000);
		CHECK(unmap(fd.get(), kStart + 5 * kPage, kPage) == 0);
		CHECK(backing_of(fd.get()) == "4k+hugetlb");
		const ChildResult wr = wait_for(writer, 60);
		INFO("writer: exit " << wr.exit_code << " signal " << wr.signal << " timed out " << wr.timed_out);
		REQUIRE(wr.exit_code == 0);
		uint64_t lost = 0;
		for (size_t i = 0; i < slots.size(); i++)
			if (*reinterpret_cast<uint64_t *>(w.at(slots[i])) != i + 1)
				lost++;
		CHECK(lost == 0);
		munmap(started, kPage);

		// The neighbours of the unmapped page keep their data; it faults.
		CHECK(holds(w.at(kHuge), kSize - kHuge, static_cast<char>(3 + kHuge / kPage)));
		CHECK(w.at(4 * kPage)[0] == static_cast<char>(3 + 4));
		CHECK(w.at(6 * kPage)[0] == static_cast<char>(3 + 6));
		CHECK(read_faults(w.at(5 * kPage)));
		// PROTECT of one 4 KiB page inside another huge page.
		char *ro = w.at(100 * kHuge + 7 * kPage);
		REQUIRE(!store_faults(ro));
		mshare_protect p{kStart + 100 * kHuge + 7 * kPage, kPage, PROT_READ, 0};
		CHECK(ioctl(fd.get(), MSHAREFS_PROTECT, &p) == 0);
		CHECK(store_faults(ro));
		CHECK(!store_faults(ro + kPage));
		CHECK(!store_faults(ro - kPage));
		CHECK(backing_of(fd.get()) == "4k+hugetlb+4k+hugetlb");
		CHECK(holds(w.at(101 * kHuge), kSize - 101 * kHuge, static_cast<char>(3 + 101 * kHuge / kPage)));
		w.reset();
		fd.reset();
		CHECK(unlink(path("huge").c_str()) == 0);
	}
	// Every huge page goes back to the pool.
	CHECK(meminfo_kib("HugePages_Free:") == pool_free);
}
