// msharectl: lists the regions of an msharefs mount with their figures, in
// the spirit of ipcs and lsipc. Everything it shows comes from the mount: the
// user.mshare.stats attribute of each region file and the root's
// user.mshare.unlinked (regions without a name that are still held).
#include "msharefs/region_stats.hpp"

#include <mshare.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <getopt.h>
#include <linux/limits.h>
#include <optional>
#include <pwd.h>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using msharefs::RegionStats;

constexpr const char *kUsage =
	"Usage: msharectl [OPTIONS] ls\n"
	"       msharectl [OPTIONS] stat NAME\n"
	"       msharectl [OPTIONS] top [--interval SEC] [--count N] [--sort KEY]\n"
	"\n"
	"Shows the regions of an msharefs mount: size, owner, mappings, attaching\n"
	"processes, backend (compat, uffd, kmod), resident memory and the page-table\n"
	"memory their windows use and save.\n"
	"\n"
	"Commands:\n"
	"  ls              one line per region (unlinked regions still held included)\n"
	"  stat NAME       every figure of one region; NAME is relative to the mount\n"
	"  top             ls, redrawn every --interval seconds, sorted by --sort\n"
	"\n"
	"Options:\n"
	"  -m, --mount DIR     the msharefs mount (default: /sys/fs/mshare if it is one,\n"
	"                      else $MSHAREFS_MOUNT, else the first msharefs mount)\n"
	"  -j, --json          JSON: ls and top print an array, stat an object\n"
	"  -b, --bytes         exact byte counts instead of K/M/G/T\n"
	"  -i, --interval SEC  top: seconds between refreshes (default 2)\n"
	"  -n, --count N       top: stop after N refreshes (default: until interrupted)\n"
	"  -s, --sort KEY      top: resident, pt, attachers, size or name (default resident)\n"
	"  -h, --help          this text\n"
	"  -V, --version       the version\n"
	"\n"
	"Exit status: 0 on success, 1 on an error, 2 on bad usage.\n";

struct Settings {
	std::string mount;
	bool json = false;
	bool bytes = false;
	double interval = 2;
	long count = -1;
	std::string sort = "resident";
};

[[noreturn]] void fail(const std::string &what, int status = 1)
{
	std::fprintf(stderr, "msharectl: %s\n", what.c_str());
	std::exit(status);
}

[[noreturn]] void usage_error(const std::string &what) { fail(what + " (try --help)", 2); }

// getxattr into a string; nullopt with errno set on failure. One call with
// room for the largest value (the daemon computes the figures per call).
std::optional<std::string> attribute(const std::string &path, const char *name)
{
	std::string first(XATTR_SIZE_MAX, '\0');
	if (const ssize_t got = getxattr(path.c_str(), name, first.data(), first.size()); got >= 0) {
		first.resize(static_cast<size_t>(got));
		return first;
	}
	if (errno != ERANGE)
		return std::nullopt;
	for (;;) {
		const ssize_t need = getxattr(path.c_str(), name, nullptr, 0);
		if (need < 0)
			return std::nullopt;
		std::string value(static_cast<size_t>(need), '\0');
		const ssize_t got = getxattr(path.c_str(), name, value.data(), value.size());
		if (got >= 0) {
			value.resize(static_cast<size_t>(got));
			return value;
		}
		if (errno != ERANGE) // grew in between: ask again
			return std::nullopt;
	}
}

std::optional<RegionStats> region_at(const std::string &path)
{
	auto text = attribute(path, msharefs::kStatsAttribute);
	if (!text)
		return std::nullopt;
	auto s = msharefs::region_stats_from_json(*text);
	if (!s)
		errno = EPROTO;
	return s;
}

