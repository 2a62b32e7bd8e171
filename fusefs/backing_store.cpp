#include "backing_store.hpp"

#include "process.hpp"

#include <cerrno>
#include <fcntl.h>
#include <fstream>
#include <linux/magic.h>
#include <stdexcept>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace msharefs {

namespace {

constexpr uint64_t kPmdSize = 2ULL << 20;

std::string read_line(const char *path)
{
	std::ifstream in(path);
	std::string line;
	std::getline(in, line);
	return line;
}

// The value in brackets of a sysfs choice file ("always [never] ...").
std::string selected(const std::string &choices)
{
	const auto open = choices.find('[');
	const auto close = choices.find(']', open);
	if (open == std::string::npos || close == std::string::npos)
		return {};
	return choices.substr(open + 1, close - open - 1);
}

} // namespace

const char *backing_name(Backing b)
{
	switch (b) {
	case Backing::hugetlb:
		return "hugetlb";
	case Backing::thp:
		return "thp";
	case Backing::small:
		break;
	}
	return "4k";
}

bool BackingStore::valid_policy(const std::string &policy)
{
	return policy == "auto" || policy == "hugetlb" || policy == "thp" || policy == "4k";
}

BackingStore::BackingStore(std::string state_dir, const std::string &policy, bool huge_objects, uint64_t store_size)
	: state_dir_(std::move(state_dir)), policy_(policy), store_size_(store_size), huge_objects_(huge_objects),
	  default_huge_page_size_(default_huge_page_size())
{
	if (!valid_policy(policy))
		throw std::invalid_argument("backing=" + policy + ": unknown (choose auto, hugetlb, thp or 4k)");
}

std::string BackingStore::dir(Backing b) const
{
	switch (b) {
	case Backing::hugetlb:
		return state_dir_ + "/hugetlb";
	case Backing::thp:
		return state_dir_ + "/thp";
	case Backing::small:
		break;
	}
	return state_dir_ + "/objects";
}

bool BackingStore::thp_allowed() const
{
	const std::string shmem = selected(read_line("/sys/kernel/mm/transparent_hugepage/shmem_enabled"));
	if (shmem.empty() || shmem == "deny")
		return false;
	return policy_ == "thp" || shmem != "never";
}

// Mounts the file system of a backing in the state directory unless a
// previous daemon of this mount already did. The directory is the daemon's
// own (0700, see StateDir): no one else can have put anything there.
bool BackingStore::ensure_mounted(Backing b)
{
	const std::string path = dir(b);
	if (mkdir(path.c_str(), 0700) < 0 && errno != EEXIST)
		return false;
	struct statfs sfs {};
	struct stat here {}, state {};
	if (lstat(path.c_str(), &here) < 0 || !S_ISDIR(here.st_mode)) {
		errno = ENOTDIR;
		return false;
	}
	if (statfs(path.c_str(), &sfs) == 0 && stat(state_dir_.c_str(), &state) == 0 && here.st_dev != state.st_dev) {
		const auto type = static_cast<unsigned long>(sfs.f_type);
		if (b == Backing::hugetlb && type == HUGETLBFS_MAGIC)
			return true;
		if (b != Backing::hugetlb && type == TMPFS_MAGIC)
			return true;
	}
	if (b == Backing::hugetlb)
		return mount("msharefs", path.c_str(), "hugetlbfs", MS_NOSUID | MS_NODEV, "mode=0700") == 0;
	std::string data = "mode=0700";
	if (b == Backing::thp)
		data += ",huge=within_size";
	if (store_size_)
		data += ",size=" + std::to_string(store_size_);
	return mount("msharefs", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, data.c_str()) == 0;
}

std::shared_ptr<BackingObject> BackingStore::create_in(Backing b, const std::string &name, uint64_t size,
						       ObjectKind kind, uint64_t unit, int *err)
{
	if (!ensure_mounted(b)) {
		*err = errno ? errno : ENODEV;
		return nullptr;
	}
	const std::string path = dir(b) + "/" + name;
	UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
	if (!fd) {
		*err = errno;
		return nullptr;
	}
	const uint64_t rounded = (size + unit - 1) / unit * unit;
	if (ftruncate(fd.get(), static_cast<off_t>(rounded)) < 0) {
		*err = errno == EINVAL ? ENOMEM : errno;
		unlink(path.c_str());
		return nullptr;
	}
	if (b == Backing::hugetlb) {
		// A shared mapping reserves the huge pages for the file; the
		// reservation stays with it, so no attacher can fault SIGBUS.
		void *p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
		if (p == MAP_FAILED) {
			*err = ENOMEM;
			unlink(path.c_str());
			return nullptr;
		}
		munmap(p, rounded);
	}
	return std::make_shared<BackingObject>(std::move(fd), kind, path);
}

std::shared_ptr<BackingObject> BackingStore::create(const std::string &name, const Mapping &m, int *err)
{
	const bool aligned = m.region_offset % default_huge_page_size_ == 0 && m.size % default_huge_page_size_ == 0;
	const bool wants_hugetlb = m.kind == ObjectKind::hugetlb ? m.huge_page_size == default_huge_page_size_
								 : policy_ == "auto" || policy_ == "hugetlb";
	if (huge_objects_ && aligned && wants_hugetlb) {
		if (auto object = create_in(Backing::hugetlb, name, m.size, m.kind, default_huge_page_size_, err))
			return object;
	}
	if (huge_objects_ && m.kind == ObjectKind::anonymous && policy_ != "4k" && thp_allowed() &&
	    m.size >= kPmdSize) {
		if (auto object = create_in(Backing::thp, name, m.size, m.kind, kPageSize, err))
			return object;
	}
	return create_in(Backing::small, name, m.size, m.kind, kPageSize, err);
}

std::shared_ptr<BackingObject> BackingStore::open(const std::string &name, ObjectKind kind)
{
	for (Backing b : {Backing::small, Backing::thp, Backing::hugetlb}) {
		const std::string path = dir(b) + "/" + name;
		UniqueFd fd(::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
		if (fd)
			return std::make_shared<BackingObject>(std::move(fd), kind, path);
	}
	return nullptr;
}

} // namespace msharefs
