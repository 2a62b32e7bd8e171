// bandwidth: memcpy through an attached window against the same copy through
// plain shared memory (memfd, 4 KiB pages) and hugetlb memory. The memory is
// populated before timing: this is the steady state, after first touch.
#include "common.hpp"

#include <cerrno>
#include <cstring>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

namespace msharefs::bench {

namespace {

// GB/s of copying `size` bytes from the first half of p to the second,
// median of `rounds`.
double copy_rate(char *p, uint64_t size, int rounds)
{
	const uint64_t half = size / 2;
	touch_write(p, size);
	std::vector<double> rates;
	for (int i = 0; i < rounds; i++) {
		const uint64_t t0 = now_ns();
		memcpy(p + half, p, half);
		const double s = static_cast<double>(now_ns() - t0) / 1e9;
		rates.push_back(static_cast<double>(half) / s / 1e9);
	}
	if (p[half] != p[0])
		return NAN;
	return median(rates);
}

std::vector<double> memfd_rate(uint64_t size, int rounds, bool huge)
{
	Fd fd(memfd_create("bench-bandwidth", MFD_CLOEXEC | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0)));
	if (!fd || ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
		warn("memfd%s: %s", huge ? " hugetlb" : "", strerror(errno));
		return {};
	}
	Mapping m = map_shared_aligned(fd.get(), size, PROT_READ | PROT_WRITE);
	if (!m)
		return {};
	return {copy_rate(m.get(), size, rounds)};
}

std::vector<double> window_rate(uint64_t size, int rounds)
{
	std::string err;
	Fd fd = create_region("bandwidth", kRegionAlign, size, &err);
	Mapping w = fd ? attach_window(fd.get(), &err) : Mapping();
	if (!w) {
		warn("%s", err.c_str());
		return {};
	}
	const double r = copy_rate(w.get(), size, rounds);
	w.reset();
	unlink(region_path("bandwidth").c_str());
	return {r};
}

} // namespace

bool run_bandwidth(const Config &cfg, Table *t)
{
	const uint64_t size = cfg.quick ? 256 * kMiB : kGiB;
	const int rounds = cfg.quick ? 5 : 20;
	t->scenario = "bandwidth";
	t->title = "memcpy of " + human_bytes(size / 2) + " within populated shared memory, median of " +
		   std::to_string(rounds);
	Setting nr_hugepages("/proc/sys/vm/nr_hugepages");
	const long need = static_cast<long>(size / (2 * kMiB));
	const long total = meminfo_kb("HugePages_Total");
	if (total >= 0 && meminfo_kb("HugePages_Free") < need)
		nr_hugepages.set(std::to_string(total + need));
	progress("bandwidth: memfd 4K");
	auto plain = measure_in_child("bandwidth memfd", [&] { return memfd_rate(size, rounds, false); });
	progress("bandwidth: memfd hugetlb");
	auto huge = measure_in_child("bandwidth hugetlb", [&] { return memfd_rate(size, rounds, true); });
	const double base = plain && !plain->empty() ? (*plain)[0] : NAN;
	t->rows.push_back({"memfd hugetlb", huge && !huge->empty() ? (*huge)[0] : NAN, "memfd 4K", base, "GB/s", 2,
			   ""});
	bool ok = plain && !plain->empty();
	for (const char *backing : {"4k", "hugetlb"}) {
		std::string err;
		auto daemon = Daemon::start(cfg, std::string("datapath=uffd,align=1G,backing=") + backing, &err);
		std::vector<double> r;
		if (daemon) {
			progress("bandwidth: uffd window, backing=%s", backing);
			auto v = measure_in_child("bandwidth window", [&] { return window_rate(size, rounds); });
			if (v)
				r = *v;
		}
		t->rows.push_back({std::string("uffd window, backing=") + backing, r.empty() ? NAN : r[0], "memfd 4K",
				   base, "GB/s", 2, daemon ? "" : err});
		ok = ok && (!r.empty() || std::string(backing) != "4k");
	}
	t->notes.push_back("the window is accessed natively: after first touch no fault or daemon round trip");
	return ok;
}

} // namespace msharefs::bench
