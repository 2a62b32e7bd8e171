#include "harness.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <stdexcept>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

} // namespace

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
	signal(SIGPIPE, SIG_IGN);
	return true;
}

Daemon::Daemon(std::vector<std::string> options) : options_(std::move(options)) { start(); }

Daemon::~Daemon() { stop(); }

void Daemon::start()
{
	std::vector<std::string> argv{daemon_binary(), "-f"};
	for (const auto &o : options_) {
		argv.push_back("-o");
		argv.push_back(o);
	}
	argv.push_back(kMount);
	pid_ = fork();
	if (pid_ == 0) {
		std::vector<char *> args;
		for (auto &a : argv)
			args.push_back(a.data());
		args.push_back(nullptr);
		execvp(args[0], args.data());
		perror("exec msharefsd");
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct stat st {};
		if (mounted() && stat((std::string(kMount) + "/mshare_info").c_str(), &st) == 0)
			return;
		int status;
		if (waitpid(pid_, &status, WNOHANG) == pid_) {
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
	umount2(kMount, 0) == 0 || umount2(kMount, MNT_DETACH);
	ChildResult r = wait_for(pid_, 20);
	if (r.timed_out)
		fprintf(stderr, "msharefsd did not stop after umount\n");
	pid_ = -1;
}

void Daemon::kill9()
{
	kill(pid_, SIGKILL);
	wait_for(pid_, 20);
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

ChildResult run_program(const std::vector<std::string> &argv, std::string *output, int timeout_s)
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
		while ((n = read(pipefd[0], buf, sizeof(buf))) > 0)
			out.append(buf, static_cast<size_t>(n));
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

std::vector<std::string> region_objects()
{
	std::vector<std::string> out;
	DIR *d = opendir("/dev/shm");
	if (!d)
		return out;
	while (dirent *de = readdir(d))
		if (strstr(de->d_name, ".obj."))
			out.emplace_back(de->d_name);
	closedir(d);
	return out;
}

} // namespace msharefs::test
