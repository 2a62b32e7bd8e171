// mshare-run: runs an unmodified program with its large shared memory in
// msharefs regions. It checks the mount, puts libmshare-preload.so in front
// of the program's libraries and passes the settings on in the environment
// (MSHARE_RUN_*), then becomes the program. The adoption itself happens in
// the program, in the runtime (uffd-fallback/adoption.hpp).
#include <mshare.h>

#include <linux/msharefs.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <getopt.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MSHARE_PRELOAD_PATH
#define MSHARE_PRELOAD_PATH "libmshare-preload.so"
#endif

namespace {

constexpr const char *kUsage =
	"Usage: mshare-run [OPTIONS] -- COMMAND [ARGS...]\n"
	"\n"
	"Runs COMMAND, unmodified, with its large shared memory placed in msharefs\n"
	"regions, so that its processes share the page tables of that memory. Adopted\n"
	"(at least --min-size bytes each):\n"
	"  - mmap(MAP_SHARED|MAP_ANONYMOUS[|MAP_HUGETLB]), inherited across fork;\n"
	"  - System V segments: shmget, shmat, shmdt, shmctl, by key or IPC_PRIVATE;\n"
	"  - mmap(MAP_SHARED) of shm_open files and memfds (implicit regions, as\n"
	"    MAP_SHARED_PT gives them).\n"
	"Each behaves as the call it replaces; everything else is left alone. The\n"
	"regions show in `msharectl ls` with the program's processes as attachers.\n"
	"\n"
	"Options:\n"
	"  -m, --mount DIR      the msharefs mount (default: $MSHAREFS_MOUNT if it is\n"
	"                       one, else /sys/fs/mshare if it is one, else the first\n"
	"                       msharefs mount)\n"
	"  -s, --min-size SIZE  adopt segments of at least SIZE bytes; k, M, G suffixes\n"
	"                       (default 64M)\n"
	"      --no-files       leave shm_open files and memfds alone\n"
	"  -v, --verbose        one line on stderr for every segment adopted\n"
	"  -h, --help           this text\n"
	"  -V, --version        the version\n"
	"\n"
	"Environment: MSHARE_RUN_PRELOAD names the preload library to use instead of\n"
	"the installed one.\n"
	"\n"
	"Exit status: COMMAND's; 125 if mshare-run itself fails (bad usage, no mount),\n"
	"126 if COMMAND cannot be run, 127 if it is not found.\n";

[[noreturn]] void die(int status, const std::string &msg)
{
	std::fprintf(stderr, "mshare-run: %s\n", msg.c_str());
	std::exit(status);
}

bool parse_size(const char *s, unsigned long long *out)
{
	char *end = nullptr;
	errno = 0;
	if (!s || !*s || *s == '-')
		return false;
	unsigned long long v = std::strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	unsigned shift = 0;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: return false;
	}
	if (*end || (shift && v > (~0ULL >> shift)))
		return false;
	*out = v << shift;
	return true;
}

} // namespace

int main(int argc, char **argv)
{
	static const option options[] = {
		{"mount", required_argument, nullptr, 'm'}, {"min-size", required_argument, nullptr, 's'},
		{"no-files", no_argument, nullptr, 'F'},    {"verbose", no_argument, nullptr, 'v'},
		{"help", no_argument, nullptr, 'h'},	    {"version", no_argument, nullptr, 'V'},
		{nullptr, 0, nullptr, 0},
	};
	std::string mount;
	unsigned long long min_size = 64ULL << 20;
	bool files = true, verbose = false;
	int c;
	while ((c = getopt_long(argc, argv, "+m:s:vhV", options, nullptr)) != -1) {
		switch (c) {
		case 'm':
			mount = optarg;
			break;
		case 's':
			if (!parse_size(optarg, &min_size))
				die(125, std::string("--min-size ") + optarg + ": not a size (BYTES, or with k, M, G)");
			break;
		case 'F':
			files = false;
			break;
		case 'v':
			verbose = true;
			break;
		case 'h':
			std::fputs(kUsage, stdout);
			return 0;
		case 'V':
			std::printf("mshare-run %s\n", MSHAREFS_VERSION);
			return 0;
		default:
			std::fputs("Try 'mshare-run --help'.\n", stderr);
			return 125;
		}
	}
	if (optind >= argc)
		die(125, "no COMMAND (try 'mshare-run --help')");

	// The order the runtime takes for MAP_SHARED_PT without mshare-run:
	// $MSHAREFS_MOUNT if it is an msharefs mount, else (mshare_mount_point)
	// /sys/fs/mshare if it is one, else the first msharefs mount.
	if (mount.empty()) {
		const char *env = secure_getenv("MSHAREFS_MOUNT");
		if (env && *env && access((std::string(env) + "/" + MSHAREFS_INFO_NAME).c_str(), R_OK) == 0) {
			mount = env;
		} else {
			const char *found = mshare_mount_point();
			if (!found)
				die(125, "no msharefs mount (start msharefsd, or name one with --mount)");
			mount = found;
		}
	}
	char resolved[4096];
	if (!realpath(mount.c_str(), resolved))
		die(125, mount + ": " + std::strerror(errno));
	mount = resolved;
	const std::string info = mount + "/mshare_info";
	if (access(info.c_str(), R_OK) != 0)
		die(125, mount + ": not an msharefs mount");

	const char *env_preload = std::getenv("MSHARE_RUN_PRELOAD");
	const std::string preload = env_preload && *env_preload ? env_preload : MSHARE_PRELOAD_PATH;
	if (preload.find('/') != std::string::npos && access(preload.c_str(), R_OK) != 0)
		die(125, preload + ": " + std::strerror(errno));
	std::string ld = preload;
	if (const char *old = std::getenv("LD_PRELOAD"); old && *old)
		ld += std::string(":") + old;
	setenv("LD_PRELOAD", ld.c_str(), 1);
	setenv("MSHARE_RUN_MOUNT", mount.c_str(), 1);
	setenv("MSHARE_RUN_MIN_SIZE", std::to_string(min_size).c_str(), 1);
	setenv("MSHARE_RUN_FILES", files ? "1" : "0", 1);
	setenv("MSHARE_RUN_VERBOSE", verbose ? "1" : "0", 1);

	execvp(argv[optind], argv + optind);
	const int err = errno;
	die(err == ENOENT ? 127 : 126, std::string(argv[optind]) + ": " + std::strerror(err));
}
