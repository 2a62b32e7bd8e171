#include "common.hpp"

#include "mshare_runtime.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <sched.h>
#include <sstream>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace msharefs::bench {

namespace {

const uint64_t g_start_ns = now_ns();

void vlog(const char *prefix, const char *fmt, va_list ap)
{
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	fprintf(stderr, "[%7.1fs] %s%s\n", static_cast<double>(now_ns() - g_start_ns) / 1e9, prefix, msg);
}

std::string format_value(double v, int precision, const std::string &unit)
{
	if (std::isnan(v))
		return "n/a";
	char buf[64];
	snprintf(buf, sizeof(buf), "%.*f", precision, v);
	return unit.empty() ? std::string(buf) : std::string(buf) + " " + unit;
}

std::string format_ratio(double value, double baseline)
{
	if (std::isnan(value) || std::isnan(baseline) || baseline == 0)
		return "n/a";
	const double r = value / baseline;
	char buf[32];
	snprintf(buf, sizeof(buf), r >= 1000 ? "%.0f" : "%.3g", r);
	return buf;
}

std::string csv_field(const std::string &s)
{
	if (s.find_first_of(",\"\n") == std::string::npos)
		return s;
	std::string out = "\"";
	for (char c : s) {
		if (c == '"')
			out += '"';
		out += c;
	}
	return out + "\"";
}

std::string csv_number(double v)
{
	if (std::isnan(v))
		return "";
	char buf[64];
	snprintf(buf, sizeof(buf), "%.6g", v);
	return buf;
}

bool mounted()
{
	std::ifstream in("/proc/self/mounts");
	std::string line;
	const std::string needle = std::string(" ") + kMount + " fuse.msharefs ";
	while (std::getline(in, line))
		if (line.find(needle) != std::string::npos)
			return true;
	return false;
}

int pidfd_open(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// Waits up to timeout_ms for pid (our child) to end; its wait status, or
// nothing if it still runs.
std::optional<int> wait_status(pid_t pid, int timeout_ms)
{
	Fd pidfd(pidfd_open(pid));
	if (pidfd) {
		pollfd p{pidfd.get(), POLLIN, 0};
		int r;
		do
			r = poll(&p, 1, timeout_ms);
		while (r < 0 && errno == EINTR);
		if (r == 0)
			return std::nullopt;
	}
	int status = 0;
	pid_t w;
	do
		w = waitpid(pid, &status, pidfd ? 0 : WNOHANG);
	while (w < 0 && errno == EINTR);
	if (w == 0)
		return std::nullopt;
	return status;
}

// What the daemon wrote to its log, one line, "; " between its lines.
std::string log_text(int fd)
{
	std::string all;
	char buf[4096];
	ssize_t n;
	off_t off = 0;
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0 && all.size() < 4096) {
		all.append(buf, static_cast<size_t>(n));
		off += n;
	}
	std::string out;
	size_t pos = 0;
	while (pos < all.size()) {
		size_t nl = all.find('\n', pos);
		if (nl == std::string::npos)
			nl = all.size();
		if (nl > pos)
			out += (out.empty() ? "" : "; ") + all.substr(pos, nl - pos);
		pos = nl + 1;
	}
	return out;
}

} // namespace

void progress(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("", fmt, ap);
	va_end(ap);
}

void warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("warning: ", fmt, ap);
	va_end(ap);
}

