// Region statistics (user.mshare.stats, and user.mshare.unlinked on the mount
// root): who has a window, what is resident, what the page tables cost.
//
// Locking: called with registry_lock_ held shared. The object table and the
// runtime service have their own locks; reading /proc and mincore() on the
// objects never waits on this daemon.
#include "filesystem.hpp"

#include "msharefs/region_stats.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <map>
#include <set>
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

// Pids (other than this daemon) whose memory maps show one of the files.
std::vector<int32_t> pids_mapping(const std::vector<FileIdentity> &ids)
{
	std::vector<int32_t> pids;
	DIR *proc = opendir("/proc");
	if (!proc)
		return pids;
	std::vector<std::string> wanted;
	for (const FileIdentity &id : ids) {
		char text[64];
		std::snprintf(text, sizeof(text), "%02x:%02x %lu ", major(id.dev), minor(id.dev),
			      static_cast<unsigned long>(id.ino));
		wanted.emplace_back(text);
	}
	const int self = getpid();
	while (dirent *e = readdir(proc)) {
		char *end = nullptr;
		const long pid = std::strtol(e->d_name, &end, 10);
		if (*end || pid <= 0 || pid == self)
			continue;
		std::ifstream maps(std::string("/proc/") + e->d_name + "/maps");
		std::string line;
		while (std::getline(maps, line)) {
			// start-end perms offset dev inode path
			size_t field = 0, at = 0;
			while (field < 3 && (at = line.find(' ', at)) != std::string::npos) {
				at++;
				field++;
			}
			const std::string_view rest = field == 3 ? std::string_view(line).substr(at) : "";
			if (std::any_of(wanted.begin(), wanted.end(),
					[&](const std::string &w) { return rest.starts_with(w); })) {
				pids.push_back(static_cast<int32_t>(pid));
				break;
			}
		}
	}
	closedir(proc);
	return pids;
}

// Adds the 2 MiB chunks of the window that object memory in
// [object_offset, object_offset + size) keeps resident, as seen by mincore().
uint64_t resident_chunks(int fd, uint64_t object_offset, uint64_t size, uint64_t region_offset,
			 std::set<uint64_t> *chunks)
{
	uint64_t resident = 0;
	std::vector<unsigned char> vec;
	for (uint64_t done = 0; done < size; done += kMincoreStep) {
		const uint64_t len = std::min(kMincoreStep, size - done);
		void *p = mmap(nullptr, len, PROT_NONE, MAP_SHARED | MAP_NORESERVE, fd,
			       static_cast<off_t>(object_offset + done));
		if (p == MAP_FAILED)
			continue;
		vec.assign((len + kPageSize - 1) / kPageSize, 0);
		if (mincore(p, len, vec.data()) == 0)
			for (size_t i = 0; i < vec.size(); i++)
				if (vec[i] & 1) {
					resident += kPageSize;
					chunks->insert((region_offset + done + i * kPageSize) / kChunk);
				}
		munmap(p, len);
	}
	return resident;
}

} // namespace

