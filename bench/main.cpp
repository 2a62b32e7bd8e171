// mshare-bench: figures of the msharefs uffd data path against the baselines
// programs use today, measured in the same run.
#include "common.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MSHAREFSD_PATH
#define MSHAREFSD_PATH "msharefsd"
#endif
#ifndef RUN_GUEST_PATH
#define RUN_GUEST_PATH ""
#endif
#ifndef KMOD_SELFTEST_PATH
#define KMOD_SELFTEST_PATH ""
#endif
#ifndef BUILD_DIR
#define BUILD_DIR ""
#endif

using namespace msharefs::bench;

namespace {

struct Scenario {
	const char *name;
	const char *what;
	bool (*run)(const Config &, Table *);
};

const Scenario kScenarios[] = {
	{"first_touch", "first touch of an anonymous region: uffd window vs shared memfd", run_first_touch},
	{"protect", "PROTECT for N = 1, 8, 32, 64 attachers vs signal + mprotect in each", run_protect},
	{"handoff", "LOCK/UNLOCK handoff between two writers vs munmap/mmap and mprotect", run_handoff},
	{"page_tables", "page tables per extra attacher: memfd 4K/THP/hugetlb, Boost, uffd window per backing",
	 run_page_tables},
	{"pt_size", "page tables per extra attacher vs region size (quick 1-2 GiB, full 1-16 GiB)", run_pt_size},
	{"pt_attachers", "page tables per extra attacher vs attachers (quick 1-8, full 1-256)", run_pt_attachers},
	{"cycle", "create+size+map+unlink: region vs shm_open and Boost managed_shared_memory", run_cycle},
	{"bandwidth", "memcpy through a window vs memfd 4K and hugetlb", run_bandwidth},
	{"module", "the kernel module's figures from a QEMU guest", run_module},
};

void usage(FILE *out)
{
	fprintf(out, "usage: mshare-bench [--quick] [--only NAME] [--skip NAME] [--csv DIR] [--daemon PATH]\n"
		     "                    [--backings LIST] [--guest PATH] [--kmod-selftest PATH]\n"
		     "\n"
		     "Measures msharefs (msharefsd -o datapath=uffd, windows attached through the\n"
		     "userfaultfd runtime) against the baselines programs use today, in the same run,\n"
		     "and prints one table per scenario: variant, figure, baseline, ratio.\n"
		     "Runs as root: it enters a private mount namespace (tmpfs over /sys/fs and\n"
		     "/dev/shm) and mounts its own msharefsd on /sys/fs/mshare.\n"
		     "\n"
		     "  --quick          smaller regions and fewer samples (under 2 minutes)\n"
		     "  --only NAME      run one scenario\n"
		     "  --skip NAME      leave a scenario out (repeatable)\n"
		     "  --csv DIR        also write DIR/NAME.csv and DIR/NAME.png (gnuplot) for\n"
		     "                   each scenario\n"
		     "  --daemon PATH    the msharefsd binary (default $MSHAREFSD, else\n"
		     "                   " MSHAREFSD_PATH ")\n"
		     "  --backings LIST  comma-separated values of msharefsd's backing= option for\n"
		     "                   page_tables (default: default,4k,thp,hugetlb,auto; \"default\"\n"
		     "                   starts the daemon without the option; one it refuses is n/a)\n"
		     "  --guest PATH     fastpath-kmod/qemu/run-guest.sh, for the module scenario\n"
		     "                   (default " RUN_GUEST_PATH ")\n"
		     "  --kmod-selftest PATH  the kmod_selftest binary it runs in the guest\n"
		     "  --help           this text\n"
		     "\n"
		     "Exit status: 0 if every scenario ran, 1 if one failed, 2 for a usage error,\n"
		     "77 if it cannot run here (not root, no FUSE).\n"
		     "\n"
		     "Scenarios:\n");
	for (const Scenario &s : kScenarios)
		fprintf(out, "  %-12s %s\n", s.name, s.what);
	fprintf(out, "\nProgress goes to stderr, tables to stdout. Timings are noisy while other work runs.\n");
}

std::vector<std::string> split(const std::string &s, char sep)
{
	std::vector<std::string> out;
	size_t pos = 0;
	while (pos <= s.size()) {
		size_t next = s.find(sep, pos);
		if (next == std::string::npos)
			next = s.size();
		if (next > pos)
			out.push_back(s.substr(pos, next - pos));
		pos = next + 1;
	}
	return out;
}

std::string normalized(std::string name)
{
	for (char &c : name)
		if (c == '-')
			c = '_';
	return name;
}

} // namespace

