// module: the kernel module's figures, from a QEMU guest (run-guest.sh boots
// Debian's kernel with msharefs_kmod and runs kmod_selftest). Page-table
// bytes and fault counts are exact there; times are TCG times, not
// comparable with the host's.
#include "common.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>
#include <unistd.h>

namespace msharefs::bench {

namespace {

// MemAvailable of /proc/meminfo in kB (0 if unknown).
long available_memory_kb()
{
	std::ifstream meminfo("/proc/meminfo");
	std::string key;
	long kb = 0;
	while (meminfo >> key >> kb)
		if (key == "MemAvailable:")
			return kb;
		else
			meminfo.ignore(256, '\n');
	return 0;
}

// The figures kmod_selftest prints, from the guest's console.
void parse_guest_lines(FILE *p, Table *t, int *pt_rows)
{
	char line[512];
	while (fgets(line, sizeof(line), p)) {
		unsigned gib;
		int n;
		char backing[16];
		double kmod_kb, shm_kb, kmod_ms, plain_ms, remap_ms, kmod_mib, shm_mib;
		long kmod_faults, shm_faults;
		if (sscanf(line,
			   "measure: %u GiB %15s %d attachers | page tables per attacher: kmod %lf kB, shm %lf kB | "
			   "faults to read all: kmod %ld, shm %ld",
			   &gib, backing, &n, &kmod_kb, &shm_kb, &kmod_faults, &shm_faults) == 7) {
			backing[strcspn(backing, ",")] = '\0';
			progress("module: %u GiB %s, %d attachers: %.1f kB vs %.1f kB", gib, backing, n, kmod_kb, shm_kb);
			const std::string at =
				std::to_string(gib) + " GiB " + backing + ", " + std::to_string(n) + " attachers";
			// Offset windows (2 MiB past a GiB) against a memfd mapped there too.
			std::string base = std::string("memfd ") + backing;
			if (const auto dash = base.find("-offset"); dash != std::string::npos)
				base = base.substr(0, dash) + " at the same address";
			t->rows.push_back({"page tables per extra attacher: " + at, kmod_kb, base, shm_kb, "kB", 1, ""});
			t->rows.push_back({"faults for a new attacher to read all: " + at, static_cast<double>(kmod_faults),
					   base, static_cast<double>(shm_faults), "", 0, ""});
			(*pt_rows)++;
		} else if (sscanf(line,
				  "measure: 1500 attachers of 1 GiB (scaled from %d): kmod %lf MiB of page tables, "
				  "shm %lf MiB",
				  &n, &kmod_mib, &shm_mib) == 3) {
			t->rows.push_back({"page tables of 1,500 attachers of 1 GiB (scaled from " + std::to_string(n) + ")",
					   kmod_mib, "memfd 4K", shm_mib, "MiB", 1, ""});
		} else if (sscanf(line, "measure: HANDOFF %u GiB: kmod %lf ms | mprotect %lf ms | munmap+mmap %lf ms",
				  &gib, &kmod_ms, &plain_ms, &remap_ms) == 4) {
			const std::string at = std::to_string(gib) + " GiB, guest time";
			t->rows.push_back({"LOCK/UNLOCK handoff (SET_WRITER): " + at, kmod_ms, "mprotect handoff", plain_ms,
					   "ms", 3, "TCG: shape only"});
			t->rows.push_back({"LOCK/UNLOCK handoff (SET_WRITER): " + at, kmod_ms, "munmap+mmap handoff",
					   remap_ms, "ms", 3, "TCG: shape only"});
		} else if (strncmp(line, "not ok - ", 9) == 0) {
			line[strcspn(line, "\n")] = '\0';
			warn("module: the guest's selftest: %s", line);
		} else if (sscanf(line,
				  "measure: PROTECT %u GiB with %d attachers: kmod %lf ms (once, for all) | "
				  "one process's mprotect: %lf ms",
				  &gib, &n, &kmod_ms, &plain_ms) == 4) {
			t->rows.push_back({"PROTECT, guest time: " + std::to_string(gib) + " GiB, " + std::to_string(n) +
						   " attachers",
					   kmod_ms, "one mprotect x N", plain_ms * n, "ms", 2, "TCG: shape only"});
		}
	}
}

} // namespace

bool run_module(const Config &cfg, Table *t)
{
	t->scenario = "module";
	t->title = "msharefs_kmod in a QEMU guest (Linux 6.12, TCG): page tables and faults per extra attacher";
	if (cfg.run_guest.empty() || access(cfg.run_guest.c_str(), X_OK) != 0 || cfg.kmod_selftest.empty() ||
	    access(cfg.kmod_selftest.c_str(), R_OK) != 0) {
		t->notes.push_back("skipped: no run-guest.sh or kmod_selftest (pass --guest and --kmod-selftest)");
		progress("module: skipped (no run-guest.sh or kmod_selftest)");
		return true;
	}
	// The guest's kernel log and the harness's lines, shown if it fails.
	char guest_log[] = "/tmp/mshare-bench-guest.XXXXXX";
	const int log_fd = mkstemp(guest_log);
	if (log_fd < 0) {
		warn("module: cannot create a file in /tmp: %s", strerror(errno));
		return false;
	}
	close(log_fd);
	// One boot: the selftest with mode, in a guest of mem; its figures go to t.
	int pt_rows = 0;
	auto boot = [&](const std::string &mem, const std::string &mode, const char *how_long) {
		const std::string cmd = "MSHAREFS_BUILD='" + cfg.build_dir + "' '" + cfg.run_guest +
					"' --no-daemon --mem " + mem + " --timeout 3000 --add '" + cfg.kmod_selftest +
					"' -- /kmod_selftest " + mode + " 2>'" + guest_log + "'";
		progress("module: booting a %s guest (%s)", mem.c_str(), how_long);
		FILE *p = popen(cmd.c_str(), "r");
		if (!p) {
			warn("module: cannot run %s: %s", cfg.run_guest.c_str(), strerror(errno));
			return -1;
		}
		parse_guest_lines(p, t, &pt_rows);
		return pclose(p);
	};
	int status = boot(cfg.quick ? "3G" : "6G", cfg.quick ? "" : "--measure", cfg.quick ? "about 30 s" : "about 4 minutes");
	// 16 GiB regions, where this machine has the memory for a guest of 18 GiB.
	if (status == 0 && !cfg.quick) {
		if (available_memory_kb() >= 20L << 20)
			status = boot("18G", "--measure-16g", "about 6 minutes");
		else
			t->notes.push_back("16 GiB regions skipped: a guest of 18 GiB needs 20 GiB of available memory");
	}
	t->notes.push_back("exact: PageTables deltas and /proc/PID/stat fault counts inside the guest; the module's "
			   "attachers point at one set of PMD tables");
	t->notes.push_back("PROTECT times are TCG emulation times: only the ratio's shape means anything");
	if (status != 0 || pt_rows == 0) {
		warn("module: the guest run failed (status %d, %d figures); the end of its log:", WEXITSTATUS(status),
		     pt_rows);
		std::vector<std::string> tail;
		std::ifstream log(guest_log);
		for (std::string l; std::getline(log, l);) {
			tail.push_back(l);
			if (tail.size() > 20)
				tail.erase(tail.begin());
		}
		for (const std::string &l : tail)
			fprintf(stderr, "  %s\n", l.c_str());
		unlink(guest_log);
		return false;
	}
	unlink(guest_log);
	return true;
}
} // namespace msharefs::bench
