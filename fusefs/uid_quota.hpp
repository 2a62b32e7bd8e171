// Per-uid limits. Regions (-o max_regions_per_uid=N): every region costs the
// daemon memory and, while its owner lives, a share of a pidfd; regions count
// from creation until they are destroyed (an unlinked region still open
// counts). Runtime connections (-o max_attachers_per_uid=N): each attached
// window holds its socket, userfaultfd and ticket in the daemon; they count
// from connect to disconnect. Root is not limited.
//
// Not synchronised: Filesystem guards the region quota with registry_lock_
// (exclusive), RuntimeService the attacher quota with its lock_.
#pragma once

#include <cstdint>
#include <unordered_map>

namespace msharefs {

inline constexpr uint32_t kDefaultMaxRegionsPerUid = 1024;
inline constexpr uint32_t kDefaultMaxAttachersPerUid = 4096;

class UidQuota {
public:
	// limit 0: unlimited.
	explicit UidQuota(uint32_t limit) : limit_(limit) {}

	// False if uid may not hold one more region (the caller fails EDQUOT).
	bool admits(uint32_t uid) const
	{
		if (uid == 0 || limit_ == 0)
			return true;
		auto it = held_.find(uid);
		return it == held_.end() || it->second < limit_;
	}
	void charge(uint32_t uid) { held_[uid]++; }
	void release(uint32_t uid)
	{
		auto it = held_.find(uid);
		if (it != held_.end() && --it->second == 0)
			held_.erase(it);
	}
	uint32_t held(uint32_t uid) const
	{
		auto it = held_.find(uid);
		return it == held_.end() ? 0 : it->second;
	}

private:
	uint32_t limit_;
	std::unordered_map<uint32_t, uint32_t> held_;
};

} // namespace msharefs
