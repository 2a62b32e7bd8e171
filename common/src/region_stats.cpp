#include "msharefs/region_stats.hpp"

#include <nlohmann/json.hpp>

#include <sys/mman.h>

namespace msharefs {

namespace {

using nlohmann::json;

constexpr uint64_t kTableBytes = 4096;

json object_of(const RegionStats &s)
{
	json mappings = json::array();
	for (const MappingStats &m : s.mappings)
		mappings.push_back({{"offset", m.offset}, {"size", m.size}, {"prot", m.prot}, {"object", m.object}});
	return {
		{"name", s.name},
		{"unlinked", s.unlinked},
		{"size", s.size},
		{"start", s.start},
		{"owner_pid", s.owner_pid},
		{"owner_uid", s.owner_uid},
		{"mode", s.mode},
		{"backend", s.backend},
		{"backing", s.backing},
		{"mappings", mappings},
		{"attachers", s.attachers},
		{"resident_bytes", s.resident_bytes},
		{"page_table_bytes_used", s.page_table_bytes_used},
		{"page_table_bytes_saved", s.page_table_bytes_saved},
		{"page_table_figures", s.page_table_figures},
	};
}

std::optional<RegionStats> stats_of(const json &j)
{
	if (!j.is_object())
		return std::nullopt;
	try {
		RegionStats s;
		j.at("name").get_to(s.name);
		j.at("unlinked").get_to(s.unlinked);
		j.at("size").get_to(s.size);
		j.at("start").get_to(s.start);
		j.at("owner_pid").get_to(s.owner_pid);
		j.at("owner_uid").get_to(s.owner_uid);
		j.at("mode").get_to(s.mode);
		j.at("backend").get_to(s.backend);
		j.at("backing").get_to(s.backing);
		for (const json &m : j.at("mappings"))
			s.mappings.push_back({m.at("offset").get<uint64_t>(), m.at("size").get<uint64_t>(),
					      m.at("prot").get<std::string>(), m.at("object").get<std::string>()});
		j.at("attachers").get_to(s.attachers);
		j.at("resident_bytes").get_to(s.resident_bytes);
		j.at("page_table_bytes_used").get_to(s.page_table_bytes_used);
		j.at("page_table_bytes_saved").get_to(s.page_table_bytes_saved);
		j.at("page_table_figures").get_to(s.page_table_figures);
		return s;
	} catch (const json::exception &) {
		return std::nullopt;
	}
}

} // namespace

std::string to_json(const RegionStats &s) { return object_of(s).dump(); }

std::string to_json(const std::vector<RegionStats> &list)
{
	json a = json::array();
	for (const RegionStats &s : list)
		a.push_back(object_of(s));
	return a.dump();
}

std::optional<RegionStats> region_stats_from_json(std::string_view text)
{
	const json j = json::parse(text, nullptr, false);
	return j.is_discarded() ? std::nullopt : stats_of(j);
}

std::optional<std::vector<RegionStats>> region_stats_list_from_json(std::string_view text)
{
	const json j = json::parse(text, nullptr, false);
	if (j.is_discarded() || !j.is_array())
		return std::nullopt;
	std::vector<RegionStats> list;
	for (const json &e : j) {
		auto s = stats_of(e);
		if (!s)
			return std::nullopt;
		list.push_back(std::move(*s));
	}
	return list;
}

std::string prot_string(uint32_t prot)
{
	std::string s = "---";
	if (prot & PROT_READ)
		s[0] = 'r';
	if (prot & PROT_WRITE)
		s[1] = 'w';
	if (prot & PROT_EXEC)
		s[2] = 'x';
	return s;
}

PageTableFigures estimate_page_tables(const ResidentChunks &c, uint64_t attachers)
{
	const uint64_t pmd_tables = c.private_pmd_tables + c.shared_pmd_tables;
	const uint64_t plain = attachers * (c.base_page_chunks + c.huge_page_chunks + pmd_tables) * kTableBytes;
	uint64_t used = attachers * (c.base_page_chunks + c.private_pmd_tables) * kTableBytes;
	if (attachers)
		used += c.shared_pmd_tables * kTableBytes;
	return {used, plain > used ? plain - used : 0};
}

} // namespace msharefs
