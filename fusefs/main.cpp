// msharefsd: serves the msharefs namespace (/sys/fs/mshare) over FUSE.
#include "filesystem.hpp"
#include "state_dir.hpp"
#include "msharefs_kmod.h"

#include <linux/msharefs.h>

#include <cerrno>
#include <climits>
#include <dirent.h>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

using namespace msharefs;

namespace {

struct CommandLineOptions {
	char *align = nullptr;
	char *backing = nullptr;
	char *data_path = nullptr;
	char *max_regions_per_uid = nullptr;
	char *max_attachers_per_uid = nullptr;
	char *root_mode = nullptr;
	char *state = nullptr;
	char *state_root = nullptr;
	char *store_size = nullptr;
	char *uffd_device = nullptr;
};

const fuse_opt kOptionSpecs[] = {
	{"align=%s", offsetof(CommandLineOptions, align), 0},
	{"backing=%s", offsetof(CommandLineOptions, backing), 0},
	{"datapath=%s", offsetof(CommandLineOptions, data_path), 0},
	{"max_regions_per_uid=%s", offsetof(CommandLineOptions, max_regions_per_uid), 0},
	{"max_attachers_per_uid=%s", offsetof(CommandLineOptions, max_attachers_per_uid), 0},
	{"statedir=%s", offsetof(CommandLineOptions, state_root), 0},
	{"store_size=%s", offsetof(CommandLineOptions, store_size), 0},
	{"root_mode=%s", offsetof(CommandLineOptions, root_mode), 0},
	{"state=%s", offsetof(CommandLineOptions, state), 0},
	{"uffd_device=%s", offsetof(CommandLineOptions, uffd_device), 0},
	FUSE_OPT_END,
};

void print_usage(const char *prog)
{
	std::printf(
		"usage: %s [options] MOUNTPOINT\n"
		"\n"
		"Serves the msharefs namespace: regions of memory whose page tables\n"
		"processes share, created and attached through files and ioctls\n"
		"(see <linux/msharefs.h>). Mount it at /sys/fs/mshare where that exists.\n"
		"\n"
		"msharefs options:\n"
		"    -o align=BYTES         region alignment reported by mshare_info\n"
		"                           (default 549755813888 = 512 GiB; K/M/G/T suffixes)\n"
		"    -o datapath=auto       how windows reach the data (default): kmod when the\n"
		"                           msharefs_kmod module is loaded (and align is a\n"
		"                           multiple of 1 GiB), else uffd\n"
		"    -o datapath=pagecache  the FUSE page cache, filled from each region's\n"
		"                           mappings; holes and unmapped ranges fault with SIGBUS\n"
		"    -o datapath=uffd       as pagecache, and programs that use libmshare or\n"
		"                           run under libmshare-preload.so compose their\n"
		"                           windows from the region's objects themselves,\n"
		"                           with userfaultfd: exact semantics, PROTECT and\n"
		"                           LOCK/UNLOCK for every attacher\n"
		"    -o datapath=kmod       the msharefs_kmod module holds each region and its\n"
		"                           shared page tables; windows are FUSE passthrough\n"
		"                           mappings of the module's region files (Linux 6.9+;\n"
		"                           root, align >= 1 GiB). Without passthrough (6.1)\n"
		"                           programs under the runtime map the module's files,\n"
		"                           which msharefsd hands them, and others get the\n"
		"                           page cache\n"
		"    -o backing=auto        datapath=uffd: anonymous memory on hugetlbfs when\n"
		"                           the huge page pool can reserve it (attachers then\n"
		"                           share PMD tables), else shmem THP when shmem_enabled\n"
		"                           allows, else 4 KiB pages; also hugetlb, thp, 4k\n"
		"    -o root_mode=OCTAL     mode of the mount's root (default 1777)\n"
		"    -o max_regions_per_uid=N  regions one non-root user may hold at once\n"
		"                           (default 1024, 0 = unlimited); more fail EDQUOT\n"
		"    -o max_attachers_per_uid=N  runtime connections (attached windows) one\n"
		"                           non-root user may hold (default 4096, 0 = unlimited);\n"
		"                           more fail EDQUOT\n"
		"    -o statedir=PATH       root of the daemons' private state (default\n"
		"                           /run/msharefs; created 0755, must be root's)\n"
		"    -o state=NAME          this mount's state directory in it, 0700\n"
		"                           (default derived from the mount point)\n"
		"    -o store_size=BYTES    size of the tmpfs holding anonymous memory\n"
		"                           (default: tmpfs's, half of RAM); a store that\n"
		"                           does not fit fails ENOSPC (K/M/G/T suffixes)\n"
		"    -o uffd_device=lend    datapath=uffd: lend /dev/userfaultfd to runtime\n"
		"                           clients that hold a region open, so that system\n"
		"                           calls on their windows work without root\n"
		"                           (default); keep: lend it to no one\n"
		"\n"
		"Restart: if msharefsd is killed, start it again on the same mount point;\n"
		"it takes the mount over with every region and its data, and requests\n"
		"made meanwhile are answered. Stop it with `umount MOUNTPOINT`.\n"
		"\n"
		"Known limits of the pagecache path: mprotect, partial munmap, mremap and\n"
		"MAP_PRIVATE or short mmaps of a window cannot be refused (FUSE does not\n"
		"see them), PROTECT/LOCK/UNLOCK answer EOPNOTSUPP, and new mmaps after the\n"
		"owner exits succeed but fault on every access.\n"
		"\n",
		prog);
}

// datapath=auto: the module when it is loaded and the alignment suits it
// (then *kmod holds it), else the uffd runtime, which serves programs
// without it through the page cache as well.
std::string best_data_path(uint64_t alignment, std::unique_ptr<KmodRegions> *kmod)
{
	int err = 0;
	if (alignment % (1ULL << 30) == 0 && access(MSHAREFS_KMOD_DEVICE, F_OK) == 0)
		*kmod = KmodRegions::open(&err);
	return *kmod ? "kmod" : "uffd";
}

std::string state_prefix_for(const std::string &mountpoint)
{
	uint64_t h = 1469598103934665603ULL; // FNV-1a
	for (unsigned char c : mountpoint) {
		h ^= c;
		h *= 1099511628211ULL;
	}
	char buf[40];
	std::snprintf(buf, sizeof(buf), "msharefs.%016llx", static_cast<unsigned long long>(h));
	return buf;
}

std::string unescape_mount_path(const std::string &s)
{
	std::string out;
	for (size_t i = 0; i < s.size(); i++) {
		if (s[i] == '\\' && i + 3 < s.size()) {
			out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8)));
			i += 3;
		} else {
			out.push_back(s[i]);
		}
	}
	return out;
}