int main(int argc, char **argv)
{
	Config cfg;
	const char *env = getenv("MSHAREFSD");
	cfg.daemon = env && *env ? env : MSHAREFSD_PATH;
	cfg.run_guest = RUN_GUEST_PATH;
	cfg.kmod_selftest = KMOD_SELFTEST_PATH;
	cfg.build_dir = BUILD_DIR;
	for (int i = 1; i < argc; i++) {
		const std::string arg = argv[i];
		auto value = [&]() -> std::string {
			if (i + 1 >= argc) {
				fprintf(stderr, "mshare-bench: %s needs a value (try --help)\n", arg.c_str());
				exit(2);
			}
			return argv[++i];
		};
		if (arg == "--help" || arg == "-h") {
			usage(stdout);
			return 0;
		} else if (arg == "--quick") {
			cfg.quick = true;
		} else if (arg == "--only") {
			cfg.only = normalized(value());
		} else if (arg == "--csv") {
			cfg.csv_dir = value();
		} else if (arg == "--skip") {
			cfg.skip.push_back(normalized(value()));
		} else if (arg == "--guest") {
			cfg.run_guest = value();
		} else if (arg == "--kmod-selftest") {
			cfg.kmod_selftest = value();
		} else if (arg == "--daemon") {
			cfg.daemon = value();
		} else if (arg == "--backings") {
			cfg.backings = split(value(), ',');
		} else {
			fprintf(stderr, "mshare-bench: unknown argument %s (try --help)\n", arg.c_str());
			return 2;
		}
	}
	if (!cfg.only.empty()) {
		bool known = false;
		for (const Scenario &s : kScenarios)
			known |= cfg.only == s.name;
		if (!known) {
			fprintf(stderr, "mshare-bench: no scenario %s (try --help)\n", cfg.only.c_str());
			return 2;
		}
	}
	if (!cfg.csv_dir.empty()) {
		if (mkdir(cfg.csv_dir.c_str(), 0755) != 0 && errno != EEXIST) {
			fprintf(stderr, "mshare-bench: --csv %s: %s\n", cfg.csv_dir.c_str(), strerror(errno));
			return 2;
		}
	}
	if (access(cfg.daemon.c_str(), X_OK) != 0) {
		fprintf(stderr, "mshare-bench: msharefsd not found at %s (build it, or pass --daemon)\n",
			cfg.daemon.c_str());
		return 1;
	}
	std::string err;
	if (!enter_namespace(&err)) {
		fprintf(stderr, "mshare-bench: %s\n", err.c_str());
		return 77; // cannot run here (a skip for meson test)
	}
	setvbuf(stdout, nullptr, _IOLBF, 0);

	printf("mshare-bench: %s mode, msharefsd %s\n", cfg.quick ? "quick" : "full", cfg.daemon.c_str());
	// Fresh guest memory is slow the first time it is used.
	const uint64_t warm = cfg.quick ? kGiB : 2 * kGiB;
	progress("warm-up: touching %s of anonymous memory", human_bytes(warm).c_str());
	warm_up(warm);

	int failed = 0;
	std::vector<Table> done;
	for (const Scenario &s : kScenarios) {
		if ((!cfg.only.empty() && cfg.only != s.name) ||
		    std::find(cfg.skip.begin(), cfg.skip.end(), s.name) != cfg.skip.end())
			continue;
		progress("%s: start", s.name);
		const uint64_t t0 = now_ns();
		Table table;
		const bool ok = s.run(cfg, &table);
		progress("%s: %s in %.1f s", s.name, ok ? "done" : "FAILED", ms_since(t0) / 1000);
		if (!table.rows.empty()) {
			table.print();
			if (!cfg.csv_dir.empty()) {
				table.write_csv(cfg.csv_dir);
				table.write_plot(cfg.csv_dir);
			}
			done.push_back(table);
		}
		if (!ok) {
			printf("\n== %s: did not complete (see stderr) ==\n", s.name);
			failed++;
		}
	}
	print_ratios(done);
	return failed ? 1 : 0;
}