uint64_t now_ns()
{
	timespec ts{};
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

double median(std::vector<double> v)
{
	std::erase_if(v, [](double x) { return std::isnan(x); });
	if (v.empty())
		return NAN;
	std::sort(v.begin(), v.end());
	const size_t n = v.size();
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string human_bytes(uint64_t bytes)
{
	char buf[32];
	if (bytes >= kGiB && bytes % kGiB == 0)
		snprintf(buf, sizeof(buf), "%llu GiB", static_cast<unsigned long long>(bytes / kGiB));
	else if (bytes >= kMiB && bytes % kMiB == 0)
		snprintf(buf, sizeof(buf), "%llu MiB", static_cast<unsigned long long>(bytes / kMiB));
	else
		snprintf(buf, sizeof(buf), "%llu KiB", static_cast<unsigned long long>(bytes / kKiB));
	return buf;
}

void Table::print() const
{
	std::vector<std::array<std::string, 5>> cells;
	cells.push_back({"variant", "figure", "baseline", "ratio", ""});
	bool any_note = false;
	for (const Row &r : rows) {
		std::string base = format_value(r.baseline, r.precision, r.unit);
		if (!r.baseline_name.empty())
			base += " (" + r.baseline_name + ")";
		cells.push_back({r.variant, format_value(r.value, r.precision, r.unit), base,
				 format_ratio(r.value, r.baseline), r.note});
		any_note |= !r.note.empty();
	}
	if (any_note)
		cells[0][4] = "note";
	size_t width[4] = {};
	for (const auto &c : cells)
		for (size_t i = 0; i < 4; i++)
			width[i] = std::max(width[i], c[i].size());
	printf("\n== %s: %s ==\n", scenario.c_str(), title.c_str());
	for (const auto &c : cells) {
		printf("%-*s  %*s  %*s  %*s", static_cast<int>(width[0]), c[0].c_str(), static_cast<int>(width[1]),
		       c[1].c_str(), static_cast<int>(width[2]), c[2].c_str(), static_cast<int>(width[3]),
		       c[3].c_str());
		if (!c[4].empty())
			printf("  %s", c[4].c_str());
		printf("\n");
	}
	for (const auto &n : notes)
		printf("  * %s\n", n.c_str());
	fflush(stdout);
}

bool Table::write_csv(const std::string &dir) const
{
	const std::string file = dir + "/" + scenario + ".csv";
	FILE *f = fopen(file.c_str(), "w");
	if (!f) {
		warn("cannot write %s: %s", file.c_str(), strerror(errno));
		return false;
	}
	fprintf(f, "scenario,variant,value,unit,baseline_name,baseline,ratio,note\n");
	for (const Row &r : rows) {
		const double ratio =
			std::isnan(r.value) || std::isnan(r.baseline) || r.baseline == 0 ? NAN : r.value / r.baseline;
		fprintf(f, "%s,%s,%s,%s,%s,%s,%s,%s\n", csv_field(scenario).c_str(), csv_field(r.variant).c_str(),
			csv_number(r.value).c_str(), csv_field(r.unit).c_str(), csv_field(r.baseline_name).c_str(),
			csv_number(r.baseline).c_str(), csv_number(ratio).c_str(), csv_field(r.note).c_str());
	}
	const bool ok = fclose(f) == 0;
	if (!ok)
		warn("cannot write %s: %s", file.c_str(), strerror(errno));
	return ok;
}

void print_ratios(const std::vector<Table> &tables)
{
	printf("\n== ratios: msharefs (or the variant) / baseline, same run ==\n");
	for (const Table &t : tables)
		for (const Row &r : t.rows)
			if (!std::isnan(r.value) && !std::isnan(r.baseline) && r.baseline != 0)
				printf("%-13s %-70.70s %8s  vs %s\n", t.scenario.c_str(), r.variant.c_str(),
				       format_ratio(r.value, r.baseline).c_str(), r.baseline_name.c_str());
	fflush(stdout);
}

namespace {

// A log scale when every figure is positive and they span more than 50x, so
// that small figures next to large ones stay readable.
bool wants_log_scale(const std::vector<double> &values)
{
	double lo = INFINITY;
	double hi = 0;
	for (double v : values) {
		if (std::isnan(v))
			continue;
		if (v <= 0)
			return false;
		lo = std::min(lo, v);
		hi = std::max(hi, v);
	}
	return hi > 0 && hi / lo > 50;
}

std::string gnuplot_text(std::string s)
{
	for (char &c : s)
		if (c == '"' || c == '\'')
			c = '`';
	return s;
}

// A bar chart panel: the rows of one metric (the variant's text before
// ": ", else the unit), each figure next to its baseline.
struct BarPanel {
	std::string metric;
	std::string unit;
	std::string baseline_name;
	std::vector<std::pair<std::string, std::pair<double, double>>> bars;
};

std::vector<BarPanel> bar_panels(const std::vector<Row> &rows)
{
	std::vector<BarPanel> panels;
	for (const Row &r : rows) {
		const size_t colon = r.variant.find(": ");
		const std::string metric = colon == std::string::npos ? r.unit : r.variant.substr(0, colon);
		const std::string label = colon == std::string::npos ? r.variant : r.variant.substr(colon + 2);
		auto it = std::find_if(panels.begin(), panels.end(), [&](const BarPanel &p) {
			return p.metric == metric && p.unit == r.unit && p.baseline_name == r.baseline_name;
		});
		if (it == panels.end()) {
			panels.push_back({metric, r.unit, r.baseline_name, {}});
			it = panels.end() - 1;
		}
		it->bars.push_back({label, {r.value, r.baseline}});
	}
	return panels;
}

} // namespace

bool Table::write_plot(const std::string &dir) const
{
	const std::string png = dir + "/" + scenario + ".png";
	const std::string data = dir + "/" + scenario + ".plot.dat";
	FILE *d = fopen(data.c_str(), "w");
	if (!d) {
		warn("cannot write %s: %s", data.c_str(), strerror(errno));
		return false;
	}
	const std::vector<BarPanel> panels = series.empty() ? bar_panels(rows) : std::vector<BarPanel>();
	const size_t height = series.empty() ? 150 + 330 * std::max<size_t>(panels.size(), 1) : 600;
	std::string script = "set terminal pngcairo size 1000," + std::to_string(height) +
			     " font 'sans,10'\nset output '" + png + "'\nset key outside right noenhanced\nset grid\n";
	if (!series.empty()) {
		std::vector<double> ys;
		for (const auto &[name, points] : series)
			for (const auto &[x, y] : points)
				ys.push_back(y);
		const bool log_y = wants_log_scale(ys);
		script += "set title \"" + gnuplot_text(title) + "\" noenhanced\nset logscale x 2\n" +
			  (log_y ? "set logscale y 10\n" : "") + "set xlabel '" + gnuplot_text(x_label) +
			  "'\nset ylabel '" + gnuplot_text(y_label) + (log_y ? " (log scale)" : "") + "'\nplot ";
		size_t block = 0;
		for (const auto &[name, points] : series) {
			for (const auto &[x, y] : points)
				if (!std::isnan(y))
					fprintf(d, "%g %g\n", x, y);
			fprintf(d, "\n\n");
			script += std::string(block ? ", " : "") + "'" + data + "' index " + std::to_string(block) +
				  " with linespoints lw 2 title '" + gnuplot_text(name) + "'";
			block++;
		}
		script += "\n";
	} else {
		// One panel per metric: clustered bars, figure and baseline.
		script += "set multiplot layout " + std::to_string(panels.size()) + ",1 title \"" +
			  gnuplot_text(title) + "\" noenhanced\nset style data histograms\n"
			  "set style histogram clustered gap 1\nset style fill solid 0.8 border -1\n"
			  "set xtics rotate by -20 noenhanced\nset bmargin 6\n";
		size_t block = 0;
		for (const BarPanel &panel : panels) {
			std::vector<double> values;
			for (const auto &[label, vb] : panel.bars) {
				fprintf(d, "\"%s\" %g %g\n", gnuplot_text(label).c_str(), std::isnan(vb.first) ? 0 : vb.first,
					std::isnan(vb.second) ? 0 : vb.second);
				values.push_back(vb.first);
				values.push_back(vb.second);
			}
			fprintf(d, "\n\n");
			const bool log_y = wants_log_scale(values);
			const std::string ylabel = panel.metric == panel.unit ? panel.unit : panel.metric +
										   (panel.unit.empty() ? "" : " (" + panel.unit + ")");
			script += std::string(log_y ? "set logscale y 10\n" : "unset logscale y\n") + "set ylabel \"" +
				  gnuplot_text(ylabel) + (log_y ? ", log scale" : "") + "\" noenhanced\nplot '" + data +
				  "' index " + std::to_string(block) + " using 2:xtic(1) title 'variant', '' index " +
				  std::to_string(block) + " using 3 title \"" + gnuplot_text(panel.baseline_name) + "\"\n";
			block++;
		}
		script += "unset multiplot\n";
	}
	fclose(d);
	FILE *g = popen("gnuplot 2>&1", "w");
	if (!g) {
		warn("cannot run gnuplot: %s", strerror(errno));
		return false;
	}
	fputs(script.c_str(), g);
	const int status = pclose(g);
	unlink(data.c_str());
	if (status != 0) {
		warn("gnuplot failed for %s (apt-get install gnuplot-nox)", png.c_str());
		return false;
	}
	return true;
}

long settled_meminfo_kb(const char *field)
{
	long last = meminfo_kb(field);
	for (int i = 0; i < 40; i++) {
		usleep(50000);
		const long now = meminfo_kb(field);
		if (now == last)
			return now;
		last = now;
	}
	return last;
}

// --- memory ---------------------------------------------------------------

Mapping &Mapping::operator=(Mapping &&o) noexcept
{
	if (this != &o) {
		reset();
		addr_ = std::exchange(o.addr_, MAP_FAILED);
		len_ = std::exchange(o.len_, 0);
		window_ = o.window_;
	}
	return *this;
}

void Mapping::reset()
{
	if (addr_ == MAP_FAILED)
		return;
	if (window_)
		mshare_runtime_munmap(addr_, len_);
	else
		munmap(addr_, len_);
	addr_ = MAP_FAILED;
}

Mapping map_shared_aligned(int fd, size_t len, int prot, uint64_t align, int extra_flags)
{
	void *area = mmap(nullptr, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (area == MAP_FAILED)
		return {};
	const auto a = reinterpret_cast<uint64_t>(area);
	const uint64_t aligned = (a + align - 1) & ~(align - 1);
	void *p = mmap(reinterpret_cast<void *>(aligned), len, prot, MAP_SHARED | MAP_FIXED | extra_flags, fd, 0);
	if (p == MAP_FAILED) {
		const int err = errno;
		munmap(area, len + align);
		errno = err;
		return {};
	}
	if (aligned > a)
		munmap(area, aligned - a);
	if (a + align > aligned)
		munmap(reinterpret_cast<void *>(aligned + len), a + align - aligned);
	return Mapping(p, len);
}

void touch_write(char *p, size_t len, char value, size_t stride)
{
	for (size_t off = 0; off < len; off += stride)
		*static_cast<volatile char *>(p + off) = value;
}

uint64_t touch_read(const char *p, size_t len, size_t stride)
{
	uint64_t sum = 0;
	for (size_t off = 0; off < len; off += stride)
		sum += static_cast<unsigned char>(*static_cast<const volatile char *>(p + off));
	return sum;
}

void warm_up(uint64_t bytes)
{
	void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		warn("warm-up: cannot map %s: %s", human_bytes(bytes).c_str(), strerror(errno));
		return;
	}
	touch_write(static_cast<char *>(p), bytes);
	munmap(p, bytes);
}

// --- /proc ------------------------------------------------------------------

Faults faults_self()
{
	Faults f;
	std::ifstream in("/proc/self/stat");
	std::string s;
	std::getline(in, s);
	// Fields after the command (which may hold spaces): state ppid pgrp
	// session tty tpgid flags minflt cminflt majflt.
	const size_t close = s.rfind(')');
	if (close == std::string::npos)
		return f;
	std::istringstream rest(s.substr(close + 2));
	std::string skip;
	for (int i = 0; i < 7; i++)
		rest >> skip;
	uint64_t cmin = 0;
	rest >> f.minor >> cmin >> f.major;
	return f;
}

long status_kb(pid_t pid, const char *field)
{
	std::ifstream in("/proc/" + std::to_string(pid) + "/status");
	std::string line;
	const std::string key = std::string(field) + ":";
	while (std::getline(in, line))
		if (line.rfind(key, 0) == 0)
			return std::strtol(line.c_str() + key.size(), nullptr, 10);
	return -1;
}

long meminfo_kb(const char *field)
{
	// Per-CPU vmstat deltas are folded into the global counters only from
	// time to time; stat_refresh folds them now.
	if (FILE *r = fopen("/proc/sys/vm/stat_refresh", "w")) {
		fputs("1", r);
		fclose(r);
	}
	std::ifstream in("/proc/meminfo");
	std::string line;
	const std::string key = std::string(field) + ":";
	while (std::getline(in, line))
		if (line.rfind(key, 0) == 0)
			return std::strtol(line.c_str() + key.size(), nullptr, 10);
	return -1;
}

namespace {

// Settings to put back if the benchmark is interrupted (SIGINT, SIGTERM,
// SIGHUP): written from the signal handler, so kept in plain arrays.
struct PendingRestore {
	char path[128];
	char value[64];
	volatile sig_atomic_t active;
};
PendingRestore g_pending[4];
pid_t g_restore_pid;

void restore_on_signal(int sig)
{
	if (getpid() == g_restore_pid)
		for (PendingRestore &p : g_pending)
			if (p.active) {
				const int fd = open(p.path, O_WRONLY);
				if (fd >= 0) {
					ssize_t ignored = write(fd, p.value, strlen(p.value));
					(void)ignored;
					close(fd);
				}
				p.active = 0;
			}
	signal(sig, SIG_DFL);
	raise(sig);
}

PendingRestore *track(const std::string &path, const std::string &value)
{
	for (PendingRestore &p : g_pending)
		if (!p.active && path.size() < sizeof(p.path) && value.size() < sizeof(p.value)) {
			snprintf(p.path, sizeof(p.path), "%s", path.c_str());
			snprintf(p.value, sizeof(p.value), "%s", value.c_str());
			if (g_restore_pid != getpid()) {
				g_restore_pid = getpid();
				struct sigaction sa {};
				sa.sa_handler = restore_on_signal;
				sigemptyset(&sa.sa_mask);
				for (int sig : {SIGINT, SIGTERM, SIGHUP})
					sigaction(sig, &sa, nullptr);
			}
			p.active = 1;
			return &p;
		}
	return nullptr;
}

} // namespace

std::optional<std::string> Setting::read() const
{
	std::ifstream in(path_);
	std::string s;
	if (!in || !std::getline(in, s))
		return std::nullopt;
	const size_t open = s.find('[');
	const size_t close = s.find(']');
	if (open != std::string::npos && close != std::string::npos && close > open)
		return s.substr(open + 1, close - open - 1);
	while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
		s.pop_back();
	return s;
}

bool Setting::set(const std::string &value)
{
	const auto now = read();
	if (!now)
		return false;
	if (!saved_) {
		saved_ = now;
		pending_ = track(path_, *saved_);
	}
	FILE *f = fopen(path_.c_str(), "w");
	if (!f)
		return false;
	const bool ok = fputs(value.c_str(), f) >= 0;
	const bool closed = fclose(f) == 0;
	// What the kernel made of it (nr_hugepages may get fewer pages).
	set_ = read().value_or(value);
	return ok && closed;
}

void Setting::restore()
{
	if (!saved_)
		return;
	if (pending_)
		static_cast<PendingRestore *>(pending_)->active = 0;
	pending_ = nullptr;
	const auto now = read();
	if (now && *now == set_) {
		if (FILE *f = fopen(path_.c_str(), "w")) {
			fputs(saved_->c_str(), f);
			fclose(f);
		}
	} else {
		warn("%s changed under the benchmark (now %s); not restoring %s", path_.c_str(),
		     now ? now->c_str() : "?", saved_->c_str());
	}
	saved_.reset();
}

// --- processes ---------------------------------------------------------------

Pipe::Pipe()
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) == 0) {
		r.reset(fds[0]);
		w.reset(fds[1]);
	}
}

