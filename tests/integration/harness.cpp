#include "harness.hpp"

#include <msharefs/region_stats.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <stdexcept>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>

namespace msharefs::test {

namespace {

std::string daemon_binary()
{
	const char *p = getenv("MSHAREFSD");
	return p ? p : "msharefsd";
}

bool mounted()
{
	FILE *f = fopen("/proc/self/mounts", "r");
	if (!f)
		return false;
	char line[4096];
	bool found = false;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, " /sys/fs/mshare fuse.msharefs "))
			found = true;
	fclose(f);
	return found;
}

void dump_stacks(pid_t pid)
{
	const std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
	DIR *d = opendir(task_dir.c_str());
	if (!d)
		return;
	while (dirent *de = readdir(d)) {
		if (de->d_name[0] == '.')
			continue;
		FILE *f = fopen((task_dir + "/" + de->d_name + "/stack").c_str(), "r");
		if (!f)
			continue;
		fprintf(stderr, "  thread %s:\n", de->d_name);
		char line[256];
		for (int i = 0; i < 6 && fgets(line, sizeof(line), f); i++)
			fprintf(stderr, "    %s", line);
		fclose(f);
	}
	closedir(d);
}

// Which processes still use the mount (open files, mappings, cwd).
void report_users()
{
	DIR *proc = opendir("/proc");
	if (!proc)
		return;
	while (dirent *de = readdir(proc)) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		const std::string base = std::string("/proc/") + de->d_name;
		std::string found;
		if (DIR *fds = opendir((base + "/fd").c_str())) {
			while (dirent *f = readdir(fds)) {
				char target[512] = {};
				if (readlink((base + "/fd/" + f->d_name).c_str(), target, sizeof(target) - 1) > 0 &&
				    strstr(target, kMount))
					found += std::string(" fd ") + f->d_name + "=" + target;
			}
			closedir(fds);
		}
		if (FILE *maps = fopen((base + "/maps").c_str(), "r")) {
			char line[1024];
			while (fgets(line, sizeof(line), maps))
				if (strstr(line, kMount)) {
					found += " map";
					break;
				}
			fclose(maps);
		}
		if (!found.empty())
			fprintf(stderr, "  pid %s uses the mount:%s\n", de->d_name, found.c_str());
	}
	closedir(proc);
}

// Daemons are started by a launcher forked before any test opens a file on
// the mount: a process that has a region file open or mapped cannot start
// one itself, because the new process's exec (or close) would write the
// region's dirty pages back through the daemon it is about to start.
int launcher_socket = -1;

[[noreturn]] void launcher_loop(int sock)
{
	signal(SIGCHLD, SIG_IGN); // children are reaped by the kernel
	for (;;) {
		char buf[4096];
		ssize_t n = recv(sock, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			_exit(0);
		buf[n] = '\0';
		std::vector<std::string> argv;
		for (char *p = buf; p < buf + n; p += strlen(p) + 1)
			argv.emplace_back(p);
		pid_t pid = fork();
		if (pid == 0) {
			signal(SIGCHLD, SIG_DFL);
			std::vector<char *> args;
			// "--umask=OCTAL" first: the daemon's umask.
			if (!argv.empty() && argv[0].rfind("--umask=", 0) == 0) {
				umask(static_cast<mode_t>(std::strtoul(argv[0].c_str() + 8, nullptr, 8)));
				argv.erase(argv.begin());
			}
			for (auto &a : argv)
				args.push_back(a.data());
			args.push_back(nullptr);
			execvp(args[0], args.data());
			perror("exec msharefsd");
			_exit(127);
		}
		if (send(sock, &pid, sizeof(pid), 0) != sizeof(pid))
			_exit(1);
	}
}

pid_t launch(const std::vector<std::string> &argv)
{
	std::string msg;
	for (const auto &a : argv) {
		msg += a;
		msg.push_back('\0');
	}
	pid_t pid = -1;
	if (send(launcher_socket, msg.data(), msg.size(), 0) != static_cast<ssize_t>(msg.size()) ||
	    recv(launcher_socket, &pid, sizeof(pid), 0) != sizeof(pid))
		throw std::runtime_error("the daemon launcher is gone");
	return pid;
}

// The test process's own identity: root, or with MSHAREFS_TEST_UID the given
// user (saved uid root, so that the harness can mount, stop and kill daemons).
uid_t test_uid = 0;
gid_t test_gid = 0;

// 0 or errno. Runs the tests as $MSHAREFS_TEST_UID from here on.
int become_test_user()
{
	const char *uid = getenv("MSHAREFS_TEST_UID");
	if (!uid || !*uid)
		return 0;
	char *end = nullptr;
	const long id = strtol(uid, &end, 10);
	if (*end != '\0' || id <= 0)
		return EINVAL;
	test_uid = static_cast<uid_t>(id);
	test_gid = static_cast<gid_t>(id);
	if (setgroups(0, nullptr) != 0 || setresgid(test_gid, test_gid, 0) != 0 ||
	    setresuid(test_uid, test_uid, 0) != 0)
		return errno;
	// Like any process of that user: its /proc files are its own.
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	fprintf(stderr, "tests run as uid %u (euid %u)\n", static_cast<unsigned>(getuid()),
		static_cast<unsigned>(geteuid()));
	return 0;
}

} // namespace

