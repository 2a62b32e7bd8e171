// mshare-bench: what every scenario shares. The benchmark runs in a private
// mount namespace (tmpfs over /sys/fs and /dev/shm) with a real msharefsd on
// /sys/fs/mshare; each measured variant runs in forked processes, and the
// figures of the msharefs variant and of its baseline come from the same run.
#pragma once

#include <linux/msharefs.h>
#include <msharefs/unique_fd.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <sys/mman.h>
#include <sys/types.h>
#include <vector>

namespace msharefs::bench {

using Fd = msharefs::UniqueFd;

inline constexpr uint64_t kPage = 4096;
inline constexpr uint64_t kKiB = 1ULL << 10;
inline constexpr uint64_t kMiB = 1ULL << 20;
inline constexpr uint64_t kGiB = 1ULL << 30;
inline constexpr uint64_t kTiB = 1ULL << 40;
// Regions live at 2 TiB, 1 GiB aligned (the daemon runs with align=1G).
inline constexpr uint64_t kRegionStart = 2 * kTiB;
inline constexpr uint64_t kRegionAlign = kGiB;
inline constexpr const char *kMount = MSHAREFS_MOUNT_POINT;

struct Config {
	bool quick = false;
	std::string csv_dir; // empty: no CSV
	std::string only;    // empty: every scenario
	std::vector<std::string> skip;
	std::string daemon;  // msharefsd binary
	std::string run_guest; // fastpath-kmod/qemu/run-guest.sh, for the module's figures
	std::string kmod_selftest;
	std::string build_dir; // MSHAREFS_BUILD for run-guest.sh
	// Values of the daemon's backing= option to try in page_tables;
	// "default" starts the daemon without the option.
	std::vector<std::string> backings{"default", "4k", "thp", "hugetlb", "auto"};
};

// Progress and errors on stderr (stdout carries the tables).
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t now_ns();
inline double ms_since(uint64_t t0) { return static_cast<double>(now_ns() - t0) / 1e6; }
double median(std::vector<double> v);
// The samples of several variants one after the other.
template <size_t N> std::vector<double> concat(const std::vector<double> (&parts)[N])
{
	std::vector<double> out;
	for (const auto &part : parts)
		out.insert(out.end(), part.begin(), part.end());
	return out;
}
std::string human_bytes(uint64_t bytes);

// One line of a scenario's table: a figure of the msharefs variant against
// the same figure of its baseline, measured in the same run. NaN is n/a.
struct Row {
	std::string variant;
	double value = NAN;
	std::string baseline_name;
	double baseline = NAN;
	std::string unit;
	int precision = 2;
	std::string note; // e.g. why a figure is n/a
};

struct Table {
	std::string scenario; // the --only name, and the CSV file name
	std::string title;
	std::vector<Row> rows;
	std::vector<std::string> notes;

	// Line plots: series name -> (x, y) points, drawn against x_label
	// (log scale) with y in `unit` of the rows. Empty: a bar chart of the
	// rows' figures against their baselines.
	std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>> series;
	std::string x_label;
	std::string y_label;

