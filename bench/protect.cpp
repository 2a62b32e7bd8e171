// protect: changing the protection of a populated region for N attacher
// processes. msharefs: one MSHAREFS_PROTECT ioctl by the region's owner,
// which returns once every attacher sees the change (the daemon applies it
// through each attacher's userfaultfd). Baseline, the protocol databases use
// today: a coordinator wakes each of the N processes, each mprotect()s its
// own mapping of a shared memfd and acknowledges; the coordinator waits for
// every acknowledgement. Both groups of N processes are set up side by side
// and their samples alternate, so that both see the same machine.
#include "common.hpp"

#include <cerrno>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

namespace msharefs::bench {

namespace {

constexpr int kReadyTimeoutMs = 300 * 1000;
constexpr int kAckTimeoutMs = 60 * 1000;

// N attachers of a region through the uffd runtime; the coordinator owns
// the region and changes its protection with MSHAREFS_PROTECT.
class WindowGroup {
public:
	WindowGroup(uint64_t size, int attachers, std::string name) : size_(size), name_(std::move(name))
	{
		std::string err;
		fd_ = create_region(name_, (size + kRegionAlign - 1) / kRegionAlign * kRegionAlign, size, &err);
		if (!fd_) {
			warn("%s", err.c_str());
			return;
		}
		for (int i = 0; i < attachers; i++) {
			crew_.add(spawn([&] {
				std::string why;
				Mapping w = attach_window(fd_.get(), &why);
				if (!w) {
					fprintf(stderr, "mshare-bench: attacher: %s\n", why.c_str());
					ready_.send('!');
					return 1;
				}
				touch_read(w.get(), size_);
				ready_.send('r');
				quit_.recv();
				return 0;
			}));
		}
		for (int i = 0; i < attachers; i++)
			if (ready_.recv(kReadyTimeoutMs) != 'r') {
				warn("protect: an attacher did not get ready");
				return;
			}
		ok_ = true;
	}
	~WindowGroup() { unlink(region_path(name_).c_str()); }
	bool ok() const { return ok_; }
	bool change(uint32_t prot)
	{
		if (const int e = protect_region(fd_.get(), 0, size_, prot)) {
			warn("MSHAREFS_PROTECT: %s", strerror(e));
			return false;
		}
		return true;
	}
	bool finish()
	{
		for (size_t i = 0; i < crew_.size(); i++)
			quit_.send('q');
		return crew_.join("protect attachers");
	}

private:
	uint64_t size_;
	std::string name_;
	Fd fd_;
	Pipe ready_, quit_;
	Crew crew_;
	bool ok_ = false;
};

// N processes mapping a shared memfd; each changes its own mapping's
// protection when the coordinator tells it to, and acknowledges.
class SignalGroup {
public:
	SignalGroup(uint64_t size, int processes) : size_(size), cmd_(static_cast<size_t>(processes))
	{
		fd_.reset(memfd_create("bench-protect", MFD_CLOEXEC));
		if (!fd_ || ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) {
			warn("memfd: %s", strerror(errno));
			return;
		}
		{
			Mapping m = map_shared_aligned(fd_.get(), size, PROT_READ | PROT_WRITE);
			if (!m) {
				warn("mmap memfd: %s", strerror(errno));
				return;
			}
			touch_write(m.get(), size);
		}
		for (const Pipe &mine : cmd_)
			crew_.add(spawn([&] { return serve(mine); }));
		for (int i = 0; i < processes; i++)
			if (ack_.recv(kReadyTimeoutMs) != 'r') {
				warn("protect: a process did not get ready");
				return;
			}
		ok_ = true;
	}
	bool ok() const { return ok_; }
	// One protection change: wake every process, wait for every ack.
	bool change(uint32_t prot)
	{
		const char what = prot & PROT_WRITE ? 'w' : 'r';
		for (const Pipe &c : cmd_)
			if (!c.send(what))
				return false;
		for (size_t i = 0; i < cmd_.size(); i++)
			if (ack_.recv(kAckTimeoutMs) != 'a') {
				warn("protect: a process did not acknowledge");
				return false;
			}
		return true;
	}
	bool finish()
	{
		for (const Pipe &c : cmd_)
			c.send('q');
		return crew_.join("protect processes");
	}

private:
	int serve(const Pipe &mine)
	{
		Mapping m = map_shared_aligned(fd_.get(), size_, PROT_READ | PROT_WRITE);
		if (!m) {
			ack_.send('!');
			return 1;
		}
		touch_read(m.get(), size_);
		ack_.send('r');
		for (;;) {
			const char c = mine.recv();
			if (c != 'r' && c != 'w')
				return 0;
			if (mprotect(m.get(), size_, c == 'r' ? PROT_READ : PROT_READ | PROT_WRITE) != 0) {
				ack_.send('!');
				return 1;
			}
			ack_.send('a');
		}
	}