static int as_root_depth = 0; // nested scopes give root back at the outermost

AsRoot::AsRoot()
{
	if (test_uid != 0 && as_root_depth++ == 0 && (seteuid(0) != 0 || setegid(0) != 0))
		throw std::runtime_error("cannot regain root for the harness");
}

AsRoot::~AsRoot()
{
	if (test_uid != 0 && --as_root_depth == 0) {
		setegid(test_gid);
		seteuid(test_uid);
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	}
}

bool running_as_user() { return test_uid != 0; }

bool alive(pid_t pid)
{
	char state = 0;
	FILE *f = fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
	if (!f)
		return false;
	if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
		state = 0;
	fclose(f);
	return state != 0 && state != 'Z' && state != 'X';
}

bool eventually(const std::function<bool()> &pred, int timeout_ms)
{
	const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
	while (!pred()) {
		if (std::chrono::steady_clock::now() > deadline)
			return false;
		usleep(10000);
	}
	return true;
}

// Waits for a process that is not our child (the launcher's) to end.
bool wait_gone(pid_t pid, int timeout_s)
{
	for (int i = 0; i < timeout_s * 100; i++) {
		if (!alive(pid))
			return true;
		usleep(10000);
	}
	return false;
}

bool enter_test_namespace()
{
	if (geteuid() != 0) {
		fprintf(stderr, "integration tests need root (a FUSE mount in a private mount namespace)\n");
		return false;
	}
	if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
		perror("unshare/mount private");
		return false;
	}
	if (mount("tmpfs", "/sys/fs", "tmpfs", 0, "mode=0755") != 0 || mkdir("/sys/fs/mshare", 0755) != 0 ||
	    mount("tmpfs", "/dev/shm", "tmpfs", 0, "mode=1777") != 0) {
		perror("tmpfs over /sys/fs or /dev/shm");
		return false;
	}
	// The daemons' state root, private to this run like /dev/shm.
	if ((mkdir(kStateRoot, 0755) != 0 && errno != EEXIST) ||
	    mount("tmpfs", kStateRoot, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
		perror("tmpfs over " MSHAREFS_TEST_STATE_ROOT);
		return false;
	}
	signal(SIGPIPE, SIG_IGN);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		perror("socketpair");
		return false;
	}
	if (fork() == 0) {
		close(sv[0]);
		launcher_loop(sv[1]);
	}
	close(sv[1]);
	launcher_socket = sv[0];
	if (int err = become_test_user()) {
		fprintf(stderr, "MSHAREFS_TEST_UID=%s: %s\n", getenv("MSHAREFS_TEST_UID"), strerror(err));
		return false;
	}
	return true;
}