bool Pipe::send(char c) const { return send_all(&c, 1); }

char Pipe::recv(int timeout_ms) const
{
	char c = 0;
	return recv_all(&c, 1, timeout_ms) ? c : 0;
}

bool Pipe::send_all(const void *buf, size_t len) const
{
	const char *p = static_cast<const char *>(buf);
	while (len) {
		const ssize_t n = write(w.get(), p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= static_cast<size_t>(n);
	}
	return true;
}

bool Pipe::recv_all(void *buf, size_t len, int timeout_ms) const
{
	char *p = static_cast<char *>(buf);
	while (len) {
		pollfd pfd{r.get(), POLLIN, 0};
		const int ready = poll(&pfd, 1, timeout_ms);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0)
			return false;
		const ssize_t n = read(r.get(), p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= static_cast<size_t>(n);
	}
	return true;
}

pid_t spawn(const std::function<int()> &fn)
{
	fflush(nullptr);
	const pid_t parent = getpid();
	const pid_t pid = fork();
	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(98);
	int code = 0;
	try {
		code = fn();
	} catch (const std::exception &e) {
		fprintf(stderr, "mshare-bench: %s\n", e.what());
		code = 99;
	} catch (...) {
		code = 99;
	}
	fflush(nullptr);
	_exit(code);
}

int wait_child(pid_t pid, const std::string &what, int timeout_s)
{
	auto status = wait_status(pid, timeout_s * 1000);
	if (!status) {
		warn("%s: still running after %d s; killed", what.c_str(), timeout_s);
		kill(pid, SIGKILL);
		status = wait_status(pid, -1);
		return -1;
	}
	if (WIFEXITED(*status))
		return WEXITSTATUS(*status);
	warn("%s: killed by signal %d (%s)", what.c_str(), WTERMSIG(*status), strsignal(WTERMSIG(*status)));
	return -1;
}

Crew::~Crew()
{
	for (pid_t pid : pids_)
		kill(pid, SIGKILL);
	for (pid_t pid : pids_)
		wait_status(pid, -1);
}

bool Crew::add(pid_t pid)
{
	if (pid < 0)
		return false;
	pids_.push_back(pid);
	return true;
}

bool Crew::join(const std::string &what, int timeout_s)
{
	bool ok = true;
	const uint64_t deadline = now_ns() + static_cast<uint64_t>(timeout_s) * 1000000000ULL;
	for (pid_t pid : pids_) {
		const uint64_t now = now_ns();
		const int left_ms = now < deadline ? static_cast<int>((deadline - now) / 1000000) : 0;
		auto status = wait_status(pid, left_ms);
		if (!status) {
			warn("%s: a process (%d) did not finish in time; killed", what.c_str(), pid);
			kill(pid, SIGKILL);
			wait_status(pid, -1);
			ok = false;
		} else if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
			if (WIFSIGNALED(*status))
				warn("%s: a process (%d) was killed by signal %d (%s)", what.c_str(), pid,
				     WTERMSIG(*status), strsignal(WTERMSIG(*status)));
			else
				warn("%s: a process (%d) failed (exit code %d)", what.c_str(), pid,
				     WEXITSTATUS(*status));
			ok = false;
		}
	}
	pids_.clear();
	return ok;
}

