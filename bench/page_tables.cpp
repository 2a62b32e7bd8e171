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

#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/offset_ptr.hpp>

#include <cerrno>
#include <cstring>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

namespace msharefs::bench {

namespace {

constexpr int kTimeoutMs = 300 * 1000;
constexpr uint64_t kSize = kGiB;

enum class Source { memfd_4k, memfd_thp, memfd_hugetlb, boost, window };

namespace bip = boost::interprocess;
constexpr const char *kBoostSegment = "mshare-bench-boost";

// A Boost.Interprocess managed_shared_memory segment with one block that
// fills it, as a program would allocate its shared buffer; the attachers
// find the block by name.
struct BoostBuffer {
	std::unique_ptr<bip::managed_shared_memory> segment;
	char *data = nullptr;
	size_t size = 0;

	static BoostBuffer create(uint64_t size)
	{
		BoostBuffer b;
		bip::shared_memory_object::remove(kBoostSegment);
		b.segment = std::make_unique<bip::managed_shared_memory>(bip::create_only, kBoostSegment, size);
		b.size = b.segment->get_free_memory() - 64 * kKiB;
		b.data = static_cast<char *>(b.segment->allocate(b.size));
		b.segment->construct<bip::offset_ptr<char>>("buffer")(b.data);
		return b;
	}
	static BoostBuffer open()
	{
		BoostBuffer b;
		b.segment = std::make_unique<bip::managed_shared_memory>(bip::open_only, kBoostSegment);
		auto found = b.segment->find<bip::offset_ptr<char>>("buffer");
		if (found.first) {
			b.data = found.first->get();
			b.size = b.segment->get_size() - static_cast<size_t>(b.data - static_cast<char *>(b.segment->get_address()));
		}
		return b;
	}
};

// Figures returned by one measurement, in this order.
enum { kPerAttacherKb, kVmPteKb, kFaults, kShmemHugeKb, kHugetlbKb, kFigures };

// Huge pages of the hugetlb pool in use (kB).
long hugetlb_used_kb()
{
	return (meminfo_kb("HugePages_Total") - meminfo_kb("HugePages_Free")) * meminfo_kb("Hugepagesize");
}

// Maps the source's memory for one process: the whole of it for memfd and
// windows, the shared buffer for Boost.
struct View {
	Mapping mapping;
	BoostBuffer boost;
	char *data() const { return boost.segment ? boost.data : mapping.get(); }
	size_t length(uint64_t size) const { return boost.segment ? boost.size : size; }
	bool ok() const { return boost.segment ? boost.data != nullptr : mapping.ok(); }
};

View map_source(Source src, int fd, uint64_t size, bool create, std::string *why)
{
	View v;
	try {
		if (src == Source::boost)
			v.boost = create ? BoostBuffer::create(size) : BoostBuffer::open();
		else if (src == Source::window)
			v.mapping = attach_window(fd, why);
		else
			v.mapping = map_shared_aligned(fd, size, PROT_READ | PROT_WRITE, kRegionAlign,
						       src == Source::memfd_hugetlb ? MAP_NORESERVE : 0);
	} catch (const bip::interprocess_exception &e) {
		*why = std::string("Boost.Interprocess: ") + e.what();
	}
	return v;
}

// Figures of one run: `attachers` processes map a populated region of `size`
// bytes and read one byte per `stride` (every page table that reading every
// page would need, with less memory).
std::vector<double> measure(Source src, int attachers, const std::string &name, uint64_t size = kSize,
			    uint64_t stride = kPage)
{
	std::string err;
	Fd fd;
	if (src == Source::window) {
		fd = create_region(name, size, size, &err);
		if (!fd) {
			warn("%s", err.c_str());
			return {};
		}
	} else {
		unsigned flags = MFD_CLOEXEC;
		if (src == Source::memfd_hugetlb)
			flags |= MFD_HUGETLB | MFD_HUGE_2MB;
		if (src != Source::boost)
			fd.reset(memfd_create("bench-page-tables", flags));
		if (src != Source::boost && (!fd || ftruncate(fd.get(), static_cast<off_t>(size)) != 0)) {
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
			View m = map_source(src, fd.get(), size, false, &why);
			if (!m.ok()) {
				fprintf(stderr, "mshare-bench: attacher: %s\n",
					why.empty() ? strerror(errno) : why.c_str());
				ack.send('!');
				return 1;
			}
			const Faults f0 = faults_self();
			touch_read(m.data(), m.length(size), stride);
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
	View own = map_source(src, fd.get(), size, true, &err);
	if (!own.ok()) {
		warn("populating: %s", err.empty() ? strerror(errno) : err.c_str());
		return {};
	}
	touch_write(own.data(), own.length(size), 1, stride);
	const long shmem_huge_after = meminfo_kb("ShmemHugePages");
	const long hugetlb_after = hugetlb_used_kb();

	std::vector<long> pte_before;
	for (size_t i = 0; i < crew.size(); i++)
		pte_before.push_back(status_kb(crew[i], "VmPTE"));
	const long tables_before = settled_meminfo_kb("PageTables");
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
	const long tables_after = settled_meminfo_kb("PageTables");
	std::vector<double> pte_growth;
	for (size_t i = 0; i < crew.size(); i++)
		pte_growth.push_back(static_cast<double>(status_kb(crew[i], "VmPTE") - pte_before[i]));
	for (int i = 0; i < attachers; i++)
		quit.send('q');
	if (!crew.join("page_tables attachers"))
		return {};
	own = View{};
	if (src == Source::window)
		unlink(region_path(name).c_str());
	if (src == Source::boost)
		bip::shared_memory_object::remove(kBoostSegment);
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
	results.push_back(run("Boost.Interprocess managed_shared_memory", Source::boost, ""));
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

namespace {

// One line of the sweeps: a source, how it is set up, and how far it goes.
struct SweepVariant {
	std::string label;
	Source src;
	std::string backing; // windows: the daemon's backing=
	uint64_t stride;     // bytes between touches: one per page table needed
	uint64_t max_size;   // larger sizes are n/a (memory or huge page pool)
	std::string limit_note;
};

std::vector<SweepVariant> sweep_variants()
{
	return {
		{"memfd 4K", Source::memfd_4k, "", 2 * kMiB, 16 * kGiB, ""},
		{"Boost.Interprocess", Source::boost, "", 2 * kMiB, 16 * kGiB, ""},
		{"memfd THP", Source::memfd_thp, "", kGiB, 16 * kGiB, ""},
		{"memfd hugetlb", Source::memfd_hugetlb, "", kGiB, 16 * kGiB, ""},
		{"uffd window 4k", Source::window, "4k", 2 * kMiB, 8 * kGiB,
		 "the runtime fills 2 MiB per fault: 8 GiB of memory at most"},
		{"uffd window thp", Source::window, "thp", kGiB, 16 * kGiB, ""},
		{"uffd window hugetlb", Source::window, "hugetlb", kGiB, 2 * kGiB,
		 "the daemon reserves the whole mapping in the huge page pool: 2 GiB at most"},
	};
}

// Runs every variant at every (size, attachers) point; figures[v][p] is
// the PageTables growth per extra attacher in kB (NaN: n/a).
std::vector<std::vector<double>> sweep(const Config &cfg, const std::vector<SweepVariant> &variants,
				       const std::vector<std::pair<uint64_t, int>> &points, const char *scenario)
{
	std::vector<std::vector<double>> figures(variants.size(), std::vector<double>(points.size(), NAN));
	Setting nr_hugepages("/proc/sys/vm/nr_hugepages");
	Setting shmem_thp("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
	uint64_t largest = 0;
	for (const auto &p : points)
		largest = std::max(largest, p.first);
	// One huge page per GiB touched, plus a 2 GiB window reserved whole.
	const long need = static_cast<long>(std::max<uint64_t>(largest / kGiB, 1024)) + 16;
	const long total = meminfo_kb("HugePages_Total");
	if (total >= 0 && meminfo_kb("HugePages_Free") < need)
		nr_hugepages.set(std::to_string(total + need));
	const size_t steps = variants.size() * points.size();
	size_t step = 0;
	for (size_t v = 0; v < variants.size(); v++) {
		const SweepVariant &var = variants[v];
		std::unique_ptr<Daemon> daemon;
		if (var.src == Source::window) {
			std::string err;
			daemon = Daemon::start(cfg, "datapath=uffd,align=1G,backing=" + var.backing, &err);
			if (!daemon) {
				warn("%s: %s: %s", scenario, var.label.c_str(), err.c_str());
				step += points.size();
				continue;
			}
		}
		const bool thp = (var.src == Source::memfd_thp || var.backing == "thp") && shmem_thp.set("always");
		for (size_t p = 0; p < points.size(); p++) {
			const auto [size, attachers] = points[p];
			step++;
			if (size > var.max_size)
				continue;
			progress("[%zu/%zu] %s: %s, %s, %d attachers", step, steps, scenario, var.label.c_str(),
				 human_bytes(size).c_str(), attachers);
			auto r = measure_in_child(std::string(scenario) + " " + var.label, [&] {
				return measure(var.src, attachers, "sweep", size, var.stride);
			});
			if (r && r->size() == kFigures)
				figures[v][p] = (*r)[kPerAttacherKb];
		}
		if (thp)
			shmem_thp.restore();
	}
	return figures;
}

void sweep_notes(Table *t, const std::vector<SweepVariant> &variants)
{
	t->notes.push_back("PageTables (/proc/meminfo) growth while the attachers map and read, divided by their "
			   "number; the region is touched once per page table it needs (every 2 MiB for 4 KiB pages, "
			   "every 1 GiB for huge pages), so memory stays small and the page tables are those of a "
			   "fully populated region");
	for (const auto &v : variants)
		if (!v.limit_note.empty())
			t->notes.push_back(v.label + ": " + v.limit_note);
}

bool fill_sweep_table(Table *t, const std::vector<SweepVariant> &variants,
		      const std::vector<std::pair<uint64_t, int>> &points, const std::vector<std::vector<double>> &fig,
		      bool by_size)
{
	for (size_t v = 0; v < variants.size(); v++) {
		std::vector<std::pair<double, double>> line;
		for (size_t p = 0; p < points.size(); p++) {
			const auto [size, attachers] = points[p];
			const double x = by_size ? static_cast<double>(size / kGiB) : attachers;
			line.emplace_back(x, fig[v][p]);
			if (v == 0)
				continue;
			t->rows.push_back({variants[v].label + ", " + human_bytes(size) + ", " + std::to_string(attachers) +
						   " attachers",
					   fig[v][p], variants[0].label, fig[0][p], "kB", 1,
					   std::isnan(fig[v][p]) ? "n/a" : ""});
		}
		t->series.emplace_back(variants[v].label, std::move(line));
	}
	t->y_label = "page tables per extra attacher (kB)";
	t->x_label = by_size ? "region size (GiB)" : "attachers";
	bool ok = true;
	for (size_t p = 0; p < points.size(); p++)
		ok = ok && !std::isnan(fig[0][p]);
	return ok;
}

} // namespace

bool run_pt_size(const Config &cfg, Table *t)
{
	const int attachers = cfg.quick ? 4 : 16;
	std::vector<std::pair<uint64_t, int>> points;
	for (uint64_t gib : cfg.quick ? std::vector<uint64_t>{1, 2} : std::vector<uint64_t>{1, 2, 4, 8, 16})
		points.emplace_back(gib * kGiB, attachers);
	const auto variants = sweep_variants();
	const auto fig = sweep(cfg, variants, points, "pt_size");
	t->scenario = "pt_size";
	t->title = "page tables per extra attacher vs region size, " + std::to_string(attachers) + " attachers";
	sweep_notes(t, variants);
	return fill_sweep_table(t, variants, points, fig, true);
}

bool run_pt_attachers(const Config &cfg, Table *t)
{
	std::vector<std::pair<uint64_t, int>> points;
	for (int n : cfg.quick ? std::vector<int>{1, 8} : std::vector<int>{1, 4, 16, 64, 256})
		points.emplace_back(kGiB, n);
	const auto variants = sweep_variants();
	const auto fig = sweep(cfg, variants, points, "pt_attachers");
	t->scenario = "pt_attachers";
	t->title = "page tables per extra attacher vs attachers, 1 GiB region";
	sweep_notes(t, variants);
	return fill_sweep_table(t, variants, points, fig, false);
}

} // namespace msharefs::bench
