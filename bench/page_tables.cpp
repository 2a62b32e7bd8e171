// page_tables: page-table memory each extra attacher of a populated region
// costs. A coordinator populates the region; N processes (forked idle
// before, so that their own page tables are counted in the "before" figure)
// then map it and read every page. Measured: the machine's PageTables
// (/proc/meminfo, folded with vm.stat_refresh) before and after, divided by
// N, and each process's VmPTE growth. Variants: plain memfd (4 KiB pages,
// the baseline), memfd with shmem THP, memfd on hugetlb (2 MiB pages, 1 GiB
// aligned: mainline shares the PMD tables), and a window of the uffd data
// path for each value of the daemon's backing= option.
#include "common.hpp"

#include <cerrno>
#include <cstring>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

namespace msharefs::bench {

namespace {

constexpr int kTimeoutMs = 300 * 1000;
constexpr uint64_t kSize = kGiB;

enum class Source { memfd_4k, memfd_thp, memfd_hugetlb, window };

// Figures returned by one measurement, in this order.
enum { kPerAttacherKb, kVmPteKb, kFaults, kShmemHugeKb, kHugetlbKb, kFigures };

// Huge pages of the hugetlb pool in use (kB).
long hugetlb_used_kb()
{
	return (meminfo_kb("HugePages_Total") - meminfo_kb("HugePages_Free")) * meminfo_kb("Hugepagesize");
}

std::vector<double> measure(Source src, int attachers, const std::string &name)
{
	std::string err;
	Fd fd;
	if (src == Source::window) {
		fd = create_region(name, kSize, kSize, &err);
		if (!fd) {
			warn("%s", err.c_str());
			return {};
		}
	} else {
		unsigned flags = MFD_CLOEXEC;
		if (src == Source::memfd_hugetlb)
			flags |= MFD_HUGETLB | MFD_HUGE_2MB;
		fd.reset(memfd_create("bench-page-tables", flags));
		if (!fd || ftruncate(fd.get(), static_cast<off_t>(kSize)) != 0) {
			warn("memfd: %s", strerror(errno));
			return {};
		}
	}
	const long shmem_huge_before = meminfo_kb("ShmemHugePages");
	const long hugetlb_before = hugetlb_used_kb();

	// The attachers, idle until told to map and read.
	Pipe go, ack, quit;
	Crew crew;
	for (int i = 0; i < attachers; i++) {
		crew.add(spawn([&] {
			if (go.recv() != 'g')
				return 0;
			std::string why;
			Mapping m = src == Source::window ? attach_window(fd.get(), &why)
							  : map_shared_aligned(fd.get(), kSize, PROT_READ | PROT_WRITE);
			if (!m) {
				fprintf(stderr, "mshare-bench: attacher: %s\n",
					why.empty() ? strerror(errno) : why.c_str());
				ack.send('!');
				return 1;
			}
			const Faults f0 = faults_self();
			touch_read(m.get(), kSize);
			const Faults f1 = faults_self();
			const double faults = static_cast<double>(f1.minor - f0.minor + f1.major - f0.major);
			// One message per attacher: a byte and its fault count.
			char msg[1 + sizeof(double)] = {'a'};
			memcpy(msg + 1, &faults, sizeof(faults));
			ack.send_all(msg, sizeof(msg));
			quit.recv();
			return 0;
		}));
	}
	if (crew.size() != static_cast<size_t>(attachers))
		return {};

	// The coordinator populates the region (as its owner for a window).
	Mapping own = src == Source::window ? attach_window(fd.get(), &err)
					    : map_shared_aligned(fd.get(), kSize, PROT_READ | PROT_WRITE);
	if (!own) {
		warn("populating: %s", err.empty() ? strerror(errno) : err.c_str());
		return {};
	}
	touch_write(own.get(), kSize);
	const long shmem_huge_after = meminfo_kb("ShmemHugePages");
	const long hugetlb_after = hugetlb_used_kb();

	std::vector<long> pte_before;
	for (size_t i = 0; i < crew.size(); i++)
		pte_before.push_back(status_kb(crew[i], "VmPTE"));
	const long tables_before = meminfo_kb("PageTables");
	for (int i = 0; i < attachers; i++)
		go.send('g');
	std::vector<double> faults;
	for (int i = 0; i < attachers; i++) {
		char msg[1 + sizeof(double)] = {};
		if (!ack.recv_all(msg, 1, kTimeoutMs) || msg[0] != 'a' ||
		    !ack.recv_all(msg + 1, sizeof(double), kTimeoutMs)) {
			warn("page_tables: an attacher failed");
			return {};
		}
		double f;
		memcpy(&f, msg + 1, sizeof(f));
		faults.push_back(f);
	}
	const long tables_after = meminfo_kb("PageTables");
	std::vector<double> pte_growth;
	for (size_t i = 0; i < crew.size(); i++)
		pte_growth.push_back(static_cast<double>(status_kb(crew[i], "VmPTE") - pte_before[i]));
	for (int i = 0; i < attachers; i++)
		quit.send('q');
	if (!crew.join("page_tables attachers"))
		return {};
	own.reset();
	if (src == Source::window)
		unlink(region_path(name).c_str());
	return {static_cast<double>(tables_after - tables_before) / attachers, median(pte_growth), median(faults),
		static_cast<double>(shmem_huge_after - shmem_huge_before),
		static_cast<double>(hugetlb_after - hugetlb_before)};
}

struct Result {
	std::string label;
	std::vector<double> figures; // empty: n/a
	std::string note;
};

} // namespace

bool run_page_tables(const Config &cfg, Table *t)
{
	const int attachers = cfg.quick ? 4 : 16;
	t->scenario = "page_tables";
	t->title = "page tables per extra attacher of a populated " + human_bytes(kSize) + " region, " +
		   std::to_string(attachers) + " attachers each reading every page";

	// Huge pages for the hugetlb variants, THP only where asked for (the
	// 4 KiB variants must not get it).
	Setting nr_hugepages("/proc/sys/vm/nr_hugepages");
	const long free_huge = meminfo_kb("HugePages_Free");
	const long total_huge = meminfo_kb("HugePages_Total");
	const long need = static_cast<long>(kSize / (2 * kMiB));
	bool huge_ok = free_huge >= need;
	if (!huge_ok && total_huge >= 0) {
		progress("page_tables: vm.nr_hugepages %ld -> %ld (restored afterwards)", total_huge,
			 total_huge + need - free_huge);
		nr_hugepages.set(std::to_string(total_huge + need - free_huge));
		huge_ok = meminfo_kb("HugePages_Free") >= need;
	}
	Setting shmem_thp("/sys/kernel/mm/transparent_hugepage/shmem_enabled");

	std::vector<Result> results;
	auto run = [&](const std::string &label, Source src, const std::string &name) {
		progress("page_tables: %s, %d attachers", label.c_str(), attachers);
		auto v = measure_in_child("page_tables " + label, [&] { return measure(src, attachers, name); });
		Result r{label, {}, ""};
		if (!v || v->size() != kFigures) {
			r.note = "failed";
			return r;
		}
		// Which pages the region got, from the machine's counters.
		r.figures = *v;
		const double half = static_cast<double>(kSize / kKiB) / 2;
		r.note = r.figures[kHugetlbKb] >= half	   ? "on hugetlb pages"
			 : r.figures[kShmemHugeKb] >= half ? "on shmem THP"
							   : "on 4 KiB pages";
		return r;
	};

	results.push_back(run("memfd 4K", Source::memfd_4k, ""));
	if (shmem_thp.set("always")) {
		results.push_back(run("memfd THP", Source::memfd_thp, ""));
		shmem_thp.restore();
	} else {
		results.push_back({"memfd THP", {}, "cannot set transparent_hugepage/shmem_enabled"});
	}
	if (huge_ok)
		results.push_back(run("memfd hugetlb", Source::memfd_hugetlb, ""));
	else
		results.push_back({"memfd hugetlb", {}, "fewer than " + std::to_string(need) + " free huge pages"});

	for (const std::string &backing : cfg.backings) {
		const std::string label = "uffd window, backing=" + backing;
		std::string options = "datapath=uffd,align=1G";
		if (backing != "default")
			options += ",backing=" + backing;
		// The THP backing may rely on the system setting.
		const bool thp = backing == "thp" && shmem_thp.set("always");
		std::string err;
		if (auto daemon = Daemon::start(cfg, options, &err)) {
			results.push_back(run(label, Source::window, "page-tables"));
		} else {
			progress("page_tables: backing=%s: %s", backing.c_str(), err.c_str());
			if (err.find("unknown option") != std::string::npos)
				err = "the daemon does not know backing=" + backing;
			results.push_back({label, {}, err});
		}
		if (thp)
			shmem_thp.restore();
	}
	nr_hugepages.restore();

	const Result &base = results.front();
	auto fig = [](const Result &r, int i) { return r.figures.empty() ? NAN : r.figures[i]; };
	for (const Result &r : results)
		if (&r != &base)
			t->rows.push_back({"PageTables per attacher: " + r.label, fig(r, kPerAttacherKb), base.label,
					   fig(base, kPerAttacherKb), "kB", 0, r.note});
	for (const Result &r : results)
		if (&r != &base)
			t->rows.push_back({"VmPTE growth per attacher: " + r.label, fig(r, kVmPteKb), base.label,
					   fig(base, kVmPteKb), "kB", 0, r.note});
	for (const Result &r : results)
		if (&r != &base)
			t->rows.push_back({"faults to read every page: " + r.label, fig(r, kFaults), base.label,
					   fig(base, kFaults), "", 0, r.note});
	t->notes.push_back("PageTables: /proc/meminfo delta around the attachers' mapping and reading, divided by "
			   "N; machine-wide, so other activity on the machine adds noise");
	t->notes.push_back("VmPTE: /proc/PID/status growth of each attacher (median); it counts shared PMD tables "
			   "in every process that uses them");
	t->notes.push_back("THP: transparent_hugepage/shmem_enabled=always during that variant (and backing=thp) "
			   "only; hugetlb: memfd_create(MFD_HUGETLB), 1 GiB aligned mappings, vm.nr_hugepages raised "
			   "if needed; both restored afterwards");
	t->notes.push_back("note column: the pages the region got (ShmemHugePages and huge pages in use, "
			   "/proc/meminfo deltas while it was populated)");
	t->notes.push_back("window variants: msharefsd -o datapath=uffd,align=1G[,backing=X], attachers through the "
			   "uffd runtime; a backing the daemon refuses is n/a (its message is on stderr)");
	bool ok = !base.figures.empty();
	for (const Result &r : results)
		if (r.label.rfind("uffd window, backing=default", 0) == 0)
			ok = ok && !r.figures.empty();
	return ok;
}

} // namespace msharefs::bench