std::optional<std::vector<double>> measure_in_child(const std::string &what,
						    const std::function<std::vector<double>()> &fn, int timeout_s)
{
	Pipe result;
	const pid_t pid = spawn([&] {
		const std::vector<double> v = fn();
		if (v.empty())
			return 1;
		const uint64_t n = v.size();
		return result.send_all(&n, sizeof(n)) && result.send_all(v.data(), n * sizeof(double)) ? 0 : 2;
	});
	if (pid < 0) {
		warn("%s: fork: %s", what.c_str(), strerror(errno));
		return std::nullopt;
	}
	result.w.reset();
	uint64_t n = 0;
	std::vector<double> v;
	if (result.recv_all(&n, sizeof(n)) && n < (1u << 20)) {
		v.resize(n);
		if (!result.recv_all(v.data(), n * sizeof(double)))
			v.clear();
	}
	const int code = wait_child(pid, what, timeout_s);
	if (code != 0 || v.empty()) {
		if (code > 0)
			warn("%s: failed (exit code %d)", what.c_str(), code);
		return std::nullopt;
	}
	return v;
}

// --- msharefs ---------------------------------------------------------------

bool enter_namespace(std::string *error)
{
	if (geteuid() != 0) {
		*error = "needs root (it mounts msharefsd in a private mount namespace)";
		return false;
	}
	if (access("/dev/fuse", R_OK | W_OK) != 0) {
		*error = std::string("no FUSE: /dev/fuse: ") + strerror(errno);
		return false;
	}
	if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
		*error = std::string("cannot enter a private mount namespace: ") + strerror(errno);
		return false;
	}
	if (mount("tmpfs", "/sys/fs", "tmpfs", 0, "mode=0755") != 0 || mkdir(kMount, 0755) != 0 ||
	    mount("tmpfs", "/dev/shm", "tmpfs", 0, "mode=1777") != 0) {
		*error = std::string("cannot mount tmpfs over /sys/fs or /dev/shm: ") + strerror(errno);
		return false;
	}
	signal(SIGPIPE, SIG_IGN);
	return true;
}

