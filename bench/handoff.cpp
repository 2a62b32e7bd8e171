// handoff: two processes take turns writing into a shared buffer, one
// writer at a time. msharefs: the holder takes MSHAREFS_LOCK, writes,
// MSHAREFS_UNLOCKs and passes the turn (while it holds the lock, the other's
// stores fault). Baselines: the holder maps the buffer read-write, writes and
// munmap()s it before passing the turn; or it mprotect()s its mapping
// read-write and back to read-only around its writes.
#include "common.hpp"

#include <cerrno>
#include <cstring>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace msharefs::bench {

namespace {

constexpr int kTimeoutMs = 300 * 1000;
// Pages each turn writes, spread over the buffer.
constexpr uint64_t kWrites = 16;

enum class Kind { lock, munmap, mprotect };

const char *kind_name(Kind k)
{
	switch (k) {
	case Kind::lock:
		return "LOCK/UNLOCK (uffd window)";
	case Kind::munmap:
		return "munmap/mmap (memfd)";
	case Kind::mprotect:
		return "mprotect RO/RW (memfd)";
	}
	return "?";
}

struct Params {
	uint64_t size;
	int handoffs; // per sample; even
	int reps;
};

// Checks that the previous turn's value is there, then writes the pages of
// this turn.
bool write_some(char *p, uint64_t size, char before, char value)
{
	const char seen = *static_cast<volatile char *>(p);
	if (seen != before) {
		fprintf(stderr, "mshare-bench: handoff: read %d where the previous turn wrote %d\n", seen, before);
		return false;
	}
	const uint64_t stride = size / kWrites;
	for (uint64_t i = 0; i < kWrites; i++)
		*static_cast<volatile char *>(p + i * stride) = value;
	return true;
}

// One player: sets up, says ready, then per sample plays handoffs/2 turns.
// Player 0 goes first and reports each sample's time per handoff (us).
int play(Kind kind, const Params &p, int id, int fd, const Pipe &ctrl, const Pipe &in, const Pipe &out,
	 const Pipe &ready, const Pipe &result)
{
	Mapping m;
	if (kind == Kind::lock) {
		std::string why;
		m = attach_window(fd, &why);
		if (!m) {
			fprintf(stderr, "mshare-bench: player: %s\n", why.c_str());
			ready.send('!');
			return 1;
		}
		touch_read(m.get(), p.size);
	} else if (kind == Kind::mprotect) {
		m = map_shared_aligned(fd, p.size, PROT_READ);
		if (!m) {
			ready.send('!');
			return 1;
		}
		touch_read(m.get(), p.size);
	}
	// Turns are numbered across both players (this one plays id, id + 2,
	// ...); each writes its number and first checks its predecessor's.
	uint64_t next = static_cast<uint64_t>(id);
	auto turn = [&]() -> bool {
		const char value = static_cast<char>(next + 1);
		const char before = static_cast<char>(next);
		next += 2;
		switch (kind) {
		case Kind::lock:
			if (ioctl(fd, MSHAREFS_LOCK) != 0) {
				fprintf(stderr, "mshare-bench: MSHAREFS_LOCK: %s\n", strerror(errno));
				return false;
			}
			if (!write_some(m.get(), p.size, before, value))
				return false;
			if (ioctl(fd, MSHAREFS_UNLOCK) != 0) {
				fprintf(stderr, "mshare-bench: MSHAREFS_UNLOCK: %s\n", strerror(errno));
				return false;
			}
			return true;
		case Kind::munmap: {
			Mapping q(mmap(nullptr, p.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p.size);
			return q && write_some(q.get(), p.size, before, value);
		}
		case Kind::mprotect:
			if (mprotect(m.get(), p.size, PROT_READ | PROT_WRITE) != 0)
				return false;
			if (!write_some(m.get(), p.size, before, value))
				return false;
			return mprotect(m.get(), p.size, PROT_READ) == 0;
		}
		return false;
	};
	ready.send('r');
	for (;;) {
		if (ctrl.recv() != 'g')
			return 0;
		const uint64_t t0 = now_ns();
		for (int k = 0; k < p.handoffs / 2; k++) {
			if (id == 0) {
				if (!turn() || !out.send() || !in.recv(kTimeoutMs))
					return 2;
			} else {
				if (!in.recv(kTimeoutMs) || !turn() || !out.send())
					return 2;
			}
		}
		if (id == 0) {
			const double us = static_cast<double>(now_ns() - t0) / 1e3 / p.handoffs;
			result.send_all(&us, sizeof(us));
		}
	}
}

// Two players of one kind, set up and waiting for samples.
class Pair {
public:
	Pair(Kind kind, const Params &p, const std::string &name) : kind_(kind), name_(name)
	{
		std::string err;
		if (kind == Kind::lock) {
			fd_ = create_region(name, (p.size + kRegionAlign - 1) / kRegionAlign * kRegionAlign, p.size,
					    &err);
			if (!fd_) {
				warn("%s", err.c_str());
				return;
			}
		} else {
			fd_.reset(memfd_create("bench-handoff", MFD_CLOEXEC));
			if (!fd_ || ftruncate(fd_.get(), static_cast<off_t>(p.size)) != 0) {
				warn("memfd: %s", strerror(errno));
				return;
			}
			Mapping m = map_shared_aligned(fd_.get(), p.size, PROT_READ | PROT_WRITE);
			if (!m)
				return;
			touch_write(m.get(), p.size, 0);
		}
		crew_.add(spawn(
			[&] { return play(kind, p, 0, fd_.get(), ctrl_[0], b_to_a_, a_to_b_, ready_, result_); }));
		crew_.add(spawn(
			[&] { return play(kind, p, 1, fd_.get(), ctrl_[1], a_to_b_, b_to_a_, ready_, result_); }));
		for (int i = 0; i < 2; i++)
			if (ready_.recv(kTimeoutMs) != 'r') {
				warn("handoff: %s: a player did not get ready", kind_name(kind));
				return;
			}
		ok_ = true;
	}
	~Pair()
	{
		if (kind_ == Kind::lock && fd_)
			unlink(region_path(name_).c_str());
	}
	bool ok() const { return ok_; }
	// One sample: time per handoff (us), NaN on failure.
	double sample()
	{
		double us = NAN;
		if (!ctrl_[0].send('g') || !ctrl_[1].send('g') || !result_.recv_all(&us, sizeof(us), kTimeoutMs)) {
			warn("handoff: %s: no result", kind_name(kind_));
			return NAN;
		}
		return us;
	}
	bool finish()
	{
		ctrl_[0].send('q');
		ctrl_[1].send('q');
		return crew_.join("handoff players");
	}

private:
	Kind kind_;
	std::string name_;
	Fd fd_;
	Pipe ctrl_[2], a_to_b_, b_to_a_, ready_, result_;
	Crew crew_;
	bool ok_ = false;
};

// Samples (us per handoff), reps of each kind in the order of Kind. The
// three pairs are set up side by side and take turns.
std::vector<double> measure(const Params &p)
{
	const Kind kinds[3] = {Kind::lock, Kind::munmap, Kind::mprotect};
	std::vector<std::unique_ptr<Pair>> pairs;
	for (Kind k : kinds) {
		pairs.push_back(std::make_unique<Pair>(k, p, "handoff-" + std::to_string(p.size)));
		if (!pairs.back()->ok())
			return {};
	}
	std::vector<double> samples[3];
	for (int rep = 0; rep < p.reps; rep++)
		for (int i = 0; i < 3; i++) {
			const int k = (rep + i) % 3;
			const double us = pairs[static_cast<size_t>(k)]->sample();
			if (std::isnan(us))
				return {};
			samples[k].push_back(us);
		}
	for (auto &pair : pairs)
		if (!pair->finish())
			return {};
	return concat(samples);
}

} // namespace

bool run_handoff(const Config &cfg, Table *t)
{
	struct Size {
		uint64_t bytes;
		int handoffs;
	};
	const std::vector<Size> sizes = cfg.quick ? std::vector<Size>{{2 * kMiB, 400}, {64 * kMiB, 60}}
						  : std::vector<Size>{{2 * kMiB, 1000}, {64 * kMiB, 200}, {kGiB, 40}};
	const int reps = cfg.quick ? 3 : 5;
	t->scenario = "handoff";
	t->title = "write ownership passed between two processes, " + std::to_string(kWrites) +
		   " pages written per turn (median of " + std::to_string(reps) + " samples)";

	std::string err;
	auto daemon = Daemon::start(cfg, "datapath=uffd,align=1G,backing=4k", &err);
	if (!daemon) {
		warn("handoff: %s", err.c_str());
		return false;
	}
	bool all = true;
	for (const Size &s : sizes) {
		const Params p{s.bytes, s.handoffs, reps};
		progress("handoff: %s buffer, %d samples of %d handoffs for each of LOCK/UNLOCK, munmap/mmap, mprotect",
			 human_bytes(s.bytes).c_str(), reps, s.handoffs);
		auto v = measure_in_child("handoff " + human_bytes(s.bytes), [&] { return measure(p); });
		auto fig = [&](int which) {
			if (!v || v->size() != static_cast<size_t>(3 * reps))
				return static_cast<double>(NAN);
			return median(std::vector<double>(v->begin() + which * reps, v->begin() + (which + 1) * reps));
		};
		const std::string label = human_bytes(s.bytes) + ", LOCK/UNLOCK";
		const std::string note = v ? "" : "failed";
		t->rows.push_back({label + " vs munmap/mmap", fig(0), "munmap/mmap", fig(1), "us", 1, note});
		t->rows.push_back({label + " vs mprotect", fig(0), "mprotect RO/RW", fig(2), "us", 1, note});
		all = all && v;
	}
	t->notes.push_back("figure: time per handoff (one turn: take, write, release, pass), from the first "
			   "player's clock over a sample of turns");
	t->notes.push_back("LOCK/UNLOCK: msharefsd -o datapath=uffd,backing=4k, both players attached through the uffd "
			   "runtime, every page read once before; baselines on a shared memfd, populated before");
	t->notes.push_back("the turn is passed through a pipe in every variant; the three pairs run side by side and "
			   "their samples alternate");
	return all;
}

} // namespace msharefs::bench