	uint64_t size_;
	Fd fd_;
	Pipe ack_;
	std::vector<Pipe> cmd_;
	Crew crew_;
	bool ok_ = false;
};

// Samples (ms), reps of each in this order: window RW->RO, window RO->RW,
// baseline RW->RO, baseline RO->RW.
std::vector<double> measure(uint64_t size, int n, int reps)
{
	progress("protect: N=%d, setting up %d attachers of a uffd window and %d processes mapping a memfd", n, n, n);
	WindowGroup window(size, n, "protect-" + std::to_string(n));
	if (!window.ok())
		return {};
	SignalGroup signalled(size, n);
	if (!signalled.ok())
		return {};
	progress("protect: N=%d, populated; %d samples of each", n, reps);
	std::vector<double> samples[4];
	for (int rep = 0; rep < reps; rep++) {
		for (int k = 0; k < 2; k++) {
			const bool use_window = (k == 0) == (rep % 2 == 0);
			auto change = [&](uint32_t prot) {
				return use_window ? window.change(prot) : signalled.change(prot);
			};
			const int base = use_window ? 0 : 2;
			uint64_t t0 = now_ns();
			if (!change(PROT_READ))
				return {};
			samples[base].push_back(ms_since(t0));
			t0 = now_ns();
			if (!change(PROT_READ | PROT_WRITE))
				return {};
			samples[base + 1].push_back(ms_since(t0));
		}
	}
	if (!window.finish() || !signalled.finish())
		return {};
	return concat(samples);
}

} // namespace

bool run_protect(const Config &cfg, Table *t)
{
	const uint64_t size = cfg.quick ? 256 * kMiB : kGiB;
	const int reps = cfg.quick ? 5 : 9;
	const int counts[] = {1, 8, 32, 64};
	t->scenario = "protect";
	t->title = "protection change of a populated " + human_bytes(size) + " region seen by N processes (median of " +
		   std::to_string(reps) + ")";

	std::string err;
	auto daemon = Daemon::start(cfg, "datapath=uffd,align=1G,backing=4k", &err);
	if (!daemon) {
		warn("protect: %s", err.c_str());
		return false;
	}
	bool all = true;
	for (int n : counts) {
		auto v = measure_in_child("protect, N=" + std::to_string(n), [&] { return measure(size, n, reps); });
		auto fig = [&](int which) {
			if (!v || v->size() != static_cast<size_t>(4 * reps))
				return static_cast<double>(NAN);
			return median(std::vector<double>(v->begin() + which * reps, v->begin() + (which + 1) * reps));
		};
		const std::string base = "signal+mprotect";
		const std::string note = v ? "" : "failed";
		t->rows.push_back({"RW->RO, N=" + std::to_string(n), fig(0), base, fig(2), "ms", 2, note});
		t->rows.push_back({"RO->RW, N=" + std::to_string(n), fig(1), base, fig(3), "ms", 2, note});
		all = all && v;
	}
	t->notes.push_back("figure: one MSHAREFS_PROTECT ioctl by the region's owner (msharefsd -o datapath=uffd,backing=4k), "
			   "returning once every attacher (uffd runtime, libmshare) sees the change");
	t->notes.push_back("baseline: the coordinator wakes each process through its own pipe, each mprotect()s "
			   "its mapping of a shared memfd and acknowledges on a shared pipe; timed until the last "
			   "acknowledgement");
	t->notes.push_back("every process read every page first, so its page tables map the whole region; both "
			   "groups run side by side and their samples alternate");
	return all;
}

} // namespace msharefs::bench