std::unique_ptr<Daemon> Daemon::start(const Config &cfg, const std::string &options, std::string *error)
{
	if (access(cfg.daemon.c_str(), X_OK) != 0) {
		*error = cfg.daemon + ": " + strerror(errno) + " (build it, or pass --daemon)";
		return nullptr;
	}
	Fd log(memfd_create("msharefsd-log", MFD_CLOEXEC));
	fflush(nullptr);
	const pid_t pid = fork();
	if (pid < 0) {
		*error = std::string("fork: ") + strerror(errno);
		return nullptr;
	}
	if (pid == 0) {
		// If the benchmark dies, the daemon unmounts and goes too.
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		const int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
		}
		if (log)
			dup2(log.get(), 2);
		execl(cfg.daemon.c_str(), cfg.daemon.c_str(), "-f", "-o", options.c_str(), kMount,
		      static_cast<char *>(nullptr));
		fprintf(stderr, "exec %s: %s\n", cfg.daemon.c_str(), strerror(errno));
		_exit(127);
	}
	std::unique_ptr<Daemon> d(new Daemon());
	for (int i = 0; i < 1000; i++) {
		struct stat st {};
		if (mounted() && stat((std::string(kMount) + "/" MSHAREFS_INFO_NAME).c_str(), &st) == 0) {
			d->pid_ = pid;
			d->log_ = std::move(log);
			return d;
		}
		if (auto status = wait_status(pid, 0)) {
			std::string why = log ? log_text(log.get()) : std::string();
			if (why.empty())
				why = WIFEXITED(*status) ? "exit code " + std::to_string(WEXITSTATUS(*status))
							 : "killed by signal " + std::to_string(WTERMSIG(*status));
			*error = "msharefsd did not start: " + why;
			return nullptr;
		}
		usleep(10000);
	}
	kill(pid, SIGTERM);
	wait_child(pid, "msharefsd", 10);
	*error = "msharefsd did not come up in 10 s";
	return nullptr;
}