// The device number of the newest mount at `path`, from mountinfo (a stat
// of our own mount would wait for ourselves).
dev_t mount_device(const std::string &path)
{
	std::ifstream in("/proc/self/mountinfo");
	std::string line;
	dev_t dev = 0;
	while (std::getline(in, line)) {
		std::istringstream fields(line);
		std::string id, parent, majmin, root, point;
		fields >> id >> parent >> majmin >> root >> point;
		if (unescape_mount_path(point) != path)
			continue;
		unsigned maj = 0, min = 0;
		if (std::sscanf(majmin.c_str(), "%u:%u", &maj, &min) == 2)
			dev = makedev(maj, min);
	}
	return dev;
}

bool is_mounted(const std::string &path) { return mount_device(path) != 0; }

// Descriptors inherited from whoever started us are not ours. Those on the
// mount we serve are left open: closing one writes its dirty pages back
// through the daemon that is not serving yet.
void close_inherited_descriptors(const std::string &mountpoint)
{
	const std::string prefix = mountpoint + "/";
	std::vector<int> stray;
	if (DIR *d = opendir("/proc/self/fd")) {
		while (dirent *de = readdir(d)) {
			const int fd = std::atoi(de->d_name);
			if (fd < 3 || fd == dirfd(d))
				continue;
			char target[PATH_MAX] = {};
			if (readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), target, sizeof(target) - 1) < 0)
				continue;
			if (std::string(target).rfind(prefix, 0) != 0)
				stray.push_back(fd);
		}
		closedir(d);
	}
	for (int fd : stray)
		::close(fd);
}

int fail(const std::string &message)
{
	std::fprintf(stderr, "msharefsd: %s\n", message.c_str());
	return 1;
}

// Descriptors scale with regions and attachers: take all the kernel allows.
void raise_descriptor_limit()
{
	rlimit lim {};
	if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
		lim.rlim_cur = lim.rlim_max;
		setrlimit(RLIMIT_NOFILE, &lim);
	}
}

