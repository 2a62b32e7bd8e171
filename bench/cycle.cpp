// cycle: the life of a shared buffer, created, sized, mapped, touched once,
// unmapped and removed, over and over: an msharefs region (open O_CREAT,
// SET_SIZE, CREATE_MAPPING, window attached through the uffd runtime,
// munmap, unlink) against shm_open + ftruncate + mmap + munmap + shm_unlink
// and against a Boost.Interprocess managed_shared_memory segment created
// and removed. Each variant runs its cycles in a process of its own.
#include "common.hpp"

#include <boost/interprocess/managed_shared_memory.hpp>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace msharefs::bench {

namespace {

constexpr uint64_t kBuffer = 2 * kMiB;

std::vector<double> cycles(int n, const std::function<bool()> &one)
{
	std::vector<double> us;
	for (int i = 0; i < n; i++) {
		const uint64_t t0 = now_ns();
		if (!one())
			return {};
		us.push_back(static_cast<double>(now_ns() - t0) / 1e3);
	}
	return {median(us)};
}

bool region_cycle()
{
	std::string err;
	Fd fd = create_region("cycle", kRegionAlign, kBuffer, &err);
	if (!fd) {
		warn("%s", err.c_str());
		return false;
	}
	Mapping w = attach_window(fd.get(), &err);
	if (!w) {
		warn("%s", err.c_str());
		return false;
	}
	w.get()[0] = 1;
	w.reset();
	fd.reset();
	return unlink(region_path("cycle").c_str()) == 0;
}

bool shm_cycle()
{
	Fd fd(shm_open("/mshare-bench-cycle", O_RDWR | O_CREAT | O_EXCL, 0600));
	if (!fd || ftruncate(fd.get(), kBuffer) != 0) {
		warn("shm_open: %s", strerror(errno));
		return false;
	}
	Mapping m(mmap(nullptr, kBuffer, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0), kBuffer);
	if (!m)
		return false;
	m.get()[0] = 1;
	m.reset();
	fd.reset();
	return shm_unlink("/mshare-bench-cycle") == 0;
}

bool boost_cycle()
{
	namespace bip = boost::interprocess;
	try {
		{
			bip::managed_shared_memory seg(bip::create_only, "mshare-bench-cycle-boost", kBuffer);
			static_cast<char *>(seg.allocate(4096))[0] = 1;
		}
		return bip::shared_memory_object::remove("mshare-bench-cycle-boost");
	} catch (const bip::interprocess_exception &e) {
		warn("Boost.Interprocess: %s", e.what());
		return false;
	}
}

} // namespace

bool run_cycle(const Config &cfg, Table *t)
{
	const int n = cfg.quick ? 50 : 500;
	t->scenario = "cycle";
	t->title = "create + size + map + touch + unmap + remove a 2 MiB shared buffer, median of " +
		   std::to_string(n) + " cycles";
	std::string err;
	auto daemon = Daemon::start(cfg, "datapath=uffd,align=1G,backing=4k", &err);
	if (!daemon) {
		warn("cycle: %s", err.c_str());
		return false;
	}
	progress("cycle: shm_open + ftruncate + mmap + munmap + shm_unlink, %d cycles", n);
	auto shm = measure_in_child("cycle shm", [&] { return cycles(n, shm_cycle); });
	progress("cycle: Boost.Interprocess managed_shared_memory, %d cycles", n);
	auto boost = measure_in_child("cycle boost", [&] { return cycles(n, boost_cycle); });
	progress("cycle: msharefs region, %d cycles", n);
	auto region = measure_in_child("cycle region", [&] { return cycles(n, region_cycle); });
	const double base = shm && !shm->empty() ? (*shm)[0] : NAN;
	t->rows.push_back({"msharefs region (uffd window)", region && !region->empty() ? (*region)[0] : NAN,
			   "shm_open", base, "us", 1, ""});
	t->rows.push_back({"Boost.Interprocess managed_shared_memory", boost && !boost->empty() ? (*boost)[0] : NAN,
			   "shm_open", base, "us", 1, ""});
	t->notes.push_back("msharefs: open O_CREAT|O_EXCL, MSHAREFS_SET_SIZE (1 GiB region), CREATE_MAPPING of 2 MiB "
			   "anonymous memory, window attached through the runtime, one store, munmap, close, unlink; "
			   "every step is a FUSE request or a runtime round trip");
	return region && shm && !region->empty() && !shm->empty();
}

} // namespace msharefs::bench