Daemon::~Daemon()
{
	if (pid_ < 0)
		return;
	if (umount2(kMount, 0) != 0) {
		warn("umount %s: %s; detaching it", kMount, strerror(errno));
		umount2(kMount, MNT_DETACH);
	}
	if (!wait_status(pid_, 20000)) {
		warn("msharefsd did not stop after umount; killing it");
		kill(pid_, SIGKILL);
		wait_status(pid_, -1);
	}
	if (log_)
		if (const std::string said = log_text(log_.get()); !said.empty())
			warn("msharefsd said: %s", said.c_str());
}

std::string region_path(const std::string &name) { return std::string(kMount) + "/" + name; }

Fd create_region(const std::string &name, uint64_t region_size, uint64_t map_size, std::string *error)
{
	Fd fd(open(region_path(name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
	if (!fd) {
		*error = "create " + region_path(name) + ": " + strerror(errno);
		return {};
	}
	mshare_info info{kRegionStart, region_size};
	if (ioctl(fd.get(), MSHAREFS_SET_SIZE, &info) != 0) {
		*error = std::string("MSHAREFS_SET_SIZE: ") + strerror(errno);
		return {};
	}
	mshare_create c{};
	c.addr = kRegionStart;
	c.size = map_size;
	c.prot = PROT_READ | PROT_WRITE;
	c.flags = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;
	c.fd = static_cast<uint32_t>(-1);
	if (ioctl(fd.get(), MSHAREFS_CREATE_MAPPING, &c) != 0) {
		*error = std::string("MSHAREFS_CREATE_MAPPING: ") + strerror(errno);
		return {};
	}
	return fd;
}

Mapping attach_window(int fd, std::string *error)
{
	mshare_info info{};
	if (ioctl(fd, MSHAREFS_GET_SIZE, &info) != 0) {
		*error = std::string("MSHAREFS_GET_SIZE: ") + strerror(errno);
		return {};
	}
	void *p = mshare_runtime_mmap(reinterpret_cast<void *>(info.start), info.size, PROT_READ | PROT_WRITE,
				      MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		*error = std::string("attaching the window through the uffd runtime: ") + strerror(errno);
		return {};
	}
	Mapping w(p, info.size, !!mshare_runtime_windows_touch(p, 1));
	if (!mshare_runtime_windows_touch(p, 1)) {
		*error = "the daemon does not offer the uffd runtime (datapath=uffd)";
		return {};
	}
	return w;
}

int protect_region(int fd, uint64_t offset, uint64_t size, uint32_t prot)
{
	mshare_protect p{kRegionStart + offset, size, prot, 0};
	return ioctl(fd, MSHAREFS_PROTECT, &p) == 0 ? 0 : errno;
}

} // namespace msharefs::bench