std::string data_path()
{
	const char *p = getenv("MSHAREFS_TEST_DATAPATH");
	return p && *p ? p : "pagecache";
}

Daemon::Daemon(std::vector<std::string> options, int umask_for_daemon)
	: options_(std::move(options)), umask_(umask_for_daemon)
{
	start();
}

Daemon::~Daemon() { stop(); }

void Daemon::start()
{
	AsRoot root;
	std::vector<std::string> argv{daemon_binary(), "-f"};
	if (umask_ >= 0) {
		char mask[24];
		snprintf(mask, sizeof(mask), "--umask=%o", static_cast<unsigned>(umask_));
		argv.insert(argv.begin(), mask);
	}
	bool chosen = false;
	for (const auto &o : options_) {
		chosen = chosen || o.rfind("datapath=", 0) == 0;
		if (o == kDefaultDataPath)
			continue;
		argv.push_back("-o");
		argv.push_back(o);
	}
	// The data path under test, named even where it is not the default.
	if (!chosen) {
		argv.push_back("-o");
		argv.push_back("datapath=" + data_path());
	}
	argv.push_back(kMount);
	pid_ = launch(argv);
	for (int i = 0; i < 500; i++) {
		struct stat st {};
		if (mounted() && stat((std::string(kMount) + "/mshare_info").c_str(), &st) == 0)
			return;
		if (!alive(pid_)) {
			pid_ = -1;
			throw std::runtime_error("msharefsd exited at start");
		}
		usleep(10000);
	}
	throw std::runtime_error("msharefsd did not come up");
}

void Daemon::stop()
{
	if (pid_ < 0)
		return;
	AsRoot root;
	if (umount2(kMount, 0) != 0) {
		fprintf(stderr, "umount %s: %s; detaching\n", kMount, strerror(errno));
		report_users();
		umount2(kMount, MNT_DETACH);
	}
	if (!wait_gone(pid_, 20)) {
		fprintf(stderr, "msharefsd did not stop after umount; killing it\n");
		dump_stacks(pid_);
		kill(pid_, SIGKILL);
		wait_gone(pid_, 5);
	}
	pid_ = -1;
}

void Daemon::kill9()
{
	AsRoot root;
	kill(pid_, SIGKILL);
	wait_gone(pid_, 20);
	pid_ = -1;
}

void Daemon::restart() { start(); }

uint64_t Daemon::alignment() const
{
	FILE *f = fopen((std::string(kMount) + "/mshare_info").c_str(), "r");
	unsigned long long v = 0;
	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

std::string path(const std::string &name) { return std::string(kMount) + "/" + name; }

pid_t spawn(const std::function<int()> &fn)
{
	fflush(nullptr);
	pid_t pid = fork();
	if (pid == 0) {
		// A fault in the child is a result, not a crash to report.
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		int code = 0;
		try {
			code = fn();
		} catch (...) {
			code = 99;
		}
		_exit(code);
	}
	return pid;
}

ChildResult wait_for(pid_t pid, int timeout_s)
{
	ChildResult r;
	const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
	int status = 0;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0)
			return r;
		if (std::chrono::steady_clock::now() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			r.timed_out = true;
			return r;
		}
		usleep(2000);
	}
	if (WIFEXITED(status))
		r.exit_code = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		r.signal = WTERMSIG(status);
	return r;
}

ChildResult run_in_child(const std::function<int()> &fn, int timeout_s)
{
	return wait_for(spawn(fn), timeout_s);
}