RegionStats Filesystem::region_stats_locked(const NodeRecord &node)
{
	RegionStats s;
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
	s.backend = kmod_ ? "kmod" : options_.data_path == "uffd" ? "uffd" : "compat";
	int err = 0;
	s.backing = region_attribute_locked(node, "user.mshare.backing", &err);

	std::set<uint64_t> base_chunks, huge_chunks;
	std::map<uint64_t, uint64_t> shared_pmd_candidates; // 1 GiB index -> hugetlb bytes of one mapping
	for (const Mapping &m : node.mappings) {
		s.mappings.push_back({m.region_offset, m.size, prot_string(m.prot), object_kind_name(m.kind)});
		if (kmod_)
			continue;
		ObjectTable::const_accessor acc;
		if (!objects_.find(acc, ObjectKey{node.ino, m.object_id}) || !acc->second)
			continue;
		const int fd = acc->second->fd();
		const Backing b = m.has_file ? Backing::small : BackingStore::backing_of(fd);
		auto &chunks = b == Backing::small ? base_chunks : huge_chunks;
		s.resident_bytes += resident_chunks(fd, m.object_offset, m.size, m.region_offset, &chunks);
		if (b == Backing::hugetlb)
			for (uint64_t g = m.region_offset / kPmdSpan; g * kPmdSpan < m.end(); g++)
				if (m.region_offset <= g * kPmdSpan && (g + 1) * kPmdSpan <= m.end())
					shared_pmd_candidates[g] = 1;
	}

	std::vector<int32_t> attachers;
	if (kmod_) {
		msharefs_kmod_stats k{};
		dev_t dev = 0;
		ino_t file_ino = 0;
		if (kmod_->stats(node.ino, &k) == 0) {
			s.resident_bytes = k.resident_pages * kPageSize;
			s.page_table_bytes_used = k.table_pages * kPageSize;
			s.page_table_figures = "exact";
			// Plain 4 KiB shared memory: every window its own tables
			// for the resident memory (taken as dense).
			const uint64_t per_window = ((s.resident_bytes + kChunk - 1) / kChunk +
						     (s.resident_bytes + kPmdSpan - 1) / kPmdSpan) * kPageSize;
			const uint64_t plain = k.windows * per_window;
			s.page_table_bytes_saved = plain > s.page_table_bytes_used ? plain - s.page_table_bytes_used : 0;
		}
		// Windows map the region file (/proc/PID/maps names the FUSE
		// file of a passthrough mapping); look for the module's too.
		std::vector<FileIdentity> ids = {{mount_dev_, static_cast<ino_t>(node.ino)}};
		if (kmod_->identity(node.ino, &dev, &file_ino) == 0)
			ids.push_back({dev, file_ino});
		attachers = pids_mapping(ids);
	} else {
		// Windows of the FUSE file (the compat path) and runtime windows.
		std::vector<int32_t> compat = pids_mapping({{mount_dev_, static_cast<ino_t>(node.ino)}});
		std::vector<int32_t> runtime = runtime_ ? runtime_->attacher_pids(node.ino) : std::vector<int32_t>{};
		std::set<uint64_t> pmd_ranges, all_chunks(base_chunks);
		all_chunks.insert(huge_chunks.begin(), huge_chunks.end());
		for (uint64_t c : all_chunks)
			pmd_ranges.insert(c * kChunk / kPmdSpan);
		ResidentChunks runtime_chunks{base_chunks.size(), huge_chunks.size(), 0, 0};
		for (uint64_t g : pmd_ranges)
			(shared_pmd_candidates.count(g) ? runtime_chunks.shared_pmd_tables
							: runtime_chunks.private_pmd_tables)++;
		// The page cache is mapped with base pages.
		const ResidentChunks compat_chunks{all_chunks.size(), 0, pmd_ranges.size(), 0};
		const PageTableFigures r = estimate_page_tables(runtime_chunks, runtime.size());
		const PageTableFigures c = estimate_page_tables(compat_chunks, compat.size());
		s.page_table_bytes_used = r.used + c.used;
		s.page_table_bytes_saved = r.saved + c.saved;
		s.page_table_figures = "estimated";
		attachers = std::move(compat);
		attachers.insert(attachers.end(), runtime.begin(), runtime.end());
	}
	std::sort(attachers.begin(), attachers.end());
	attachers.erase(std::unique(attachers.begin(), attachers.end()), attachers.end());
	s.attachers = std::move(attachers);
	return s;
}

// user.mshare.stats of a region; user.mshare.unlinked of the root: the
// regions that have no name any more but are still held (a JSON array).
std::string Filesystem::stats_attribute(uint64_t ino, const std::string &name, int *err)
{
	std::shared_lock<std::shared_mutex> lock(registry_lock_);
	NodeRecord *node = registry_->find(ino);
	if (!node) {
		*err = ENOENT;
		return {};
	}
	if (name == kStatsAttribute && node->kind == NodeKind::region)
		return to_json(region_stats_locked(*node));
	if (name == kUnlinkedAttribute && node->ino == kRootIno) {
		std::vector<RegionStats> list;
		for (const auto &[i, n] : registry_->nodes())
			if (n.kind == NodeKind::region && n.unlinked)
				list.push_back(region_stats_locked(n));
		return to_json(list);
	}
	*err = ENODATA;
	return {};
}

} // namespace msharefs
