// kmod_route: how programs reach the module through msharefsd
// (datapath=kmod), in the guest, on a kernel with FUSE passthrough (6.12) or
// without it (6.1).
//
// Run as root on the guest's /sys/fs/mshare, without LD_PRELOAD. It creates
// a region and plays the unmodified program itself (a plain mmap() of the
// region file at its start); it runs the other roles as children under
// libmshare-preload.so:
//   --writer NAME    mmap(NULL) of the region: a window at an address aligned
//                    to mshare_info, the module's; stores the parent reads
//   --reader NAME    (uid 65534) O_RDONLY: PROT_WRITE refused, a store faults
//   --forger NAME    (uid 65534) asks the runtime socket for the module file
//                    with a descriptor of another file: refused
//   --hugetlbfs-user NAME  (uid 65534) maps its own hugetlbfs memfd into a
//                    region it makes: EOPNOTSUPP (root's only)
// Without passthrough the writer's window is the module's own file (which
// msharefsd hands it), the parent's is the FUSE page cache, and the region's
// user.mshare.datapath lists them as PID=kmod and PID=pagecache.
#include "msharefs/runtime_protocol.hpp"

#include <linux/msharefs.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <string>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

namespace {

int failures = 0;

void check(bool ok, const std::string &what)
{
	std::printf("%s - %s\n", ok ? "ok" : "not ok", what.c_str());
	std::fflush(stdout);
	failures += !ok;
}

constexpr const char *kMount = "/sys/fs/mshare/";
constexpr uint64_t kGiB = 1ULL << 30;
constexpr const char *kFromModule = "stored through the module's window";
constexpr const char *kFromPageCache = "stored through the page cache";

std::string path_of(const char *name) { return std::string(kMount) + name; }

// FUSE passthrough arrived in Linux 6.9.
bool kernel_has_passthrough()
{
	utsname u{};
	int major = 0, minor = 0;
	uname(&u);
	std::sscanf(u.release, "%d.%d", &major, &minor);
	return major > 6 || (major == 6 && minor >= 9);
}

// The /proc/self/maps line of the mapping at addr ("" if none).
std::string maps_line(const void *addr)
{
	std::ifstream maps("/proc/self/maps");
	std::string line;
	const auto want = reinterpret_cast<unsigned long>(addr);
	while (std::getline(maps, line))
		if (std::strtoul(line.c_str(), nullptr, 16) == want)
			return line;
	return "";
}

// The child's status as a string, for the check lines.
std::string describe(int status)
{
	if (WIFEXITED(status))
		return "exit " + std::to_string(WEXITSTATUS(status));
	if (WIFSIGNALED(status))
		return std::string("signal ") + strsignal(WTERMSIG(status));
	return "?";
}

// Runs this program with role and name under the preload, as uid (or root),
// its stdin from in_fd (-1: none). Returns the pid.
pid_t spawn(const char *self, const char *role, const char *name, uid_t uid, int in_fd)
{
	const pid_t pid = fork();
	if (pid == 0) {
		if (in_fd >= 0)
			dup2(in_fd, 0);
		if (uid && (setgid(uid) < 0 || setuid(uid) < 0))
			_exit(125);
		setenv("LD_PRELOAD", "/libmshare-preload.so", 1);
		execl(self, self, role, name, static_cast<char *>(nullptr));
		_exit(126);
	}
	return pid;
}

int wait_for(pid_t pid)
{
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	return status;
}

// ---- the roles run under libmshare-preload.so --------------------------------

int writer(const char *name)
{
	const int fd = open(path_of(name).c_str(), O_RDWR);
	check(fd >= 0, "writer: the region opens O_RDWR");
	mshare_info info{};
	check(ioctl(fd, MSHAREFS_GET_SIZE, &info) == 0, "writer: MSHAREFS_GET_SIZE");
	auto *w = static_cast<char *>(mmap(nullptr, info.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
	check(w != MAP_FAILED, std::string("writer: mmap(NULL) of the region: ") + (w == MAP_FAILED ? strerror(errno) : "mapped"));
	if (w == MAP_FAILED)
		return 1;
	check(reinterpret_cast<uint64_t>(w) % kGiB == 0, "writer: the window is 1 GiB aligned");
	const std::string line = maps_line(w);
	if (kernel_has_passthrough())
		check(line.find(path_of(name)) != std::string::npos, "writer: the window maps the region file: " + line);
	else
		check(line.find("msharefs_region") != std::string::npos,
		      "writer: the window maps the module's file: " + line);
	std::strcpy(w, kFromModule);
	std::printf("ready\n");
	std::fflush(stdout);
	char go = 0;
	check(read(0, &go, 1) == 1, "writer: told to look");
	check(std::strcmp(w + 4096, kFromPageCache) == 0,
	      std::string("writer: sees the page cache's store after its msync: \"") + (w + 4096) + "\"");
	// A refused split leaves the window working.
	check(munmap(w + 4096, 4096) < 0 && errno == EINVAL, "writer: a partial munmap is refused (EINVAL)");
	check(std::strcmp(w, kFromModule) == 0, "writer: the window still reads after the refusal");
	check(munmap(w, info.size) == 0, "writer: munmap of the window");
	return failures ? 1 : 0;
}

int reader(const char *name)
{
	check(open(path_of(name).c_str(), O_RDWR) < 0 && errno == EACCES, "reader (uid 65534): O_RDWR refused (EACCES)");
	const int fd = open(path_of(name).c_str(), O_RDONLY);
	check(fd >= 0, "reader: the 0644 region opens O_RDONLY");
	mshare_info info{};
	ioctl(fd, MSHAREFS_GET_SIZE, &info);
	void *rw = mmap(nullptr, info.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	check(rw == MAP_FAILED && errno == EACCES, "reader: PROT_WRITE on an O_RDONLY descriptor refused (EACCES)");
	auto *r = static_cast<char *>(mmap(nullptr, info.size, PROT_READ, MAP_SHARED, fd, 0));
	check(r != MAP_FAILED, "reader: a PROT_READ window");
	if (r == MAP_FAILED)
		return 1;
	check(std::strcmp(r, kFromModule) == 0, "reader: reads the writer's store");
	const pid_t child = fork();
	if (child == 0) {
		*static_cast<volatile char *>(r) = 'X';
		_exit(0);
	}
	const int status = wait_for(child);
	check(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
	      "reader: a store through the read-only window faults (" + describe(status) + ")");
	// mprotect cannot add what the descriptor does not allow.
	check(mprotect(r, 4096, PROT_READ | PROT_WRITE) < 0, "reader: mprotect(PROT_WRITE) of the window refused");
	check(std::strcmp(r, kFromModule) == 0, "reader: the data is intact");
	return failures ? 1 : 0;
}

// A runtime peer that holds no descriptor of the region asks for its module
// file with a descriptor of a file it may read: refused.
int forger(const char *name)
{
	const int fd = open(path_of(name).c_str(), O_RDONLY);
	msharefs_runtime_info info{};
	check(fd >= 0 && ioctl(fd, MSHAREFS_IOC_RUNTIME, &info) == 0, "forger: MSHAREFS_IOC_RUNTIME");
	if (kernel_has_passthrough()) {
		check(info.flags == msharefs::kRuntimeKernelWindows && !info.socket_path[0],
		      "forger: with passthrough the runtime only places windows (no socket)");
		return failures ? 1 : 0;
	}
	check(info.flags == msharefs::kRuntimeModuleFiles, "forger: the daemon hands out module files");
	const int other = open("/proc/self/exe", O_RDONLY);
	const int sock = msharefs::connect_runtime_socket(info.socket_path);
	check(sock >= 0, "forger: connects to the runtime socket");
	msharefs::RuntimeMessage msg{};
	msg.type = msharefs::RuntimeMsgType::module_file;
	msg.ino = info.ino;
	check(msharefs::send_runtime_message(sock, msg, {other}) == 0, "forger: sends another file's descriptor");
	msharefs::RuntimeMessage reply{};
	std::vector<msharefs::UniqueFd> fds;
	const int err = msharefs::recv_runtime_message(sock, &reply, &fds);
	check(err == 0 && reply.status == EACCES && fds.empty(),
	      "forger: refused with EACCES, no descriptor (status " + std::to_string(reply.status) + ")");
	return failures ? 1 : 0;
}

// The alignment /sys/fs/mshare/mshare_info gives (0 if it cannot be read).
uint64_t mount_alignment()
{
	char text[64] = {};
	const int fd = open((std::string(kMount) + "mshare_info").c_str(), O_RDONLY | O_CLOEXEC);
	const bool read_it = fd >= 0 && read(fd, text, sizeof(text) - 1) > 0;
	if (fd >= 0)
		close(fd);
	return read_it ? std::strtoull(text, nullptr, 10) : 0;
}

// Maps 2 MiB of a hugetlbfs memfd into a region of this caller's own
// (named name, created and sized here); the ioctl's errno, or 0.
int map_hugetlbfs_file(const char *name)
{
	const int fd = open(path_of(name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
	const int huge = memfd_create("kmod_route-huge", MFD_HUGETLB | MFD_CLOEXEC);
	if (fd < 0 || huge < 0 || ftruncate(huge, 2 << 20) < 0)
		return errno ? errno : EIO;
	const uint64_t align = mount_alignment();
	mshare_info geometry{align * 4, align};
	mshare_create m{geometry.start, 2 << 20, 0, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			static_cast<__u32>(huge)};
	const int err = ioctl(fd, MSHAREFS_SET_SIZE, &geometry) < 0 || ioctl(fd, MSHAREFS_CREATE_MAPPING, &m) < 0
				? errno
				: 0;
	unlink(path_of(name).c_str());
	close(fd);
	close(huge);
	return err;
}

// A caller's own hugetlbfs file (which it could truncate under the region)
// is mapped for root only: uid 65534 gets EOPNOTSUPP.
int hugetlbfs_user(const char *name)
{
	const int err = map_hugetlbfs_file(name);
	check(err == EOPNOTSUPP,
	      std::string("hugetlbfs user (uid 65534): CREATE_MAPPING of its hugetlbfs file: ") + strerror(err));
	return failures ? 1 : 0;
}

// ---- the unmodified program, which runs the rest -----------------------------

// An unmodified process's mmap(NULL) of the region file: the kernel picks
// the address (FUSE: 2 MiB aligned at best). It reads what the region holds
// at 0 and stores at 8192; the parent checks that store.
void plain_null_mapping(const char *name, uint64_t size)
{
	int pipefd[2];
	if (pipe(pipefd) < 0)
		return;
	const pid_t pid = fork();
	if (pid == 0) {
		close(pipefd[0]);
		const int fd = open(path_of(name).c_str(), O_RDWR);
		auto *q = static_cast<char *>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
		std::string report = q == MAP_FAILED ? std::string("mmap: ") + strerror(errno)
						     : std::to_string(reinterpret_cast<uint64_t>(q) % kGiB >> 20) +
							       " MiB past a GiB, reads \"" + std::string(q, strnlen(q, 64)) + "\"";
		if (q != MAP_FAILED)
			std::strcpy(q + 8192, "stored through mmap(NULL)");
		(void)!write(pipefd[1], report.data(), report.size());
		_exit(q == MAP_FAILED || std::strcmp(q, kFromModule) ? 1 : 0);
	}
	close(pipefd[1]);
	char buf[256] = {};
	(void)!read(pipefd[0], buf, sizeof(buf) - 1);
	close(pipefd[0]);
	const int st = wait_for(pid);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      std::string("an unmodified process's mmap(NULL) of the region file works: ") + buf);
}

// A child in a memory cgroup of its own creates a region: msharefsd forks a
// region host for that cgroup (it must not inherit msharefsd's windows).
// True if the region was made.
bool create_from_new_cgroup(const char *name)
{
	mkdir("/sys/fs/cgroup", 0755);
	mount("none", "/sys/fs/cgroup", "cgroup2", 0, nullptr); // EBUSY if there already
	if (mkdir("/sys/fs/cgroup/kmod-route", 0755) < 0 && errno != EEXIST)
		return false;
	const pid_t child = fork();
	if (child == 0) {
		const int procs = open("/sys/fs/cgroup/kmod-route/cgroup.procs", O_WRONLY);
		if (procs < 0 || write(procs, "0", 1) != 1)
			_exit(2);
		const int fd = open(path_of(name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
		_exit(fd >= 0 ? 0 : 3);
	}
	const int st = wait_for(child);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

std::string datapath_of(const char *name)
{
	char buf[512] = {};
	const ssize_t n = getxattr(path_of(name).c_str(), "user.mshare.datapath", buf, sizeof(buf) - 1);
	return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// A /proc/meminfo count (HugePages_*), -1 if missing.
long meminfo(const char *key)
{
	std::ifstream in("/proc/meminfo");
	std::string line;
	while (std::getline(in, line))
		if (line.rfind(key, 0) == 0 && line[std::strlen(key)] == ':')
			return std::stol(line.substr(std::strlen(key) + 1));
	return -1;
}

// Huge pages nobody has taken or reserved yet.
long huge_pages_available() { return meminfo("HugePages_Free") - meminfo("HugePages_Rsvd"); }

// MAP_HUGETLB memory of a region on the module is huge pages (msharefsd's
// memfd of the mapping's own, reserved when mapped); UNMAP gives them back
// to the pool, as munmap of the last mapping of such memory does.
void check_huge_unmap(int fd, uint64_t start)
{
	const long nr = meminfo("HugePages_Total");
	std::ofstream("/proc/sys/vm/nr_hugepages") << nr + 8 << "\n";
	const long before = huge_pages_available();
	if (before < 4) {
		check(true, "# MAP_HUGETLB: no pool of 4 huge pages here: skipped");
		return;
	}
	const uint64_t at = start + kGiB;
	mshare_create huge{at, 8 << 20, 0, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED | MAP_HUGETLB, static_cast<__u32>(-1)};
	check(ioctl(fd, MSHAREFS_CREATE_MAPPING, &huge) == 0, "CREATE_MAPPING of 8 MiB of MAP_HUGETLB memory");
	char backing[64] = {};
	const bool named = fgetxattr(fd, "user.mshare.backing", backing, sizeof(backing) - 1) > 0;
	check(named && std::string(backing).find("hugetlb") != std::string::npos,
	      std::string("user.mshare.backing names hugetlb: ") + backing);
	check(huge_pages_available() == before - 4,
	      "it holds 4 huge pages of the pool (" + std::to_string(before) + " -> " +
		      std::to_string(huge_pages_available()) + " available)");
	mshare_unmap gone{at, 8 << 20};
	check(ioctl(fd, MSHAREFS_UNMAP, &gone) == 0, "UNMAP of it");
	check(huge_pages_available() == before,
	      "and the pool has them back (" + std::to_string(huge_pages_available()) + " available, " +
		      std::to_string(before) + " before)");
	const int err = map_hugetlbfs_file("route-huge-root");
	check(err == 0, std::string("root maps its own hugetlbfs file into a region: ") + strerror(err));
	std::ofstream("/proc/sys/vm/nr_hugepages") << nr << "\n";
}

int run_all(const char *self)
{
	const char *name = "route";
	const int fd = open(path_of(name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0644);
	check(fd >= 0, "the region is created (0644)");
	const uint64_t align = mount_alignment();
	check(align % kGiB == 0 && align, "mshare_info gives the alignment: " + std::to_string(align));
	mshare_info geometry{align * 4, align};
	check(ioctl(fd, MSHAREFS_SET_SIZE, &geometry) == 0, "MSHAREFS_SET_SIZE");
	mshare_create anon{geometry.start, 4 << 20, 0, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED,
			   static_cast<__u32>(-1)};
	check(ioctl(fd, MSHAREFS_CREATE_MAPPING, &anon) == 0, "CREATE_MAPPING of 4 MiB of anonymous memory");

	int to_writer[2], from_writer[2];
	if (pipe(to_writer) < 0 || pipe(from_writer) < 0)
		return 1;
	const pid_t w = fork();
	if (w == 0) {
		dup2(from_writer[1], 1);
		close(from_writer[0]);
		close(to_writer[1]);
		dup2(to_writer[0], 0);
		setenv("LD_PRELOAD", "/libmshare-preload.so", 1);
		execl(self, self, "--writer", name, static_cast<char *>(nullptr));
		_exit(126);
	}
	close(from_writer[1]);
	close(to_writer[0]);
	FILE *out = fdopen(from_writer[0], "r");
	char line[512];
	bool ready = false;
	while (!ready && std::fgets(line, sizeof(line), out)) {
		std::fputs(line, stdout); // the writer's own check lines
		ready = std::strcmp(line, "ready\n") == 0;
	}
	check(ready, "the writer (under libmshare-preload.so) attached and stored");

	// The unmodified side: a plain mmap() of the FUSE file at the start.
	auto *p = static_cast<char *>(mmap(reinterpret_cast<void *>(geometry.start), geometry.size,
					   PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0));
	check(p != MAP_FAILED, "a plain mmap() of the region file at its start");
	if (p == MAP_FAILED)
		return 1;
	check(std::strcmp(p, kFromModule) == 0, std::string("the plain window reads the writer's store: \"") + p + "\"");
	if (!kernel_has_passthrough()) {
		// msharefsd has a window of the region now (it served that read).
		check(create_from_new_cgroup("route-cgroup"), "a region created from a new memory cgroup (a new host)");
		unlink(path_of("route-cgroup").c_str());
	}
	const std::string paths = datapath_of(name);
	if (kernel_has_passthrough()) {
		check(paths == "kmod", "user.mshare.datapath with passthrough: " + paths);
	} else {
		const std::string want_a = "kmod " + std::to_string(getpid()) + "=pagecache " + std::to_string(w) + "=kmod";
		const std::string want_b = "kmod " + std::to_string(w) + "=kmod " + std::to_string(getpid()) + "=pagecache";
		check(paths == want_a || paths == want_b,
		      "user.mshare.datapath names the module window and the compat one, nothing else: " + paths);
	}
	plain_null_mapping(name, geometry.size);
	check(std::strcmp(p + 8192, "stored through mmap(NULL)") == 0,
	      std::string("its store reaches the plain window: \"") + (p + 8192) + "\"");
	std::strcpy(p + 4096, kFromPageCache);
	check(msync(p + 4096, 4096, MS_SYNC) == 0, "msync of the plain window's store");
	check(write(to_writer[1], "g", 1) == 1, "the writer is told to look");
	while (std::fgets(line, sizeof(line), out))
		std::fputs(line, stdout);
	const int ws = wait_for(w);
	check(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the writer passed (" + describe(ws) + ")");

	const int rs = wait_for(spawn(self, "--reader", name, 65534, -1));
	check(WIFEXITED(rs) && WEXITSTATUS(rs) == 0, "the read-only reader passed (" + describe(rs) + ")");
	const int fs = wait_for(spawn(self, "--forger", name, 65534, -1));
	check(WIFEXITED(fs) && WEXITSTATUS(fs) == 0, "the forger was refused (" + describe(fs) + ")");
	const int hs = wait_for(spawn(self, "--hugetlbfs-user", "route-huge-user", 65534, -1));
	check(WIFEXITED(hs) && WEXITSTATUS(hs) == 0, "the unprivileged hugetlbfs user was refused (" + describe(hs) + ")");
	check(std::strcmp(p, kFromModule) == 0, "the region's data is intact after the attacks");
	check_huge_unmap(fd, geometry.start);

	munmap(p, geometry.size);
	check(unlink(path_of(name).c_str()) == 0, "the region's name goes");
	close(fd);
	std::printf("kmod_route: %d failed\n", failures);
	return failures ? 1 : 0;
}

} // namespace

int main(int argc, char **argv)
{
	if (argc == 3 && std::strcmp(argv[1], "--writer") == 0)
		return writer(argv[2]);
	if (argc == 3 && std::strcmp(argv[1], "--reader") == 0)
		return reader(argv[2]);
	if (argc == 3 && std::strcmp(argv[1], "--forger") == 0)
		return forger(argv[2]);
	if (argc == 3 && std::strcmp(argv[1], "--hugetlbfs-user") == 0)
		return hugetlbfs_user(argv[2]);
	if (argc != 1) {
		std::fprintf(stderr, "usage: kmod_route (as root, on a datapath=kmod mount at /sys/fs/mshare)\n");
		return 2;
	}
	return run_all(argv[0]);
}