ChildResult run_program(const std::vector<std::string> &argv, std::string *output, int timeout_s, int as_uid,
			const std::function<void(const std::string &)> &on_output)
{
	int pipefd[2];
	if (pipe(pipefd) != 0)
		return {};
	fflush(nullptr);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		close(pipefd[1]);
		const auto id = static_cast<uid_t>(as_uid);
		if (as_uid >= 0 && (setgroups(0, nullptr) != 0 || setresgid(id, id, id) != 0 || setresuid(id, id, id) != 0)) {
			perror("setresuid");
			_exit(126);
		}
		std::vector<char *> args;
		for (auto &a : argv)
			args.push_back(const_cast<char *>(a.c_str()));
		args.push_back(nullptr);
		execvp(args[0], args.data());
		perror("exec");
		_exit(127);
	}
	close(pipefd[1]);
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	std::string out;
	ChildResult r;
	const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
	for (;;) {
		char buf[4096];
		ssize_t n;
		const size_t had = out.size();
		while ((n = read(pipefd[0], buf, sizeof(buf))) > 0)
			out.append(buf, static_cast<size_t>(n));
		if (on_output && out.size() != had)
			on_output(out);
		int status;
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid) {
			while ((n = read(pipefd[0], buf, sizeof(buf))) > 0)
				out.append(buf, static_cast<size_t>(n));
			if (WIFEXITED(status))
				r.exit_code = WEXITSTATUS(status);
			else
				r.signal = WTERMSIG(status);
			break;
		}
		if (std::chrono::steady_clock::now() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			r.timed_out = true;
			break;
		}
		usleep(2000);
	}
	close(pipefd[0]);
	if (output)
		*output += out;
	return r;
}

int set_size(int fd, uint64_t start, uint64_t size)
{
	mshare_info info{start, size};
	return ioctl(fd, MSHAREFS_SET_SIZE, &info) == 0 ? 0 : errno;
}

int get_size(int fd, mshare_info *info) { return ioctl(fd, MSHAREFS_GET_SIZE, info) == 0 ? 0 : errno; }

int create_mapping(int fd, uint64_t addr, uint64_t size, uint64_t offset, uint32_t prot, uint32_t flags,
		   int object_fd)
{
	mshare_create c{};
	c.addr = addr;
	c.size = size;
	c.offset = offset;
	c.prot = prot;
	c.flags = flags;
	c.fd = static_cast<uint32_t>(object_fd);
	return ioctl(fd, MSHAREFS_CREATE_MAPPING, &c) == 0 ? 0 : errno;
}

int unmap(int fd, uint64_t addr, uint64_t size)
{
	mshare_unmap u{addr, size};
	return ioctl(fd, MSHAREFS_UNMAP, &u) == 0 ? 0 : errno;
}

int protect(int fd, uint64_t addr, uint64_t size, uint32_t prot)
{
	mshare_protect p{addr, size, prot, 0};
	return ioctl(fd, MSHAREFS_PROTECT, &p) == 0 ? 0 : errno;
}