template <auto Method, class... Args> void call(fuse_req_t req, Args... args)
{
	(static_cast<Filesystem *>(fuse_req_userdata(req))->*Method)(req, args...);
}

} // namespace

const fuse_lowlevel_ops &Filesystem::operations()
{
	static const fuse_lowlevel_ops ops = [] {
		fuse_lowlevel_ops o{};
		o.init = [](void *userdata, fuse_conn_info *conn) {
			static_cast<Filesystem *>(userdata)->init(conn);
		};
		o.lookup = call<&Filesystem::lookup, fuse_ino_t, const char *>;
		o.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info *) {
			call<&Filesystem::getattr, fuse_ino_t>(req, ino);
		};
		o.setattr = [](fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, fuse_file_info *) {
			call<&Filesystem::setattr, fuse_ino_t, struct stat *, int>(req, ino, attr, to_set);
		};
		o.mknod = [](fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t) {
			call<&Filesystem::mknod, fuse_ino_t, const char *, mode_t>(req, parent, name, mode);
		};
		o.mkdir = call<&Filesystem::mkdir, fuse_ino_t, const char *, mode_t>;
		o.unlink = call<&Filesystem::unlink, fuse_ino_t, const char *>;
		o.rmdir = call<&Filesystem::rmdir, fuse_ino_t, const char *>;
		o.rename = call<&Filesystem::rename, fuse_ino_t, const char *, fuse_ino_t, const char *, unsigned>;
		o.create = call<&Filesystem::create, fuse_ino_t, const char *, mode_t, fuse_file_info *>;
		o.open = call<&Filesystem::open, fuse_ino_t, fuse_file_info *>;
		o.release = call<&Filesystem::release, fuse_ino_t, fuse_file_info *>;
		o.read = call<&Filesystem::read, fuse_ino_t, size_t, off_t, fuse_file_info *>;
		o.write = call<&Filesystem::write, fuse_ino_t, const char *, size_t, off_t, fuse_file_info *>;
		o.fsync = call<&Filesystem::fsync, fuse_ino_t, int, fuse_file_info *>;
		o.readdir = call<&Filesystem::readdir, fuse_ino_t, size_t, off_t, fuse_file_info *>;
		o.statfs = call<&Filesystem::statfs, fuse_ino_t>;
		o.fallocate = call<&Filesystem::fallocate, fuse_ino_t, int, off_t, off_t, fuse_file_info *>;
		o.getxattr = call<&Filesystem::getxattr, fuse_ino_t, const char *, size_t>;
		o.listxattr = call<&Filesystem::listxattr, fuse_ino_t, size_t>;
		o.ioctl = call<&Filesystem::ioctl, fuse_ino_t, unsigned int, void *, fuse_file_info *, unsigned,
			       const void *, size_t, size_t>;
		return o;
	}();
	return ops;
}

const fuse_custom_io &Filesystem::custom_io()
{
	static const fuse_custom_io io = [] {
		fuse_custom_io c{};
		c.read = [](int fd, void *buf, size_t len, void *userdata) {
			return static_cast<Filesystem *>(userdata)->device_read(fd, buf, len);
		};
		c.writev = [](int fd, iovec *iov, int count, void *userdata) {
			return static_cast<Filesystem *>(userdata)->device_writev(fd, iov, count);
		};
		return c;
	}();
	return io;
}

