// first_touch: a process writes one byte into every 4 KiB page of a fresh
// anonymous region, through a window of the uffd data path (the runtime
// resolves first touches 2 MiB at a time) and through a plain shared memfd.
// Each sample runs in a process of its own; the variants alternate.
#include "common.hpp"

#include <cerrno>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

namespace msharefs::bench {

namespace {

// Figures of one sample, in this order.
enum { kAttachMs, kTouchMs, kMinor, kMajor, kFigures };

std::vector<double> touch_memfd(uint64_t size)
{
	const uint64_t t0 = now_ns();
	Fd fd(memfd_create("bench-first-touch", MFD_CLOEXEC));
	if (!fd || ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
		warn("memfd: %s", strerror(errno));
		return {};
	}
	Mapping m = map_shared_aligned(fd.get(), size, PROT_READ | PROT_WRITE);
	if (!m) {
		warn("mmap memfd: %s", strerror(errno));
		return {};
	}
	const double attach_ms = ms_since(t0);
	const Faults f0 = faults_self();
	const uint64_t t1 = now_ns();
	touch_write(m.get(), size);
	const double touch_ms = ms_since(t1);
	const Faults f1 = faults_self();
	return {attach_ms, touch_ms, static_cast<double>(f1.minor - f0.minor),
		static_cast<double>(f1.major - f0.major)};
}

std::vector<double> touch_window(uint64_t size, const std::string &name)
{
	std::string err;
	const uint64_t region = (size + kRegionAlign - 1) / kRegionAlign * kRegionAlign;
	Fd fd = create_region(name, region, size, &err);
	if (!fd) {
		warn("%s", err.c_str());
		return {};
	}
	const uint64_t t0 = now_ns();
	Mapping w = attach_window(fd.get(), &err);
	if (!w) {
		warn("%s", err.c_str());
		return {};
	}
	const double attach_ms = ms_since(t0);
	const Faults f0 = faults_self();
	const uint64_t t1 = now_ns();
	touch_write(w.get(), size);
	const double touch_ms = ms_since(t1);
	const Faults f1 = faults_self();
	w.reset();
	unlink(region_path(name).c_str());
	return {attach_ms, touch_ms, static_cast<double>(f1.minor - f0.minor),
		static_cast<double>(f1.major - f0.major)};
}

} // namespace

bool run_first_touch(const Config &cfg, Table *t)
{
	const uint64_t size = cfg.quick ? 256 * kMiB : kGiB;
	const int reps = cfg.quick ? 3 : 5;
	t->scenario = "first_touch";
	t->title = "first touch of a " + human_bytes(size) +
		   " anonymous region, one byte written per 4 KiB page (median of " + std::to_string(reps) +
		   " processes each)";

	std::string err;
	auto daemon = Daemon::start(cfg, "datapath=uffd,align=1G,backing=4k", &err);
	if (!daemon) {
		warn("first_touch: %s", err.c_str());
		return false;
	}
	std::vector<double> shm[kFigures], uffd[kFigures];
	bool failed = false;
	// Round -1 warms both paths up and is not counted. The variants take
	// turns going first.
	for (int rep = -1; rep < reps && !failed; rep++) {
		for (int k = 0; k < 2; k++) {
			const bool window = (k == 0) == (rep % 2 != 0);
			progress("first_touch: %s %s, %s", window ? "uffd window" : "memfd", human_bytes(size).c_str(),
				 rep < 0 ? "warm-up" : ("sample " + std::to_string(rep + 1)).c_str());
			const std::string name = "first-touch-" + std::to_string(rep + 1);
			auto v = measure_in_child(window ? "first_touch (uffd window)" : "first_touch (memfd)", [&] {
				return window ? touch_window(size, name) : touch_memfd(size);
			});
			if (!v || v->size() != kFigures) {
				failed = true;
				break;
			}
			if (rep < 0)
				continue;
			for (int i = 0; i < kFigures; i++)
				(window ? uffd : shm)[i].push_back((*v)[i]);
		}
	}
	if (failed)
		return false;

	const double pages = static_cast<double>(size / kPage);
	const std::string base = "memfd";
	t->rows.push_back(
		{"time to touch every page", median(uffd[kTouchMs]), base, median(shm[kTouchMs]), "ms", 1, ""});
	t->rows.push_back({"time per 4 KiB page", median(uffd[kTouchMs]) * 1000 / pages, base,
			   median(shm[kTouchMs]) * 1000 / pages, "us", 3, ""});
	t->rows.push_back({"minor faults", median(uffd[kMinor]), base, median(shm[kMinor]), "", 0, ""});
	t->rows.push_back({"major faults", median(uffd[kMajor]), base, median(shm[kMajor]), "", 0, ""});
	t->rows.push_back(
		{"attach (mmap) before the touch", median(uffd[kAttachMs]), base, median(shm[kAttachMs]), "ms", 2, ""});
	t->notes.push_back("figure: a window of a region on msharefsd -o datapath=uffd,align=1G,backing=4k, attached through "
			   "the uffd runtime (libmshare); baseline: memfd_create + mmap(MAP_SHARED), same size");
	t->notes.push_back("faults: minflt and majflt of the touching process (/proc/self/stat), all threads; the "
			   "runtime maps 2 MiB per fault it resolves");
	t->notes.push_back("attach of the window includes starting the runtime (userfaultfd, threads) and the "
			   "daemon handshake");
	return true;
}

} // namespace msharefs::bench