int create_region(const std::string &name, uint64_t start, uint64_t size, mode_t mode)
{
	int fd = open(path(name).c_str(), O_RDWR | O_CREAT | O_EXCL, mode);
	if (fd < 0)
		return -1;
	int err = set_size(fd, start, size);
	if (!err)
		err = create_mapping(fd, start, size, 0, PROT_READ | PROT_WRITE,
				     MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED);
	if (err) {
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

void *attach(int fd, int prot)
{
	mshare_info info{};
	if (int err = get_size(fd, &info)) {
		errno = err;
		return MAP_FAILED;
	}
	return mmap(reinterpret_cast<void *>(info.start), info.size, prot, MAP_SHARED | MAP_FIXED_NOREPLACE,
		    fd, 0);
}

namespace detail {

sigjmp_buf fault_jump;

namespace {

volatile sig_atomic_t g_fault_sig;
volatile int g_fault_code;
void *volatile g_fault_addr;

void on_fault(int sig, siginfo_t *si, void *)
{
	g_fault_sig = sig;
	g_fault_code = si->si_code;
	g_fault_addr = si->si_addr;
	siglongjmp(fault_jump, 1);
}

} // namespace

void catch_faults(struct sigaction *old_segv, struct sigaction *old_bus)
{
	struct sigaction sa {};
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	g_fault_sig = 0;
	sigaction(SIGSEGV, &sa, old_segv);
	sigaction(SIGBUS, &sa, old_bus);
}

Fault release_faults(const struct sigaction &old_segv, const struct sigaction &old_bus, bool faulted)
{
	sigaction(SIGSEGV, &old_segv, nullptr);
	sigaction(SIGBUS, &old_bus, nullptr);
	return faulted ? Fault{g_fault_sig, g_fault_code, g_fault_addr} : Fault{};
}

} // namespace detail

bool read_faults(const void *addr)
{
	ChildResult r = run_in_child([addr] {
		volatile char c = *static_cast<const volatile char *>(addr);
		(void)c;
		return 0;
	});
	return r.signal == SIGBUS || r.signal == SIGSEGV;
}

bool write_faults(void *addr)
{
	ChildResult r = run_in_child([addr] {
		*static_cast<volatile char *>(addr) = 1;
		return 0;
	});
	return r.signal == SIGBUS || r.signal == SIGSEGV;
}

// On datapath=kmod the module holds each region's memory: one entry per
// module region that has memory mapped.
static std::vector<std::string> module_regions()
{
	std::vector<std::string> out;
	FILE *f = fopen("/sys/module/msharefs_kmod/parameters/regions_with_memory", "r");
	unsigned long long id = 0;
	while (f && fscanf(f, "%llu", &id) == 1)
		out.push_back("kmod region " + std::to_string(id));
	if (f)
		fclose(f);
	return out;
}

int32_t region_owner(const std::string &name)
{
	std::vector<char> buf(1 << 16);
	const ssize_t n = getxattr(path(name).c_str(), msharefs::kStatsAttribute, buf.data(), buf.size());
	if (n <= 0)
		return -1;
	const auto s = msharefs::region_stats_from_json(std::string_view(buf.data(), static_cast<size_t>(n)));
	return s ? s->owner_pid : -1;
}

std::vector<std::string> region_objects()
{
	if (on_kmod())
		return module_regions();
	std::vector<std::string> out;
	AsRoot root; // the daemon's state is private to it
	DIR *d = opendir((state_dir() + "/objects").c_str());
	if (!d)
		return out;
	while (dirent *de = readdir(d))
		if (strncmp(de->d_name, "obj.", 4) == 0)
			out.emplace_back(de->d_name);
	closedir(d);
	return out;
}

std::string state_dir()
{
	std::string found;
	if (DIR *d = opendir(kStateRoot)) {
		while (dirent *de = readdir(d))
			if (de->d_type == DT_DIR && de->d_name[0] != '.')
				found = std::string(kStateRoot) + "/" + de->d_name;
		closedir(d);
	}
	return found;
}

Window::Window(int fd, int prot)
{
	mshare_info info{};
	if (get_size(fd, &info) != 0)
		return;
	void *p = attach(fd, prot);
	if (p != MAP_FAILED) {
		addr_ = p;
		size_ = info.size;
	}
}

void Window::reset()
{
	if (addr_ != MAP_FAILED)
		munmap(addr_, size_);
	addr_ = MAP_FAILED;
}

namespace {

uint64_t page_tables_now()
{
	AsRoot root; // vm.stat_refresh is root's
	if (FILE *refresh = fopen("/proc/sys/vm/stat_refresh", "w")) {
		fputs("1", refresh);
		fclose(refresh);
	}
	FILE *in = fopen("/proc/meminfo", "r");
	if (!in)
		return 0;
	char line[256];
	unsigned long long kib = 0;
	while (fgets(line, sizeof(line), in))
		if (sscanf(line, "PageTables: %llu kB", &kib) == 1)
			break;
	fclose(in);
	return kib * 1024;
}

} // namespace

uint64_t settled_page_tables()
{
	uint64_t last = page_tables_now();
	for (int i = 0; i < 40; i++) {
		usleep(50000);
		const uint64_t now = page_tables_now();
		if (now == last)
			return now;
		last = now;
	}
	return last;
}

} // namespace msharefs::test