int main(int argc, char *argv[])
{
	fuse_args args = FUSE_ARGS_INIT(argc, argv);
	fuse_cmdline_opts cmd{};
	CommandLineOptions opts{};
	if (fuse_parse_cmdline(&args, &cmd) != 0)
		return 1;
	if (cmd.show_help) {
		print_usage(argv[0]);
		std::printf("FUSE options:\n");
		fuse_cmdline_help();
		fuse_lowlevel_help();
		return 0;
	}
	if (cmd.show_version) {
		std::printf("msharefsd 0.1.0\n");
		fuse_lowlevel_version();
		return 0;
	}
	if (fuse_opt_parse(&args, &opts, kOptionSpecs, nullptr) == -1)
		return 1;
	if (!cmd.mountpoint)
		return fail("no mount point given (try --help)");

	close_inherited_descriptors(cmd.mountpoint);
	raise_descriptor_limit();
	// Nothing the daemon creates is for others but the runtime socket,
	// which gets its mode explicitly.
	umask(077);
	Options options;
	options.mountpoint = cmd.mountpoint;
	options.foreground = cmd.foreground;
	options.debug = cmd.debug;
	if (opts.align) {
		auto align = parse_bytes(opts.align);
		if (!align || check_alignment(*align))
			return fail(std::string("align=") + opts.align +
				    ": not a power of two between 4096 and 64 TiB");
		options.alignment = *align;
	}
	if (opts.data_path) {
		options.data_path = opts.data_path;
		if (options.data_path != "auto" && options.data_path != "pagecache" && options.data_path != "kmod" &&
		    options.data_path != "uffd")
			return fail("datapath=" + options.data_path + ": unknown (choose auto, pagecache, uffd or kmod)");
	}
	if (opts.backing) {
		options.backing = opts.backing;
		if (!BackingStore::valid_policy(options.backing))
			return fail("backing=" + options.backing + ": unknown (choose auto, hugetlb, thp or 4k)");
	}
	if (opts.uffd_device) {
		const std::string lend = opts.uffd_device;
		if (lend != "lend" && lend != "keep")
			return fail("uffd_device=" + lend + ": unknown (choose lend or keep)");
		options.lend_uffd_device = lend == "lend";
	}
	if (opts.root_mode) {
		char *end = nullptr;
		unsigned long mode = std::strtoul(opts.root_mode, &end, 8);
		if (*end || mode > 07777)
			return fail(std::string("root_mode=") + opts.root_mode + ": not an octal mode");
		options.root_mode = static_cast<uint32_t>(mode);
	}
	if (opts.store_size) {
		auto size = parse_bytes(opts.store_size);
		if (!size || *size < kPageSize)
			return fail(std::string("store_size=") + opts.store_size + ": not a size of at least 4096 bytes");
		options.store_size = *size;
	}
	for (auto [name, text, limit] : {std::tuple{"max_regions_per_uid", opts.max_regions_per_uid,
						     &options.max_regions_per_uid},
					 std::tuple{"max_attachers_per_uid", opts.max_attachers_per_uid,
						     &options.max_attachers_per_uid}}) {
		if (!text)
			continue;
		char *end = nullptr;
		errno = 0;
		const unsigned long n = std::strtoul(text, &end, 10);
		if (*end || !*text || errno || n > UINT32_MAX)
			return fail(std::string(name) + "=" + text + ": not a count");
		*limit = static_cast<uint32_t>(n);
	}
	const std::string state_root = opts.state_root ? opts.state_root : kDefaultStateRoot;
	const std::string state_name = opts.state ? std::string(opts.state) : state_prefix_for(options.mountpoint);
	StateDir state;
	if (std::string wrong = StateDir::open(state_root, state_name, &state); !wrong.empty())
		return fail(wrong);
	const std::string keeper_socket = state.file("keeper");
	if (keeper_socket.size() >= sizeof(sockaddr_un::sun_path))
		return fail("statedir=" + state_root + ": too long for a socket path");

	// A keeper answering on the socket means a mount whose daemon died.
	std::optional<KeeperClient> keeper = KeeperClient::connect(keeper_socket);
	const bool restarted = keeper.has_value();
	std::vector<std::pair<std::string, UniqueFd>> kept;
	UniqueFd fuse_fd;
	std::unique_ptr<Registry> registry;
	try {
		if (restarted) {
			kept = keeper->take_all();
			for (auto &[tag, fd] : kept)
				if (tag == "fuse")
					fuse_fd = std::move(fd);
			if (!fuse_fd)
				return fail("the keeper of " + options.mountpoint + " holds no connection");
			registry = Registry::open(state.file("registry"));
			if (opts.align && registry->header().alignment != options.alignment)
				std::fprintf(stderr, "msharefsd: keeping the mount's alignment %llu\n",
					     static_cast<unsigned long long>(registry->header().alignment));
			options.alignment = registry->header().alignment;
		} else {
			struct stat st {};
			if (stat(options.mountpoint.c_str(), &st) < 0 && errno == ENOTCONN)
				umount2(options.mountpoint.c_str(), MNT_DETACH); // its daemon and keeper are gone
			// A stale state of a mount that is gone: start afresh.
			remove_mount_state(state.root(), state.name());
			if (std::string wrong = StateDir::open(state_root, state_name, &state); !wrong.empty())
				return fail(wrong);
			registry = Registry::create(state.file("registry"), options.alignment, options.root_mode);
		}
	} catch (const std::exception &e) {
		return fail(std::string("state of ") + options.mountpoint + ": " + e.what());
	}
	options.state_dir = state.path();
	options.runtime_socket = state.runtime_socket();
	std::unique_ptr<RequestJournal> journal;
	try {
		UniqueFd journal_fd(state.open_file("journal", restarted));
		if (!journal_fd)
			throw std::runtime_error(state.file("journal") + ": " + std::strerror(errno));
		journal = RequestJournal::open(journal_fd.get(), 256 * 4096 + 4096);
	} catch (const std::exception &e) {
		return fail(e.what());
	}

	std::unique_ptr<KmodRegions> kmod;
	if (options.data_path == "auto")
		options.data_path = best_data_path(options.alignment, &kmod);
	if (options.data_path == "kmod" && !kmod) {
		if (options.alignment % (1ULL << 30) != 0)
			return fail("datapath=kmod needs align to be a multiple of 1 GiB");
		int err = 0;
		kmod = KmodRegions::open(&err);
		if (!kmod)
			return fail(std::string("datapath=kmod: " MSHAREFS_KMOD_DEVICE ": ") + std::strerror(err) +
				    " (is msharefs_kmod loaded?)");
	}
	Filesystem fs(options, std::move(registry), std::move(journal), std::nullopt, restarted);
	if (kmod)
		fs.set_kmod(std::move(kmod));
	fuse_opt_add_arg(&args, "-odefault_permissions,allow_other,fsname=msharefs,subtype=msharefs");
	fuse_session *se = fuse_session_new(&args, &Filesystem::operations(), sizeof(fuse_lowlevel_ops), &fs);
	if (!se)
		return fail("cannot start a FUSE session");
	if (restarted) {
		if (fuse_session_custom_io(se, &Filesystem::custom_io(), fuse_fd.release()) != 0)
			return fail("cannot resume the FUSE connection");
	} else {
		if (fuse_session_mount(se, options.mountpoint.c_str()) != 0)
			return fail("cannot mount on " + options.mountpoint);
		const int fd = fuse_session_fd(se);
		if (spawn_keeper(keeper_socket, state.root(), state.name(), fd) < 0) {
			fuse_session_unmount(se);
			return fail(std::string("cannot start the keeper: ") + std::strerror(errno));
		}
		fuse_session_custom_io(se, &Filesystem::custom_io(), fd);
	}
	fs.set_mount_device(mount_device(options.mountpoint));
	if (fuse_daemonize(options.foreground) != 0)
		return fail("cannot go to the background");
	fs.set_keeper(KeeperClient::connect(keeper_socket));
	fs.attach(se, std::move(kept));
	if (fuse_set_signal_handlers(se) != 0)
		return fail("cannot install signal handlers");
	if (restarted)
		std::fprintf(stderr, "msharefsd: resumed %s\n", options.mountpoint.c_str());

	fuse_loop_config *config = fuse_loop_cfg_create();
	fuse_loop_cfg_set_idle_threads(config, RequestJournal::kSlots / 2);
	int ret = fuse_session_loop_mt(se, config);
	fuse_loop_cfg_destroy(config);

	if (ret < 0) {
		// The connection failed under us (not umount, not a signal): keep
		// the mount and every region for the next daemon, as after a crash.
		std::fprintf(stderr, "msharefsd: %s: /dev/fuse: %s; state kept, start msharefsd again to resume\n",
			     options.mountpoint.c_str(), std::strerror(-ret));
		fuse_remove_signal_handlers(se);
		std::_Exit(1);
	}
	// Stopped by a signal or by umount: either way the mount goes, and with
	// it every region.
	fuse_remove_signal_handlers(se);
	if (is_mounted(options.mountpoint))
		umount2(options.mountpoint.c_str(), MNT_DETACH);
	fs.destroy_all();
	fuse_session_destroy(se);
	remove_mount_state(state.root(), state.name(), state.fd());
	fuse_opt_free_args(&args);
	return ret < 0 ? 1 : 0;
}