	void print() const;
	// DIR/<scenario>.png with gnuplot; false (with a message) without it.
	bool write_plot(const std::string &dir) const;
	// DIR/<scenario>.csv; false (with a message) on failure.
	bool write_csv(const std::string &dir) const;
};

// The ratio of every row with both figures, all scenarios in one table.
void print_ratios(const std::vector<Table> &tables);

// --- memory ---------------------------------------------------------------

// A mapping, unmapped on scope exit: with munmap(), or for a window of the
// uffd runtime with mshare_runtime_munmap().
class Mapping {
public:
	Mapping() = default;
	Mapping(void *addr, size_t len, bool window = false) : addr_(addr), len_(len), window_(window) {}
	Mapping(const Mapping &) = delete;
	Mapping &operator=(const Mapping &) = delete;
	Mapping(Mapping &&o) noexcept { *this = std::move(o); }
	Mapping &operator=(Mapping &&o) noexcept;
	~Mapping() { reset(); }
	void reset();
	bool ok() const { return addr_ != MAP_FAILED; }
	explicit operator bool() const { return ok(); }
	char *get() const { return static_cast<char *>(addr_); }
	size_t size() const { return len_; }

private:
	void *addr_ = MAP_FAILED;
	size_t len_ = 0;
	bool window_ = false;
};

// Maps len bytes of fd (MAP_SHARED) at an address aligned to `align`, so that
// huge pages and shared hugetlb PMD tables can be used.
Mapping map_shared_aligned(int fd, size_t len, int prot, uint64_t align = kRegionAlign, int extra_flags = 0);

// Stores one byte per `stride` bytes (default: per 4 KiB page) of
// [p, p+len); reads one byte per stride.
void touch_write(char *p, size_t len, char value = 1, size_t stride = kPage);
uint64_t touch_read(const char *p, size_t len, size_t stride = kPage);

// Allocates, touches and frees `bytes` of anonymous memory: the first use of
// fresh guest memory is slow on a VM, and must not land in a measurement.
void warm_up(uint64_t bytes);

// --- /proc ------------------------------------------------------------------

struct Faults {
	uint64_t minor = 0;
	uint64_t major = 0;
};
// Page faults of this process so far (/proc/self/stat).
Faults faults_self();
// A field of /proc/PID/status in kB (e.g. "VmPTE"), -1 if absent.
long status_kb(pid_t pid, const char *field);
// A field of /proc/meminfo in kB, after folding the per-CPU counters
// (vm.stat_refresh); -1 if absent.
long meminfo_kb(const char *field);
// meminfo_kb once it has stopped moving (up to 2 s): page tables of
// processes that just exited are freed after an RCU grace period, not when
// they are reaped, and must not land in the next measurement.
long settled_meminfo_kb(const char *field);

// A sysfs or procfs setting changed for the duration of a measurement. The
// old value is written back only if nobody changed it meanwhile (and, by a
// signal handler, if the benchmark is interrupted).
class Setting {
public:
	explicit Setting(std::string path) : path_(std::move(path)) {}
	Setting(const Setting &) = delete;
	Setting &operator=(const Setting &) = delete;
	~Setting() { restore(); }
	// The current value (the bracketed word of a "a [b] c" choice list).
	std::optional<std::string> read() const;
	bool set(const std::string &value);
	void restore();

private:
	std::string path_;
	std::optional<std::string> saved_;
	std::string set_;
	void *pending_ = nullptr; // written back if the benchmark is interrupted
};

// --- processes ---------------------------------------------------------------

// A unidirectional pipe of one-byte messages.
struct Pipe {
	Fd r, w;
	Pipe();
	bool send(char c = '.') const;
	// The next byte; 0 at end of file, on error or after timeout_ms.
	char recv(int timeout_ms = -1) const;
	bool send_all(const void *buf, size_t len) const;
	bool recv_all(void *buf, size_t len, int timeout_ms = -1) const;
};

// Forks a child that runs fn and exits with its return value (99 if it
// throws). The child dies with its parent.
pid_t spawn(const std::function<int()> &fn);
// Waits for a child; its exit code, or -1 (with a message naming `what`) if
// it was killed or ran past timeout_s.
int wait_child(pid_t pid, const std::string &what, int timeout_s = 900);

// Children that are killed (SIGKILL) and reaped if still running when the
// crew goes out of scope.
class Crew {
public:
	Crew() = default;
	Crew(const Crew &) = delete;
	Crew &operator=(const Crew &) = delete;
	~Crew();
	bool add(pid_t pid);
	size_t size() const { return pids_.size(); }
	pid_t operator[](size_t i) const { return pids_[i]; }
	// Waits for every child; true if all exited with 0.
	bool join(const std::string &what, int timeout_s = 120);

private:
	std::vector<pid_t> pids_;
};

// Runs fn in a child and returns the figures it produced, or nothing if it
// failed (the child reports why on stderr).
std::optional<std::vector<double>>
measure_in_child(const std::string &what, const std::function<std::vector<double>()> &fn, int timeout_s = 900);

// --- msharefs ---------------------------------------------------------------

// Sets up the private mount namespace. false (with a one-line message) when
// the benchmark cannot run here.
bool enter_namespace(std::string *error);

// A running msharefsd on /sys/fs/mshare, stopped (umount) when destroyed.
class Daemon {
public:
	// Starts the daemon with -o OPTIONS; nullptr with *error set (the
	// daemon's own last message if it exited) if it does not come up.
	static std::unique_ptr<Daemon> start(const Config &cfg, const std::string &options, std::string *error);
	~Daemon();
	Daemon(const Daemon &) = delete;
	Daemon &operator=(const Daemon &) = delete;

private:
	Daemon() = default;
	pid_t pid_ = -1;
	Fd log_; // the daemon's stderr
};

std::string region_path(const std::string &name);
// Creates NAME as a region of region_size bytes at kRegionStart with one
// anonymous shared read-write mapping of map_size bytes at its start.
// Returns the descriptor, or an invalid Fd with *error set.
Fd create_region(const std::string &name, uint64_t region_size, uint64_t map_size, std::string *error);
// Attaches the whole window of region fd through the uffd runtime.
Mapping attach_window(int fd, std::string *error);
// 0 or errno.
int protect_region(int fd, uint64_t offset, uint64_t size, uint32_t prot);

// The scenarios. Each returns its table (rows may be n/a); false if the
// scenario could not run at all.
bool run_first_touch(const Config &cfg, Table *table);
bool run_protect(const Config &cfg, Table *table);
bool run_handoff(const Config &cfg, Table *table);
bool run_page_tables(const Config &cfg, Table *table);
bool run_pt_size(const Config &cfg, Table *table);
bool run_pt_attachers(const Config &cfg, Table *table);
bool run_cycle(const Config &cfg, Table *table);
bool run_bandwidth(const Config &cfg, Table *table);
bool run_module(const Config &cfg, Table *table);

} // namespace msharefs::bench
