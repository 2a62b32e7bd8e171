// Data helpers the window suites share: a stamped pattern written and
// checked through windows (a fault reads as a mismatch, not a crash), the
// child side of an attach by name, and a pipe for barriers between
// processes. Addresses are absolute: at(addr) is the window byte at addr.
#pragma once

#include "harness.hpp"

#include <cstdint>
#include <fcntl.h>
#include <string>
#include <sys/mman.h>
#include <unistd.h>

namespace msharefs::test {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kPage = 4096;
// Every region of these suites: 1 GiB at 2 TiB.
inline constexpr uint64_t kStart = 2 * kTiB;
inline constexpr uint64_t kSize = kGiB;

// Exit codes of children, so a failure says where it happened.
enum Code : int {
	kOk = 0,
	kOpenFailed = 10,
	kAttachFailed = 11,
	kBarrierFailed = 12,
	kBadData = 13,
	kNoFault = 14,
	kUnexpectedFault = 15,
	kTimeout = 16,
	kCallFailed = 17,
};

inline char *at(uint64_t addr)
{
	return reinterpret_cast<char *>(addr);
}

// A pipe whose ends are closed when it goes.
struct Pipe {
	int r = -1;
	int w = -1;
	Pipe()
	{
		int fds[2];
		if (pipe2(fds, O_CLOEXEC) == 0) {
			r = fds[0];
			w = fds[1];
		}
	}
	~Pipe()
	{
		close_r();
		close_w();
	}
	Pipe(const Pipe &) = delete;
	Pipe &operator=(const Pipe &) = delete;
	void close_r()
	{
		if (r >= 0)
			::close(r);
		r = -1;
	}
	void close_w()
	{
		if (w >= 0)
			::close(w);
		w = -1;
	}
};

// Runs f; false if it raised SIGBUS or SIGSEGV in this process.
template <class F> bool without_fault(F &&f)
{
	return fault_of(std::forward<F>(f)).sig == 0;
}

inline uint64_t stamp(uint64_t seed, uint64_t index)
{
	uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ULL ^ (index + 1) * 0xC2B2AE3D27D4EB4FULL;
	x ^= x >> 29;
	return x;
}

// Stores the pattern of seed into the window; false if it faulted.
[[nodiscard]] inline bool fill(char *p, uint64_t len, uint64_t seed)
{
	return without_fault([&] {
		auto *w = reinterpret_cast<volatile uint64_t *>(p);
		for (uint64_t i = 0; i < len / 8; i++)
			w[i] = stamp(seed, i);
	});
}

// For memory outside any window.
inline void fill_buffer(char *p, uint64_t len, uint64_t seed)
{
	auto *w = reinterpret_cast<uint64_t *>(p);
	for (uint64_t i = 0; i < len / 8; i++)
		w[i] = stamp(seed, i);
}

inline constexpr uint64_t kAllMatch = UINT64_MAX;
inline constexpr uint64_t kFaulted = UINT64_MAX - 1;

// Offset of the first word that differs, kAllMatch if all match, kFaulted
// if reading faulted.
inline uint64_t first_mismatch(const char *p, uint64_t len, uint64_t seed)
{
	uint64_t at_word = kAllMatch;
	if (!without_fault([&] {
		    const auto *w = reinterpret_cast<const volatile uint64_t *>(p);
		    for (uint64_t i = 0; i < len / 8; i++)
			    if (w[i] != stamp(seed, i)) {
				    at_word = i * 8;
				    return;
			    }
	    }))
		return kFaulted;
	return at_word;
}

inline bool matches(const char *p, uint64_t len, uint64_t seed)
{
	return first_mismatch(p, len, seed) == kAllMatch;
}

// False also if reading faulted.
inline bool all_zero(const char *p, uint64_t len)
{
	bool zero = true;
	if (!without_fault([&] {
		    const auto *b = reinterpret_cast<const volatile char *>(p);
		    for (uint64_t i = 0; i < len; i++)
			    if (b[i] != 0) {
				    zero = false;
				    return;
			    }
	    }))
		return false;
	return zero;
}

// The child side of an attach: open by name, size from GET_SIZE, mmap at
// the region's start. Any window inherited at that address goes first.
inline char *child_attach(const std::string &name, int prot = PROT_READ | PROT_WRITE)
{
	int fd = open(path(name).c_str(), prot & PROT_WRITE ? O_RDWR : O_RDONLY);
	if (fd < 0)
		return nullptr;
	mshare_info info{};
	if (get_size(fd, &info) != 0) {
		close(fd);
		return nullptr;
	}
	munmap(at(info.start), info.size);
	void *p = mmap(at(info.start), info.size, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
	close(fd); // the mapping keeps the file open
	return p == MAP_FAILED ? nullptr : static_cast<char *>(p);
}

inline std::string describe(const ChildResult &r)
{
	if (r.timed_out)
		return "timed out";
	if (r.signal)
		return "killed by signal " + std::to_string(r.signal) + " (" + strsignal(r.signal) + ")";
	return "exit code " + std::to_string(r.exit_code);
}

} // namespace msharefs::test
