// Region statistics (user.mshare.stats, and user.mshare.unlinked on the mount
// root): who has a window, what is resident, what the page tables cost.
//
// Who sees what: a caller sees a region's figures only if it could open the
// region, as the kernel's default_permissions judges it (read permission on
// the region, search permission on every directory above it; uid 0 sees
// every region). user.mshare.unlinked lists only such regions; stats of any
// other region fail with EACCES.
//
// Locking: the registry is read under registry_lock_ held shared for a
// snapshot only (names, modes, mappings, references to the objects); the
// figures (/proc scans, pagemap, SEEK_DATA and mincore() on the objects) are
// computed without it, so that a reader never holds up region operations
// (glibc's shared mutex lets readers in ahead of a waiting writer). One
// computation runs at a time (stats_lock_). The object table and the runtime
// service have their own locks; nothing here waits on this daemon.
#include "filesystem.hpp"

#include "msharefs/region_stats.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

namespace msharefs {

namespace {

constexpr uint64_t kChunk = 2ULL << 20;	     // what one PTE table maps
constexpr uint64_t kPmdSpan = 1ULL << 30;    // what one PMD table maps
constexpr uint64_t kMincoreStep = 1ULL << 30; // object bytes looked at per mapping

struct FileIdentity {
	dev_t dev;
	ino_t ino;
	auto operator<=>(const FileIdentity &) const = default;
};

// A process's mapping of one of the files: [start, end) at file offset.
struct FileMapping {
	int32_t pid;
	uint64_t start, end, offset;
};

// The mappings (of processes other than this daemon) of one of the files,
// from /proc/PID/maps.
std::vector<FileMapping> mappings_of(const std::vector<FileIdentity> &ids)
{
	std::vector<FileMapping> found;
	DIR *proc = opendir("/proc");
	if (!proc)
		return found;
	const int self = getpid();
	while (dirent *e = readdir(proc)) {
		char *end = nullptr;
		const long pid = std::strtol(e->d_name, &end, 10);
		if (*end || pid <= 0 || pid == self)
			continue;
		std::ifstream maps(std::string("/proc/") + e->d_name + "/maps");
		std::string line;
		while (std::getline(maps, line)) {
			// start-end perms offset major:minor inode path
			unsigned long long start = 0, stop = 0, offset = 0, ino = 0;
			unsigned int dev_major = 0, dev_minor = 0;
			if (std::sscanf(line.c_str(), "%llx-%llx %*s %llx %x:%x %llu", &start, &stop, &offset,
					&dev_major, &dev_minor, &ino) != 6)
				continue;
			const FileIdentity id{makedev(dev_major, dev_minor), static_cast<ino_t>(ino)};
			if (std::find(ids.begin(), ids.end(), id) != ids.end())
				found.push_back({static_cast<int32_t>(pid), start, stop, offset});
		}
	}
	closedir(proc);
	return found;
}

std::vector<int32_t> pids_of(const std::vector<FileMapping> &mappings)
{
	std::vector<int32_t> pids;
	for (const FileMapping &m : mappings)
		pids.push_back(m.pid);
	std::sort(pids.begin(), pids.end());
	pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
	return pids;
}

// PAGEMAP_SCAN (Linux 6.7): the present ranges of a process's memory in one
// call, holes skipped by the kernel's page-table walk. Declared here because
// older uapi headers lack it.
struct PageRegion {
	uint64_t start, end, categories;
};
struct PagemapScanArg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
		category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PagemapScanArg);
constexpr uint64_t kPageIsPresent = 1 << 3;

// Adds the present pages of [addr, end) in the process of pagemap_fd to
// *chunks (2 MiB chunks of the region, window at region offset
// region_at_addr); returns their bytes.
uint64_t present_pages(int pagemap_fd, uint64_t addr, uint64_t end, uint64_t region_at_addr,
		       std::set<uint64_t> *chunks)
{
	uint64_t present = 0;
	auto add = [&](uint64_t from, uint64_t to) {
		present += to - from;
		for (uint64_t c = (region_at_addr + (from - addr)) / kChunk;
		     c <= (region_at_addr + (to - 1 - addr)) / kChunk; c++)
			chunks->insert(c);
	};
	std::vector<PageRegion> regions(512);
	PagemapScanArg arg{};
	arg.size = sizeof(arg);
	arg.start = addr;
	arg.end = end;
	arg.vec = reinterpret_cast<uintptr_t>(regions.data());
	arg.vec_len = regions.size();
	arg.category_mask = kPageIsPresent;
	arg.return_mask = kPageIsPresent;
	bool unsupported = false;
	while (arg.start < end) {
		const int n = ioctl(pagemap_fd, kPagemapScan, &arg);
		if (n < 0) {
			unsupported = errno == ENOTTY || errno == EINVAL;
			break;
		}
		for (int i = 0; i < n; i++)
			add(regions[static_cast<size_t>(i)].start, regions[static_cast<size_t>(i)].end);
		if (arg.walk_end <= arg.start)
			break;
		arg.start = arg.walk_end;
	}
	if (!unsupported)
		return present;
	// A kernel without PAGEMAP_SCAN: one pagemap entry per page.
	std::vector<uint64_t> entries;
	for (uint64_t at = arg.start; at < end; at += kMincoreStep) {
		const uint64_t len = std::min(kMincoreStep, end - at);
		entries.assign(len / kPageSize, 0);
		const ssize_t got = pread(pagemap_fd, entries.data(), entries.size() * sizeof(uint64_t),
					  static_cast<off_t>(at / kPageSize * sizeof(uint64_t)));
		for (ssize_t i = 0; got > 0 && i < got / static_cast<ssize_t>(sizeof(uint64_t)); i++)
			if (entries[static_cast<size_t>(i)] >> 63) // present
				add(at + static_cast<uint64_t>(i) * kPageSize, at + static_cast<uint64_t>(i + 1) * kPageSize);
	}
	return present;
}

// The pages of the region's mappings that one process has present in its
// window of the FUSE file (the page cache it maps: written pages may not
// have reached the region's objects yet). Adds the 2 MiB chunks they fall
// in to *chunks; returns the bytes.
template <typename Mappings>
uint64_t present_in_window(const FileMapping &w, const Mappings &mappings, std::set<uint64_t> *chunks)
{
	const int fd = open(("/proc/" + std::to_string(w.pid) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	uint64_t present = 0;
	for (const Mapping &m : mappings) {
		// The part of the mapping this window shows.
		const uint64_t lo = std::max(m.region_offset, w.offset);
		const uint64_t hi = std::min(m.end(), w.offset + (w.end - w.start));
		if (lo < hi)
			present += present_pages(fd, w.start + (lo - w.offset), w.start + (hi - w.offset), lo, chunks);
	}
	close(fd);
	return present;
}

// Adds the 2 MiB chunks of the window that object memory in
// [object_offset, object_offset + size) keeps resident, as seen by mincore().
// Only the object's data extents are looked at (SEEK_DATA/SEEK_HOLE; a file
// system without them reports all of it as data).
uint64_t resident_chunks(int fd, uint64_t object_offset, uint64_t size, uint64_t region_offset,
			 std::set<uint64_t> *chunks)
{
	uint64_t resident = 0;
	std::vector<unsigned char> vec;
	const uint64_t end = object_offset + size;
	for (uint64_t pos = object_offset; pos < end;) {
		const off_t data = lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
		if (data < 0)
			break; // ENXIO: no data after pos
		const uint64_t from = static_cast<uint64_t>(data) & ~(kPageSize - 1);
		if (from >= end)
			break;
		const off_t hole = lseek(fd, data, SEEK_HOLE);
		const uint64_t to = hole < 0 ? end : std::min(end, static_cast<uint64_t>(hole));
		for (uint64_t at = from; at < to; at += kMincoreStep) {
			const uint64_t len = std::min(kMincoreStep, to - at);
			void *p = mmap(nullptr, len, PROT_NONE, MAP_SHARED | MAP_NORESERVE, fd, static_cast<off_t>(at));
			if (p == MAP_FAILED)
				continue;
			vec.assign((len + kPageSize - 1) / kPageSize, 0);
			if (mincore(p, len, vec.data()) == 0)
				for (size_t i = 0; i < vec.size(); i++)
					if (vec[i] & 1) {
						resident += kPageSize;
						chunks->insert((region_offset + (at - object_offset) + i * kPageSize) /
							       kChunk);
					}
			munmap(p, len);
		}
		pos = std::max(to, pos + kPageSize);
	}
	return resident;
}

// The 1 GiB ranges (one PMD table each) that 2 MiB chunks fall in.
std::set<uint64_t> pmd_ranges_of(const std::set<uint64_t> &chunks)
{
	std::set<uint64_t> ranges;
	for (uint64_t c : chunks)
		ranges.insert(c * kChunk / kPmdSpan);
	return ranges;
}


// The credentials of a request's caller.
struct Caller {
	uid_t uid = 0;
	gid_t gid = 0;
	std::vector<gid_t> groups; // supplementary
};

Caller caller_of(fuse_req_t req)
{
	const fuse_ctx *ctx = fuse_req_ctx(req);
	Caller c{ctx->uid, ctx->gid, {}};
	if (c.uid == 0)
		return c;
	std::vector<gid_t> groups(64);
	for (int tries = 0; tries < 3; tries++) {
		const int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
		if (n < 0)
			break; // none known: judged by uid and gid alone
		if (static_cast<size_t>(n) <= groups.size()) {
			groups.resize(static_cast<size_t>(n));
			c.groups = std::move(groups);
			break;
		}
		groups.resize(static_cast<size_t>(n));
	}
	return c;
}

// generic_permission() without ACLs (msharefs has none): `want` is 4 (read)
// or 1 (search); uid 0 may do both everywhere.
bool permits(const Caller &c, const NodeRecord &node, uint32_t want)
{
	if (c.uid == 0)
		return true;
	uint32_t bits = node.mode;
	if (c.uid == node.uid)
		bits >>= 6;
	else if (c.gid == node.gid ||
		 std::find(c.groups.begin(), c.groups.end(), static_cast<gid_t>(node.gid)) != c.groups.end())
		bits >>= 3;
	return (bits & want) == want;
}

// Whether the caller could open the region for reading: read on it, search
// on each directory above it up to the mount root (those that still exist,
// for a region whose name is gone).
bool may_open(Registry &registry, const Caller &c, const NodeRecord &region)
{
	if (!permits(c, region, 4))
		return false;
	for (const NodeRecord *dir = registry.find(region.parent); dir; dir = registry.find(dir->parent)) {
		if (!permits(c, *dir, 1))
			return false;
		if (dir->ino == kRootIno)
			break;
	}
	return true;
}

} // namespace

// What the figures of one region are computed from, taken under
// registry_lock_: the objects are held (an UNMAP meanwhile only unlinks
// their memory), the rest is copied.
struct Filesystem::RegionSnapshot {
	RegionStats stats; // the registry's fields filled in
	uint64_t ino = 0;
	std::vector<Mapping> mappings;
	std::vector<std::shared_ptr<BackingObject>> objects; // one per mapping, null if none
};

// Without passthrough: each window of the region, " PID=kmod" or
// " PID=pagecache".
std::string Filesystem::kmod_window_paths(uint64_t ino)
{
	std::vector<FileIdentity> module;
	dev_t dev = 0;
	ino_t file_ino = 0;
	if (kmod_->identity(ino, &dev, &file_ino) == 0)
		module.push_back({dev, file_ino});
	std::map<int32_t, const char *> windows;
	for (int32_t pid : pids_of(mappings_of({{mount_dev_, static_cast<ino_t>(ino)}})))
		windows[pid] = "pagecache";
	for (int32_t pid : pids_of(mappings_of(module)))
		windows[pid] = "kmod"; // a process with both is listed once
	std::string value;
	for (const auto &[pid, path] : windows)
		value += " " + std::to_string(pid) + "=" + path;
	return value;
}

// Caller holds registry_lock_.
Filesystem::RegionSnapshot Filesystem::snapshot_region_locked(const NodeRecord &node)
{
	RegionSnapshot snap;
	RegionStats &s = snap.stats;
	// The path below the mount.
	std::string path(node.name.begin(), node.name.end());
	for (const NodeRecord *dir = registry_->find(node.parent); dir && dir->ino != kRootIno;
	     dir = registry_->find(dir->parent))
		path = std::string(dir->name.begin(), dir->name.end()) + "/" + path;
	s.name = path;
	s.unlinked = node.unlinked;
	s.size = node.geometry.sized ? node.geometry.size : 0;
	s.start = node.geometry.start;
	s.owner_pid = node.orphaned ? 0 : node.owner_pid;
	s.owner_uid = node.uid;
	s.mode = node.mode & 07777;
	s.backend = kmod_ ? "kmod" : runtime_ ? "uffd" : "compat";
	int err = 0;
	s.backing = region_attribute_locked(node, "user.mshare.backing", &err);
	snap.ino = node.ino;
	snap.mappings.assign(node.mappings.begin(), node.mappings.end());
	for (const Mapping &m : snap.mappings) {
		std::shared_ptr<BackingObject> object;
		ObjectTable::const_accessor acc;
		if (!kmod_ && objects_.find(acc, ObjectKey{node.ino, m.object_id}))
			object = acc->second;
		snap.objects.push_back(std::move(object));
	}
	return snap;
}

// The figures, from a snapshot; takes no registry lock.
RegionStats Filesystem::region_stats(const RegionSnapshot &snap)
{
	RegionStats s = snap.stats;
	std::set<uint64_t> base_chunks, huge_chunks;
	std::set<uint64_t> shared_pmd_ranges; // 1 GiB ranges a hugetlb mapping covers whole
	for (size_t i = 0; i < snap.mappings.size(); i++) {
		const Mapping &m = snap.mappings[i];
		s.mappings.push_back({m.region_offset, m.size, prot_string(m.prot), object_kind_name(m.kind)});
		if (kmod_ || !snap.objects[i])
			continue;
		const UniqueFd object_fd = snap.objects[i]->open();
		const int fd = object_fd.get();
		if (fd < 0)
			continue; // freed meanwhile
		const Backing b = m.has_file ? Backing::small : snap.objects[i]->backing();
		auto &chunks = b == Backing::small ? base_chunks : huge_chunks;
		s.resident_bytes += resident_chunks(fd, m.object_offset, m.size, m.region_offset, &chunks);
		if (b == Backing::hugetlb)
			for (uint64_t g = m.region_offset / kPmdSpan; g * kPmdSpan < m.end(); g++)
				if (m.region_offset <= g * kPmdSpan && (g + 1) * kPmdSpan <= m.end())
					shared_pmd_ranges.insert(g);
	}

	std::vector<int32_t> attachers;
	if (kmod_) {
		msharefs_kmod_stats k{};
		dev_t dev = 0;
		ino_t file_ino = 0;
		if (kmod_->stats(snap.ino, &k) == 0) {
			s.resident_bytes = k.resident_pages * kPageSize;
			s.page_table_bytes_used = k.table_pages * kPageSize;
			s.page_table_figures = "exact";
			// Plain 4 KiB shared memory: every window its own tables
			// for the resident memory (taken as dense).
			const uint64_t plain = estimate_page_tables({(s.resident_bytes + kChunk - 1) / kChunk, 0,
								     (s.resident_bytes + kPmdSpan - 1) / kPmdSpan, 0},
								    k.windows).used;
			s.page_table_bytes_saved = plain > s.page_table_bytes_used ? plain - s.page_table_bytes_used : 0;
		}
		// Windows map the region file (/proc/PID/maps names the FUSE
		// file of a passthrough mapping); look for the module's too.
		std::vector<FileIdentity> ids = {{mount_dev_, static_cast<ino_t>(snap.ino)}};
		if (kmod_->identity(snap.ino, &dev, &file_ino) == 0)
			ids.push_back({dev, file_ino});
		attachers = pids_of(mappings_of(ids));
	} else {
		// Windows of the FUSE file (the compat path) and runtime windows.
		const std::vector<FileMapping> windows = mappings_of({{mount_dev_, static_cast<ino_t>(snap.ino)}});
		std::vector<int32_t> compat = pids_of(windows);
		std::vector<int32_t> runtime = runtime_ ? runtime_->attacher_pids(snap.ino) : std::vector<int32_t>{};
		std::set<uint64_t> all_chunks(base_chunks);
		all_chunks.insert(huge_chunks.begin(), huge_chunks.end());
		ResidentChunks runtime_chunks{base_chunks.size(), huge_chunks.size(), 0, 0};
		for (uint64_t g : pmd_ranges_of(all_chunks))
			(shared_pmd_ranges.count(g) ? runtime_chunks.shared_pmd_tables
							: runtime_chunks.private_pmd_tables)++;
		PageTableFigures r = estimate_page_tables(runtime_chunks, runtime.size());
		// A compat window maps the FUSE file's page cache with base pages,
		// each with its own tables for the pages it has present (pages
		// written there reach the objects at writeback only).
		for (const FileMapping &w : windows) {
			std::set<uint64_t> chunks;
			const uint64_t present = present_in_window(w, snap.mappings, &chunks);
			s.resident_bytes = std::max(s.resident_bytes, present);
			const PageTableFigures c =
				estimate_page_tables({chunks.size(), 0, pmd_ranges_of(chunks).size(), 0}, 1);
			r.used += c.used;
			r.saved += c.saved;
		}
		s.page_table_bytes_used = r.used;
		s.page_table_bytes_saved = r.saved;
		s.page_table_figures = "estimated";
		attachers = std::move(compat);
		attachers.insert(attachers.end(), runtime.begin(), runtime.end());
	}
	std::sort(attachers.begin(), attachers.end());
	attachers.erase(std::unique(attachers.begin(), attachers.end()), attachers.end());
	s.attachers = std::move(attachers);
	return s;
}

std::vector<int32_t> Filesystem::attachers_locked(const NodeRecord &node)
{
	return region_stats(snapshot_region_locked(node)).attachers;
}

// user.mshare.stats of a region; user.mshare.unlinked of the root: the
// regions that have no name any more but are still held (a JSON array).
std::string Filesystem::stats_attribute(fuse_req_t req, uint64_t ino, const std::string &name, int *err)
{
	const Caller caller = caller_of(req);
	std::lock_guard<std::mutex> serial(stats_lock_);
	std::vector<RegionSnapshot> snapshots;
	bool one_region = false;
	{
		std::shared_lock<std::shared_mutex> lock(registry_lock_);
		NodeRecord *node = registry_->find(ino);
		if (!node) {
			*err = ENOENT;
			return {};
		}
		if (name == kStatsAttribute && node->kind == NodeKind::region) {
			if (!may_open(*registry_, caller, *node)) {
				*err = EACCES;
				return {};
			}
			one_region = true;
			snapshots.push_back(snapshot_region_locked(*node));
		} else if (name == kUnlinkedAttribute && node->ino == kRootIno) {
			for (const auto &[i, n] : registry_->nodes())
				if (n.kind == NodeKind::region && n.unlinked && may_open(*registry_, caller, n))
					snapshots.push_back(snapshot_region_locked(n));
		} else {
			*err = ENODATA;
			return {};
		}
	}
	if (one_region)
		return to_json(region_stats(snapshots.front()));
	std::vector<RegionStats> list;
	for (const RegionSnapshot &snap : snapshots)
		list.push_back(region_stats(snap));
	return to_json(list);
}

} // namespace msharefs