void walk(const std::string &mount, const std::string &rel, std::vector<RegionStats> *out)
{
	const std::string dir = rel.empty() ? mount : mount + "/" + rel;
	DIR *d = opendir(dir.c_str());
	if (!d)
		return; // not ours to read (directories may be private)
	while (dirent *e = readdir(d)) {
		const std::string name = e->d_name;
		if (name == "." || name == ".." || (rel.empty() && name == "mshare_info"))
			continue;
		const std::string child = rel.empty() ? name : rel + "/" + name;
		struct stat st {};
		if (lstat((mount + "/" + child).c_str(), &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			walk(mount, child, out);
		else if (auto s = region_at(mount + "/" + child))
			out->push_back(std::move(*s));
	}
	closedir(d);
}

std::vector<RegionStats> all_regions(const std::string &mount)
{
	std::vector<RegionStats> list;
	walk(mount, "", &list);
	if (auto text = attribute(mount, msharefs::kUnlinkedAttribute))
		if (auto unlinked = msharefs::region_stats_list_from_json(*text))
			list.insert(list.end(), unlinked->begin(), unlinked->end());
	return list;
}

std::string find_mount(const std::string &given)
{
	std::string mount = given;
	if (mount.empty()) {
		const char *m = mshare_mount_point();
		if (!m)
			fail("no msharefs mount found (is msharefsd running?)");
		mount = m;
	}
	struct stat st {};
	if (stat((mount + "/mshare_info").c_str(), &st) < 0 || !S_ISREG(st.st_mode))
		fail(mount + ": not an msharefs mount (no mshare_info)");
	return mount;
}

// ---- formatting ---------------------------------------------------------------

std::string size_text(uint64_t v, bool bytes)
{
	if (bytes || v < 1024)
		return std::to_string(v);
	const char *units = "KMGTPE";
	double d = static_cast<double>(v);
	int u = -1;
	while (d >= 1024 && u < 5) {
		d /= 1024;
		u++;
	}
	char buf[32];
	std::snprintf(buf, sizeof(buf), d < 10 ? "%.1f%c" : "%.0f%c", d, units[u]);
	return buf;
}

std::string user_name(uint32_t uid)
{
	if (const passwd *pw = getpwuid(uid))
		return pw->pw_name;
	return std::to_string(uid);
}

std::string owner_text(const RegionStats &s)
{
	return (s.owner_pid ? std::to_string(s.owner_pid) : std::string("-")) + "/" + user_name(s.owner_uid);
}

std::string display_name(const RegionStats &s) { return s.unlinked ? s.name + " (unlinked)" : s.name; }

void print_table(const std::vector<RegionStats> &list, bool bytes)
{
	std::vector<std::vector<std::string>> rows = {
		{"NAME", "SIZE", "OWNER", "MAPPINGS", "ATTACH", "BACKEND", "RESIDENT", "PT-USED", "PT-SAVED"}};
	for (const RegionStats &s : list)
		rows.push_back({display_name(s), size_text(s.size, bytes), owner_text(s),
				std::to_string(s.mappings.size()), std::to_string(s.attachers.size()), s.backend,
				size_text(s.resident_bytes, bytes), size_text(s.page_table_bytes_used, bytes),
				size_text(s.page_table_bytes_saved, bytes)});
	std::vector<size_t> width(rows[0].size(), 0);
	for (const auto &r : rows)
		for (size_t i = 0; i < r.size(); i++)
			width[i] = std::max(width[i], r[i].size());
	for (const auto &r : rows) {
		std::string line;
		for (size_t i = 0; i < r.size(); i++) {
			// Name and text columns left-aligned, figures right-aligned.
			const bool left = i == 0 || i == 2 || i == 5;
			const std::string pad(width[i] - r[i].size(), ' ');
			line += left ? r[i] + (i + 1 < r.size() ? pad : "") : pad + r[i];
			if (i + 1 < r.size())
				line += "  ";
		}
		std::printf("%s\n", line.c_str());
	}
}

// user.mshare.datapath of a region: its data path, then PID=PATH per window.
std::string data_path_text(const std::string &path)
{
	const auto value = attribute(path, "user.mshare.datapath");
	if (!value)
		return "unknown";
	std::istringstream words(*value);
	std::string text, window, windows;
	words >> text;
	while (words >> window) {
		std::replace(window.begin(), window.end(), '=', ' ');
		windows += (windows.empty() ? "" : ", ") + window;
	}
	return windows.empty() ? text : text + " (windows: " + windows + ")";
}

void print_stat(const RegionStats &s, const std::string &path, bool bytes)
{
	auto figure = [&](uint64_t v) {
		return bytes ? std::to_string(v) : size_text(v, false) + " (" + std::to_string(v) + ")";
	};
	std::printf("name:       %s\n", display_name(s).c_str());
	std::printf("size:       %s\n", s.size ? figure(s.size).c_str() : "not sized");
	std::printf("start:      0x%llx\n", static_cast<unsigned long long>(s.start));
	std::printf("owner:      %s (mode %04o)\n", owner_text(s).c_str(), s.mode);
	std::printf("backend:    %s\n", s.backend.c_str());
	std::printf("datapath:   %s\n", data_path_text(path).c_str());
	std::printf("backing:    %s\n", s.backing.c_str());
	std::printf("resident:   %s\n", figure(s.resident_bytes).c_str());
	std::printf("page tables: %s used, %s saved (%s)\n", figure(s.page_table_bytes_used).c_str(),
		    figure(s.page_table_bytes_saved).c_str(), s.page_table_figures.c_str());
	std::string pids;
	for (int32_t p : s.attachers)
		pids += (pids.empty() ? "" : " ") + std::to_string(p);
	std::printf("attachers:  %zu%s%s\n", s.attachers.size(), pids.empty() ? "" : ": ", pids.c_str());
	std::printf("mappings:   %zu\n", s.mappings.size());
	for (const auto &m : s.mappings)
		std::printf("  +0x%-12llx %10s  %s  %s\n", static_cast<unsigned long long>(m.offset),
			    size_text(m.size, bytes).c_str(), m.prot.c_str(), m.object.c_str());
}

void sort_for_top(std::vector<RegionStats> &list, const std::string &key)
{
	auto by = [&](auto field) {
		std::stable_sort(list.begin(), list.end(),
				 [&](const RegionStats &a, const RegionStats &b) { return field(a) > field(b); });
	};
	if (key == "name")
		std::stable_sort(list.begin(), list.end(),
				 [](const RegionStats &a, const RegionStats &b) { return a.name < b.name; });
	else if (key == "resident")
		by([](const RegionStats &s) { return s.resident_bytes; });
	else if (key == "pt")
		by([](const RegionStats &s) { return s.page_table_bytes_used; });
	else if (key == "attachers")
		by([](const RegionStats &s) { return s.attachers.size(); });
	else
		by([](const RegionStats &s) { return s.size; });
}

int run_top(const Settings &settings, const std::string &mount)
{
	const bool tty = isatty(STDOUT_FILENO);
	for (long round = 0; settings.count < 0 || round < settings.count; round++) {
		if (round)
			std::this_thread::sleep_for(std::chrono::duration<double>(settings.interval));
		auto list = all_regions(mount);
		sort_for_top(list, settings.sort);
		if (settings.json) {
			std::printf("%s\n", msharefs::to_json(list).c_str());
		} else {
			uint64_t resident = 0, used = 0, saved = 0, attachers = 0;
			for (const auto &s : list) {
				resident += s.resident_bytes;
				used += s.page_table_bytes_used;
				saved += s.page_table_bytes_saved;
				attachers += s.attachers.size();
			}
			char when[32];
			const time_t now = time(nullptr);
			strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
			if (tty)
				std::printf("\033[H\033[2J");
			else if (round)
				std::printf("\n");
			std::printf("msharectl top - %s - %s: %zu regions, %llu attachments, %s resident, "
				    "page tables %s used, %s saved\n\n",
				    when, mount.c_str(), list.size(), static_cast<unsigned long long>(attachers),
				    size_text(resident, settings.bytes).c_str(), size_text(used, settings.bytes).c_str(),
				    size_text(saved, settings.bytes).c_str());
			print_table(list, settings.bytes);
		}
		std::fflush(stdout);
	}
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	Settings settings;
	const option long_options[] = {
		{"mount", required_argument, nullptr, 'm'},    {"json", no_argument, nullptr, 'j'},
		{"bytes", no_argument, nullptr, 'b'},	       {"interval", required_argument, nullptr, 'i'},
		{"count", required_argument, nullptr, 'n'},    {"sort", required_argument, nullptr, 's'},
		{"help", no_argument, nullptr, 'h'},	       {"version", no_argument, nullptr, 'V'},
		{nullptr, 0, nullptr, 0},
	};
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, "m:jbi:n:s:hV", long_options, nullptr)) != -1) {
		char *end = nullptr;
		switch (c) {
		case 'm':
			settings.mount = optarg;
			break;
		case 'j':
			settings.json = true;
			break;
		case 'b':
			settings.bytes = true;
			break;
		case 'i':
			settings.interval = std::strtod(optarg, &end);
			if (*end || !(settings.interval > 0))
				usage_error(std::string("--interval ") + optarg + ": not a positive number of seconds");
			break;
		case 'n':
			settings.count = std::strtol(optarg, &end, 10);
			if (*end || settings.count <= 0)
				usage_error(std::string("--count ") + optarg + ": not a positive number");
			break;
		case 's':
			settings.sort = optarg;
			if (settings.sort != "resident" && settings.sort != "pt" && settings.sort != "attachers" &&
			    settings.sort != "size" && settings.sort != "name")
				usage_error("--sort " + settings.sort + ": not one of resident, pt, attachers, size, name");
			break;
		case 'h':
			std::fputs(kUsage, stdout);
			return 0;
		case 'V':
			std::printf("msharectl %s\n", MSHAREFS_VERSION);
			return 0;
		default:
			usage_error(optopt ? std::string("unknown option -") + static_cast<char>(optopt)
					   : std::string("unknown option ") + argv[optind - 1]);
		}
	}
	// Options may also follow the command (msharectl top --count 2): getopt
	// moves them first.
	std::vector<std::string> words;
	for (int i = optind; i < argc; i++)
		words.emplace_back(argv[i]);
	if (words.empty())
		usage_error("no command given: ls, stat NAME or top");
	const std::string command = words[0];
	if (command == "ls" || command == "top") {
		if (words.size() > 1)
			usage_error(command + ": unexpected argument '" + words[1] + "'");
	} else if (command == "stat") {
		if (words.size() != 2)
			usage_error("stat needs exactly one NAME");
	} else {
		usage_error("unknown command '" + command + "'");
	}
	const std::string mount = find_mount(settings.mount);
	if (command == "ls") {
		auto list = all_regions(mount);
		std::sort(list.begin(), list.end(),
			  [](const RegionStats &a, const RegionStats &b) { return a.name < b.name; });
		if (settings.json)
			std::printf("%s\n", msharefs::to_json(list).c_str());
		else
			print_table(list, settings.bytes);
		return 0;
	}
	if (command == "top")
		return run_top(settings, mount);
	std::string name = words[1];
	while (!name.empty() && name[0] == '/')
		name.erase(0, 1);
	const auto s = region_at(mount + "/" + name);
	if (!s) {
		const int err = errno;
		if (err == ENOENT || err == ENOTDIR)
			fail("stat " + words[1] + ": no such region");
		if (err == ENODATA)
			fail("stat " + words[1] + ": not a region");
		fail("stat " + words[1] + ": " + std::strerror(err));
	}
	if (settings.json)
		std::printf("%s\n", msharefs::to_json(*s).c_str());
	else
		print_stat(*s, mount + "/" + name, settings.bytes);
	return 0;
}
