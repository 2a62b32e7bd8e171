// Unit tests of the region model (common/src/region.cpp): geometry, the rules
// of SET_SIZE / CREATE_MAPPING / UNMAP / PROTECT with the errno the API
// documents (SPEC sections 2 and 3), the layout of mappings inside a region,
// and ioctl number classification.
#include <doctest/doctest.h>

#include "msharefs/region.hpp"

#include <linux/msharefs.h>

#include <cerrno>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>
#include <sys/mman.h>

using namespace msharefs;

namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;
constexpr uint64_t TiB = 1024 * GiB;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kAlign = 512 * GiB; // upstream mshare_info on x86-64
constexpr uint64_t kU64Max = UINT64_MAX;

// Flag values written out so that the tests do not depend on which libc
// headers define what.
constexpr uint32_t kMapShared = 0x01;
constexpr uint32_t kMapPrivate = 0x02;
constexpr uint32_t kMapSharedValidate = 0x03;
constexpr uint32_t kMapFixed = 0x10;
constexpr uint32_t kMapAnonymous = 0x20;
constexpr uint32_t kMap32Bit = 0x40;
constexpr uint32_t kMapGrowsdown = 0x100;
constexpr uint32_t kMapLocked = 0x2000;
constexpr uint32_t kMapNoreserve = 0x4000;
constexpr uint32_t kMapPopulate = 0x8000;
constexpr uint32_t kMapNonblock = 0x10000;
constexpr uint32_t kMapStack = 0x20000;
constexpr uint32_t kMapHugetlb = 0x40000;
constexpr uint32_t kMapSync = 0x80000;
constexpr uint32_t kMapFixedNoreplace = 0x100000;
constexpr uint32_t kMapHuge2MB = 21u << 26;
constexpr uint32_t kMapHuge1GB = 30u << 26;

constexpr uint32_t kProtRead = 0x1;
constexpr uint32_t kProtWrite = 0x2;
constexpr uint32_t kProtExec = 0x4;
constexpr uint32_t kProtRW = kProtRead | kProtWrite;

constexpr uint32_t kShared = kMapShared | kMapFixed;
constexpr uint32_t kAnon = kShared | kMapAnonymous;
constexpr uint32_t kAnonHuge = kAnon | kMapHugetlb;

static_assert(kMapShared == MAP_SHARED && kMapPrivate == MAP_PRIVATE && kMapFixed == MAP_FIXED);
static_assert(kMapAnonymous == MAP_ANONYMOUS && kMapHugetlb == MAP_HUGETLB);
static_assert(kProtRead == PROT_READ && kProtWrite == PROT_WRITE && kProtExec == PROT_EXEC);

// A sized region as the seed example makes it: start 2 TiB, 512 GiB long.
constexpr Geometry kGeo{2 * TiB, 512 * GiB, true};
constexpr Geometry kUnsized{};

MappingRequest anon(uint64_t off, uint64_t size, uint32_t flags = kAnon, uint32_t prot = kProtRW)
{
	MappingRequest r;
	r.region_offset = off;
	r.size = size;
	r.flags = flags;
	r.prot = prot;
	return r;
}

MappingRequest file(uint64_t off, uint64_t size, uint64_t object_offset, uint32_t flags = kShared,
		    uint32_t prot = kProtRW)
{
	MappingRequest r = anon(off, size, flags, prot);
	r.object_offset = object_offset;
	return r;
}

MappingRequest hugetlbfs_file(uint64_t off, uint64_t size, uint64_t object_offset, uint64_t page,
			      uint32_t flags = kShared)
{
	MappingRequest r = file(off, size, object_offset, flags);
	r.file_is_hugetlbfs = true;
	r.file_huge_page_size = page;
	return r;
}

int create(const MappingRequest &r, Mapping *out = nullptr, uint64_t default_huge = 2 * MiB,
	   const Geometry &geo = kGeo)
{
	Mapping scratch;
	return validate_create(geo, r, default_huge, out ? out : &scratch);
}

Mapping mk(uint64_t off, uint64_t size, uint64_t id, uint64_t object_offset = 0, uint32_t prot = kProtRW,
	   uint64_t huge = 0)
{
	Mapping m;
	m.region_offset = off;
	m.size = size;
	m.object_id = id;
	m.object_offset = object_offset;
	m.prot = prot;
	m.flags = huge ? kAnonHuge : kAnon;
	m.huge_page_size = huge;
	m.kind = huge ? ObjectKind::hugetlb : ObjectKind::anonymous;
	return m;
}

Mapping with_prot(Mapping m, uint32_t prot)
{
	m.prot = prot;
	return m;
}

std::vector<Mapping> snap(const Layout &l) { return {l.mappings().begin(), l.mappings().end()}; }

} // namespace

namespace doctest {
template <> struct StringMaker<Mapping> {
	static String convert(const Mapping &m)
	{
		std::ostringstream os;
		os << std::hex << "{off=0x" << m.region_offset << " size=0x" << m.size << " obj=0x"
		   << m.object_offset << " id=" << std::dec << m.object_id << " prot=" << m.prot
		   << " huge=0x" << std::hex << m.huge_page_size << " kind=" << object_kind_name(m.kind)
		   << "}";
		return os.str().c_str();
	}
};
template <> struct StringMaker<std::vector<Mapping>> {
	static String convert(const std::vector<Mapping> &v)
	{
		String s = "[";
		for (const auto &m : v)
			s += StringMaker<Mapping>::convert(m) + " ";
		return s + "]";
	}
};
template <> struct StringMaker<std::optional<uint64_t>> {
	static String convert(const std::optional<uint64_t> &v)
	{
		return v ? toString(*v) : String("nullopt");
	}
};
} // namespace doctest

TEST_SUITE("helpers") {

TEST_CASE("is_power_of_two and add_overflows")
{
	CHECK_FALSE(is_power_of_two(0));
	CHECK(is_power_of_two(1));
	CHECK(is_power_of_two(2));
	CHECK_FALSE(is_power_of_two(3));
	CHECK(is_power_of_two(kPage));
	CHECK_FALSE(is_power_of_two(3 * kPage));
	CHECK(is_power_of_two(1ULL << 63));
	CHECK_FALSE(is_power_of_two(kU64Max));

	CHECK_FALSE(add_overflows(0, 0));
	CHECK_FALSE(add_overflows(kU64Max, 0));
	CHECK_FALSE(add_overflows(kU64Max - 1, 1));
	CHECK(add_overflows(kU64Max, 1));
	CHECK(add_overflows(1ULL << 63, 1ULL << 63));
	CHECK(add_overflows(kU64Max - kPage + 1, 2 * kPage));
}

TEST_CASE("pte_bytes_for: 8 bytes per 4 KiB page")
{
	CHECK(pte_bytes_for(0) == 0);
	CHECK(pte_bytes_for(kPage) == 8);
	CHECK(pte_bytes_for(1 * GiB) == 2 * MiB);
	// SPEC 1: 300 GiB / 4 KiB x 8 B = 600 MiB per process.
	CHECK(pte_bytes_for(300 * GiB) == 600 * MiB);
}

TEST_CASE("object_kind_name")
{
	CHECK(std::string(object_kind_name(ObjectKind::anonymous)) == "anonymous");
	CHECK(std::string(object_kind_name(ObjectKind::file)) == "file");
	CHECK(std::string(object_kind_name(ObjectKind::hugetlb)) == "hugetlb");
}

TEST_CASE("Mapping::end and equality")
{
	const Mapping m = mk(8 * kPage, 4 * kPage, 7, 16 * kPage);
	CHECK(m.end() == 12 * kPage);
	CHECK(m == mk(8 * kPage, 4 * kPage, 7, 16 * kPage));
	CHECK_FALSE(m == mk(8 * kPage, 4 * kPage, 8, 16 * kPage));
	CHECK_FALSE(m == with_prot(m, kProtRead));
}

TEST_CASE("requested_huge_page_size")
{
	CHECK(requested_huge_page_size(kAnonHuge, 2 * MiB) == 2 * MiB);
	CHECK(requested_huge_page_size(kAnonHuge, 1 * GiB) == 1 * GiB);
	CHECK(requested_huge_page_size(kAnonHuge | kMapHuge2MB, 1 * GiB) == 2 * MiB);
	CHECK(requested_huge_page_size(kAnonHuge | kMapHuge1GB, 2 * MiB) == 1 * GiB);
	CHECK(requested_huge_page_size(kAnonHuge | (16u << 26), 2 * MiB) == 64 * KiB);
	CHECK(requested_huge_page_size(kAnonHuge, 0) == 0);
}

} // TEST_SUITE helpers

TEST_SUITE("geometry") {

TEST_CASE("check_alignment: a power of two, at least a page, at most half the address space")
{
	CHECK(check_alignment(kPage) == 0);
	CHECK(check_alignment(2 * MiB) == 0);
	CHECK(check_alignment(1 * GiB) == 0);
	CHECK(check_alignment(kAlign) == 0);
	CHECK(check_alignment(MSHAREFS_DEFAULT_ALIGN) == 0);
	CHECK(check_alignment(1ULL << 46) == 0);

	CHECK(check_alignment(0) == EINVAL);
	CHECK(check_alignment(1) == EINVAL);
	CHECK(check_alignment(kPage / 2) == EINVAL);
	CHECK(check_alignment(3 * kPage) == EINVAL);
	CHECK(check_alignment(kPage + 1) == EINVAL);
	CHECK(check_alignment(1ULL << 47) == EINVAL);
	CHECK(check_alignment(1ULL << 63) == EINVAL);
	CHECK(check_alignment(kU64Max) == EINVAL);
}

TEST_CASE("validate_sizing: valid sizings")
{
	CHECK(validate_sizing(kUnsized, 2 * TiB, kAlign, kAlign) == 0);
	CHECK(validate_sizing(kUnsized, 2 * TiB, 4 * kAlign, kAlign) == 0);
	// v3 sizing (ftruncate/fallocate) is window-relative: start 0.
	CHECK(validate_sizing(kUnsized, 0, kAlign, kAlign) == 0);
	// Ends exactly at the top of the user address space.
	CHECK(validate_sizing(kUnsized, 128 * TiB - kAlign, kAlign, kAlign) == 0);
	CHECK(validate_sizing(kUnsized, 0, 128 * TiB, kAlign) == 0);
	CHECK(validate_sizing(kUnsized, 0, kPage, kPage) == 0);
	CHECK(validate_sizing(kUnsized, 64 * TiB, 64 * TiB, 1ULL << 46) == 0);
}

TEST_CASE("validate_sizing: unaligned start or size -> EINVAL")
{
	CHECK(validate_sizing(kUnsized, 2 * TiB + kPage, kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 2 * TiB + 1, kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, kAlign / 2, kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 2 * TiB, kAlign + kPage, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 2 * TiB, kAlign - kPage, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 2 * TiB, 1 * GiB, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 0, 1, kPage) == EINVAL);
	CHECK(validate_sizing(kUnsized, 1, kPage, kPage) == EINVAL);
}

TEST_CASE("validate_sizing: zero size -> EINVAL")
{
	CHECK(validate_sizing(kUnsized, 2 * TiB, 0, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 0, 0, kPage) == EINVAL);
}

TEST_CASE("validate_sizing: start + size overflows -> EINVAL")
{
	// Both aligned, the sum wraps to 0.
	const uint64_t top = 0 - kAlign; // 2^64 - 512 GiB
	CHECK(top % kAlign == 0);
	CHECK(validate_sizing(kUnsized, top, kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, top, 2 * kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, kAlign, 0 - kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 1ULL << 63, 1ULL << 63, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 0 - kPage, kPage, kPage) == EINVAL);
}

TEST_CASE("validate_sizing: beyond 128 TiB -> EINVAL")
{
	CHECK(validate_sizing(kUnsized, 128 * TiB - kAlign, 2 * kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 128 * TiB, kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 0, 128 * TiB + kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 256 * TiB, kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kUnsized, 128 * TiB - kPage, 2 * kPage, kPage) == EINVAL);
	CHECK(validate_sizing(kUnsized, 0, 0 - kAlign, kAlign) == EINVAL);
}

TEST_CASE("validate_sizing: a second sizing -> EINVAL")
{
	// Once only, whatever the arguments (SPEC 2: EINVAL for a second sizing).
	CHECK(validate_sizing(kGeo, kGeo.start, kGeo.size, kAlign) == EINVAL);
	CHECK(validate_sizing(kGeo, 2 * TiB, kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(kGeo, 4 * TiB, 2 * kAlign, kAlign) == EINVAL);
	CHECK(validate_sizing(Geometry{0, kAlign, true}, 0, kAlign, kAlign) == EINVAL);
	// "sized" is what counts, not the numbers.
	CHECK(validate_sizing(Geometry{2 * TiB, kAlign, false}, 2 * TiB, kAlign, kAlign) == 0);
}

} // TEST_SUITE geometry

TEST_SUITE("validate_create") {

TEST_CASE("a valid anonymous request is normalised")
{
	Mapping out;
	out.object_id = 1234;
	REQUIRE(create(anon(4 * MiB, 1 * MiB), &out) == 0);
	CHECK(out.region_offset == 4 * MiB);
	CHECK(out.size == 1 * MiB);
	CHECK(out.end() == 5 * MiB);
	CHECK(out.object_offset == 0);
	CHECK(out.prot == kProtRW);
	CHECK(out.flags == kAnon);
	CHECK(out.kind == ObjectKind::anonymous);
	CHECK_FALSE(out.has_file);
	CHECK(out.huge_page_size == 0);
	CHECK(out.object_id == 0); // left unset: the caller assigns it

	SUBCASE("size rounds up to a page") {
		REQUIRE(create(anon(0, 1), &out) == 0);
		CHECK(out.size == kPage);
		REQUIRE(create(anon(0, kPage + 1), &out) == 0);
		CHECK(out.size == 2 * kPage);
	}
	SUBCASE("every prot combination of READ/WRITE/EXEC, including PROT_NONE") {
		for (uint32_t prot = 0; prot <= 7; prot++) {
			CAPTURE(prot);
			REQUIRE(create(anon(0, kPage, kAnon, prot), &out) == 0);
			CHECK(out.prot == prot);
		}
	}
	SUBCASE("the mapping may end exactly at the end of the region") {
		CHECK(create(anon(kGeo.size - kPage, kPage)) == 0);
		CHECK(create(anon(0, kGeo.size)) == 0);
		CHECK(create(anon(kGeo.size - 1, 1)) == EINVAL); // unaligned
	}
	SUBCASE("extra flags the model accepts") {
		CHECK(create(anon(0, kPage, kAnon | kMapNoreserve)) == 0);
		CHECK(create(anon(0, kPage, kAnon | kMapPopulate)) == 0);
		CHECK(create(anon(0, kPage, kAnon | kMapLocked)) == 0);
		CHECK(create(anon(0, kPage, kAnon | kMapNoreserve | kMapPopulate | kMapLocked)) == 0);
		CHECK(create(anon(0, kPage, kMapSharedValidate | kMapFixed | kMapAnonymous)) == 0);
		// MAP_FIXED_NOREPLACE is accepted in place of MAP_FIXED.
		CHECK(create(anon(0, kPage, kMapShared | kMapFixedNoreplace | kMapAnonymous)) == 0);
		// Huge page size bits without MAP_HUGETLB are ignored, as by mmap.
		REQUIRE(create(anon(kPage, kPage, kAnon | kMapHuge1GB), &out) == 0);
		CHECK(out.kind == ObjectKind::anonymous);
		CHECK(out.huge_page_size == 0);
		CHECK(out.size == kPage);
	}
}

TEST_CASE("region not sized -> EINVAL")
{
	CHECK(create(anon(0, kPage), nullptr, 2 * MiB, kUnsized) == EINVAL);
	CHECK(create(file(0, kPage, 0), nullptr, 2 * MiB, kUnsized) == EINVAL);
	CHECK(create(anon(0, kPage), nullptr, 2 * MiB, Geometry{2 * TiB, kAlign, false}) == EINVAL);
}

TEST_CASE("MAP_SHARED|MAP_FIXED required, MAP_PRIVATE refused -> EINVAL")
{
	CHECK(create(anon(0, kPage, kMapPrivate | kMapFixed | kMapAnonymous)) == EINVAL);
	CHECK(create(file(0, kPage, 0, kMapPrivate | kMapFixed)) == EINVAL);
	// No map type at all.
	CHECK(create(anon(0, kPage, kMapFixed | kMapAnonymous)) == EINVAL);
	// Undefined map types.
	CHECK(create(anon(0, kPage, 0x04 | kMapFixed | kMapAnonymous)) == EINVAL);
	CHECK(create(anon(0, kPage, 0x0f | kMapFixed | kMapAnonymous)) == EINVAL);
	CHECK(create(anon(0, kPage, 0x09 | kMapFixed | kMapAnonymous)) == EINVAL);
	// Missing MAP_FIXED.
	CHECK(create(anon(0, kPage, kMapShared | kMapAnonymous)) == EINVAL);
	CHECK(create(file(0, kPage, 0, kMapShared)) == EINVAL);
	CHECK(create(anon(0, kPage, kMapShared | kMapAnonymous | kMapHugetlb)) == EINVAL);
	CHECK(create(anon(0, 0, 0)) == EINVAL);
}

TEST_CASE("unknown flag or prot bits -> EINVAL")
{
	for (uint32_t extra : {kMap32Bit, kMapGrowsdown, 0x800u /* DENYWRITE */, 0x1000u /* EXECUTABLE */,
			       kMapNonblock, kMapStack, kMapSync, 0x200000u, 0x400000u, 0x800000u,
			       0x1000000u, 0x2000000u}) {
		CAPTURE(extra);
		CHECK(create(anon(0, kPage, kAnon | extra)) == EINVAL);
		CHECK(create(file(0, kPage, 0, kShared | extra)) == EINVAL);
	}
	for (uint32_t prot : {0x8u /* PROT_SEM */, 0x10u, 0x01000000u /* GROWSDOWN */,
			      0x02000000u /* GROWSUP */, 0x80000000u, 0xffffffffu}) {
		CAPTURE(prot);
		CHECK(create(anon(0, kPage, kAnon, prot)) == EINVAL);
		CHECK(create(anon(0, kPage, kAnon, kProtRW | prot)) == EINVAL);
	}
}

TEST_CASE("zero size -> EINVAL")
{
	CHECK(create(anon(0, 0)) == EINVAL);
	CHECK(create(file(0, 0, 0)) == EINVAL);
	CHECK(create(anon(0, 0, kAnonHuge)) == EINVAL);
	CHECK(create(hugetlbfs_file(0, 0, 0, 2 * MiB)) == EINVAL);
}

TEST_CASE("misaligned region offset or object offset -> EINVAL")
{
	CHECK(create(anon(1, kPage)) == EINVAL);
	CHECK(create(anon(kPage / 2, kPage)) == EINVAL);
	CHECK(create(anon(kPage + 512, kPage)) == EINVAL);
	CHECK(create(file(kPage + 1, kPage, 0)) == EINVAL);
	CHECK(create(file(0, kPage, 1)) == EINVAL);
	CHECK(create(file(0, kPage, kPage - 1)) == EINVAL);
	CHECK(create(file(0, kPage, 3 * kPage + 8)) == EINVAL);
	// mmap checks the offset even for anonymous memory.
	CHECK(create(file(0, kPage, 100, kAnon)) == EINVAL);
}

TEST_CASE("a file-backed request keeps its offset")
{
	Mapping out;
	REQUIRE(create(file(8 * kPage, 3 * kPage, 16 * kPage), &out) == 0);
	CHECK(out.region_offset == 8 * kPage);
	CHECK(out.size == 3 * kPage);
	CHECK(out.object_offset == 16 * kPage);
	CHECK(out.kind == ObjectKind::file);
	CHECK(out.has_file);
	CHECK(out.huge_page_size == 0);
	CHECK(out.flags == kShared);

	// Anonymous memory ignores an aligned offset.
	REQUIRE(create(file(0, kPage, 16 * kPage, kAnon), &out) == 0);
	CHECK(out.object_offset == 0);
	CHECK_FALSE(out.has_file);
}

TEST_CASE("range outside the region -> EINVAL")
{
	CHECK(create(anon(kGeo.size, kPage)) == EINVAL);
	CHECK(create(anon(kGeo.size + kPage, kPage)) == EINVAL);
	CHECK(create(anon(kGeo.size - kPage, 2 * kPage)) == EINVAL);
	CHECK(create(anon(kGeo.size - kPage, kPage + 1)) == EINVAL); // rounded up past the end
	CHECK(create(anon(0, kGeo.size + kPage)) == EINVAL);
	CHECK(create(anon(0, kGeo.size + 1)) == EINVAL);
	CHECK(create(file(kGeo.size, kPage, 0)) == EINVAL);
	// Seed-ABI absolute addresses must be converted first: the region
	// start itself is far outside the window-relative range.
	CHECK(create(anon(kGeo.start, kPage)) == EINVAL);
}

TEST_CASE("region_offset + size overflow and huge sizes -> EINVAL")
{
	const uint64_t top = 0 - kPage; // 2^64 - 4 KiB, page aligned
	CHECK(create(anon(top, 2 * kPage)) == EINVAL);
	CHECK(create(anon(top, kPage)) == EINVAL);
	CHECK(create(anon(kPage, top)) == EINVAL);
	CHECK(create(anon(0, kU64Max)) == EINVAL);
	CHECK(create(anon(kPage, kU64Max)) == EINVAL);
	CHECK(create(anon(0, kU64Max - kPage + 2)) == EINVAL); // rounding would wrap
	CHECK(create(anon(0, top)) == EINVAL);
	CHECK(create(anon(0, 1ULL << 63)) == EINVAL);
	CHECK(create(anon(1ULL << 63, 1ULL << 63)) == EINVAL);
	CHECK(create(file(0, kU64Max, 0)) == EINVAL);
	// object offset + size overflows.
	CHECK(create(file(0, 2 * kPage, top)) == EINVAL);
	CHECK(create(file(0, kPage, top)) == EINVAL); // the end, 2^64, wraps to 0
	CHECK(create(file(0, kPage, top - kPage)) == 0);
	// Huge page rounding of a huge size.
	CHECK(create(anon(0, kU64Max, kAnonHuge)) == EINVAL);
	CHECK(create(anon(0, kU64Max - 2 * MiB + 2, kAnonHuge)) == EINVAL);
	CHECK(create(anon(0, kU64Max, kAnonHuge | kMapHuge1GB)) == EINVAL);
	CHECK(create(hugetlbfs_file(0, kU64Max, 0, 2 * MiB)) == EINVAL);
}

TEST_CASE("MAP_HUGETLB anonymous: rounds to the huge page size")
{
	Mapping out;
	SUBCASE("default huge page size (2 MiB)") {
		REQUIRE(create(anon(0, 1, kAnonHuge), &out) == 0);
		CHECK(out.size == 2 * MiB);
		CHECK(out.kind == ObjectKind::hugetlb);
		CHECK(out.huge_page_size == 2 * MiB);
		CHECK_FALSE(out.has_file);
		CHECK(out.object_offset == 0);
		REQUIRE(create(anon(4 * MiB, 2 * MiB + kPage, kAnonHuge), &out) == 0);
		CHECK(out.region_offset == 4 * MiB);
		CHECK(out.size == 4 * MiB);
		REQUIRE(create(anon(0, 2 * MiB, kAnonHuge), &out) == 0);
		CHECK(out.size == 2 * MiB);
	}
	SUBCASE("address must be huge page aligned") {
		CHECK(create(anon(kPage, 2 * MiB, kAnonHuge)) == EINVAL);
		CHECK(create(anon(2 * MiB + kPage, 2 * MiB, kAnonHuge)) == EINVAL);
		CHECK(create(anon(1 * MiB, kPage, kAnonHuge)) == EINVAL);
	}
	SUBCASE("explicit MAP_HUGE_2MB overrides the default") {
		REQUIRE(create(anon(2 * MiB, kPage, kAnonHuge | kMapHuge2MB), &out, 1 * GiB) == 0);
		CHECK(out.size == 2 * MiB);
		CHECK(out.huge_page_size == 2 * MiB);
	}
	SUBCASE("default of 1 GiB") {
		REQUIRE(create(anon(1 * GiB, kPage, kAnonHuge), &out, 1 * GiB) == 0);
		CHECK(out.size == 1 * GiB);
		CHECK(out.huge_page_size == 1 * GiB);
		CHECK(create(anon(2 * MiB, kPage, kAnonHuge), nullptr, 1 * GiB) == EINVAL);
	}
	SUBCASE("MAP_HUGE_1GB") {
		REQUIRE(create(anon(1 * GiB, kPage, kAnonHuge | kMapHuge1GB), &out) == 0);
		CHECK(out.region_offset == 1 * GiB);
		CHECK(out.size == 1 * GiB);
		CHECK(out.huge_page_size == 1 * GiB);
		CHECK(out.kind == ObjectKind::hugetlb);
		REQUIRE(create(anon(0, 1 * GiB + 1, kAnonHuge | kMapHuge1GB), &out) == 0);
		CHECK(out.size == 2 * GiB);
		// Misaligned addresses for 1 GiB pages, even though 2 MiB aligned.
		CHECK(create(anon(2 * MiB, kPage, kAnonHuge | kMapHuge1GB)) == EINVAL);
		CHECK(create(anon(512 * MiB, 1 * GiB, kAnonHuge | kMapHuge1GB)) == EINVAL);
		CHECK(create(anon(kPage, 1 * GiB, kAnonHuge | kMapHuge1GB)) == EINVAL);
	}
	SUBCASE("rounding may push the mapping past the end of the region") {
		CHECK(create(anon(kGeo.size - 2 * MiB, 2 * MiB, kAnonHuge)) == 0);
		CHECK(create(anon(kGeo.size - 2 * MiB, 2 * MiB + 1, kAnonHuge)) == EINVAL);
		CHECK(create(anon(kGeo.size - 1 * GiB, 1, kAnonHuge | kMapHuge1GB)) == 0);
		CHECK(create(anon(kGeo.size - 2 * MiB, 1, kAnonHuge | kMapHuge1GB)) == EINVAL);
	}
	SUBCASE("no usable huge page size -> EINVAL") {
		CHECK(create(anon(0, kPage, kAnonHuge), nullptr, 0) == EINVAL);
		CHECK(create(anon(0, kPage, kAnonHuge), nullptr, 3 * MiB) == EINVAL);
		CHECK(create(anon(0, kPage, kAnonHuge), nullptr, 2048) == EINVAL);
		// A size encoding below a page (2^5 bytes).
		CHECK(create(anon(0, kPage, kAnonHuge | (5u << 26))) == EINVAL);
		CHECK(create(anon(0, kPage, kAnonHuge | (11u << 26))) == EINVAL);
	}
}

TEST_CASE("a file on hugetlbfs rounds to the file's huge page size")
{
	Mapping out;
	REQUIRE(create(hugetlbfs_file(2 * MiB, 1, 4 * MiB, 2 * MiB), &out) == 0);
	CHECK(out.region_offset == 2 * MiB);
	CHECK(out.size == 2 * MiB);
	CHECK(out.object_offset == 4 * MiB);
	CHECK(out.kind == ObjectKind::hugetlb);
	CHECK(out.has_file);
	CHECK(out.huge_page_size == 2 * MiB);

	// With MAP_HUGETLB the file's page size still wins over size bits.
	REQUIRE(create(hugetlbfs_file(0, 3 * MiB, 0, 2 * MiB, kShared | kMapHugetlb | kMapHuge1GB), &out) ==
		0);
	CHECK(out.size == 4 * MiB);
	CHECK(out.huge_page_size == 2 * MiB);

	REQUIRE(create(hugetlbfs_file(1 * GiB, kPage, 1 * GiB, 1 * GiB), &out) == 0);
	CHECK(out.size == 1 * GiB);
	CHECK(out.huge_page_size == 1 * GiB);

	// Offsets must be aligned to the file's huge page size.
	CHECK(create(hugetlbfs_file(kPage, 2 * MiB, 0, 2 * MiB)) == EINVAL);
	CHECK(create(hugetlbfs_file(0, 2 * MiB, kPage, 2 * MiB)) == EINVAL);
	CHECK(create(hugetlbfs_file(2 * MiB, 2 * MiB, 0, 1 * GiB)) == EINVAL);
	CHECK(create(hugetlbfs_file(0, 2 * MiB, 2 * MiB, 1 * GiB)) == EINVAL);
	// Rounding past the end of the region.
	CHECK(create(hugetlbfs_file(kGeo.size - 2 * MiB, 2 * MiB + 1, 0, 2 * MiB)) == EINVAL);
	// A hugetlbfs file whose page size is unknown or nonsensical.
	CHECK(create(hugetlbfs_file(0, 2 * MiB, 0, 0)) == EINVAL);
	CHECK(create(hugetlbfs_file(0, 2 * MiB, 0, 3 * MiB)) == EINVAL);
	CHECK(create(hugetlbfs_file(0, 2 * MiB, 0, 512)) == EINVAL);
}

TEST_CASE("MAP_HUGETLB on a file that is not on hugetlbfs -> EINVAL")
{
	CHECK(create(file(0, 2 * MiB, 0, kShared | kMapHugetlb)) == EINVAL);
	CHECK(create(file(0, 2 * MiB, 0, kShared | kMapHugetlb | kMapHuge2MB)) == EINVAL);
	CHECK(create(file(1 * GiB, 1 * GiB, 0, kShared | kMapHugetlb | kMapHuge1GB)) == EINVAL);
	// The same file without MAP_HUGETLB is fine.
	CHECK(create(file(0, 2 * MiB, 0, kShared)) == 0);
}

} // TEST_SUITE validate_create

TEST_SUITE("ranges") {

TEST_CASE("validate_range: UNMAP/PROTECT ranges")
{
	CHECK(validate_range(kGeo, 0, kPage) == 0);
	CHECK(validate_range(kGeo, 0, kGeo.size) == 0);
	CHECK(validate_range(kGeo, kGeo.size - kPage, kPage) == 0);
	CHECK(validate_range(kGeo, 16 * kPage, 16 * kPage) == 0);

	CHECK(validate_range(kUnsized, 0, kPage) == EINVAL);
	CHECK(validate_range(Geometry{2 * TiB, kAlign, false}, 0, kPage) == EINVAL);
	CHECK(validate_range(kGeo, 0, 0) == EINVAL);
	CHECK(validate_range(kGeo, kPage, 0) == EINVAL);
	CHECK(validate_range(kGeo, 1, kPage) == EINVAL);
	CHECK(validate_range(kGeo, kPage + 8, kPage) == EINVAL);
	CHECK(validate_range(kGeo, 0, kPage - 1) == EINVAL);
	CHECK(validate_range(kGeo, 0, kPage + 1) == EINVAL);
	CHECK(validate_range(kGeo, kGeo.size, kPage) == EINVAL);
	CHECK(validate_range(kGeo, kGeo.size - kPage, 2 * kPage) == EINVAL);
	CHECK(validate_range(kGeo, 0, kGeo.size + kPage) == EINVAL);
	CHECK(validate_range(kGeo, kGeo.start, kPage) == EINVAL);
	const uint64_t top = 0 - kPage;
	CHECK(validate_range(kGeo, top, 2 * kPage) == EINVAL);
	CHECK(validate_range(kGeo, top, kPage) == EINVAL);
	CHECK(validate_range(kGeo, kPage, top) == EINVAL);
	CHECK(validate_range(kGeo, 0, kU64Max) == EINVAL);
}

TEST_CASE("absolute_to_offset: seed ABI addresses")
{
	uint64_t off = 42;
	CHECK(absolute_to_offset(kGeo, kGeo.start, &off) == 0);
	CHECK(off == 0);
	CHECK(absolute_to_offset(kGeo, kGeo.start + kPage, &off) == 0);
	CHECK(off == kPage);
	CHECK(absolute_to_offset(kGeo, kGeo.start + kGeo.size - kPage, &off) == 0);
	CHECK(off == kGeo.size - kPage);

	CHECK(absolute_to_offset(kUnsized, 0, &off) == EINVAL);
	CHECK(absolute_to_offset(Geometry{2 * TiB, kAlign, false}, 2 * TiB, &off) == EINVAL);
	CHECK(absolute_to_offset(kGeo, 0, &off) == EINVAL);
	CHECK(absolute_to_offset(kGeo, kGeo.start - 1, &off) == EINVAL);
	CHECK(absolute_to_offset(kGeo, kGeo.start - kPage, &off) == EINVAL);
	CHECK(absolute_to_offset(kGeo, kGeo.start + kGeo.size + kPage, &off) == EINVAL);
	CHECK(absolute_to_offset(kGeo, kU64Max, &off) == EINVAL);

	// A region at 0 (v3 window-relative numbers) converts to itself.
	const Geometry zero{0, kAlign, true};
	CHECK(absolute_to_offset(zero, 3 * kPage, &off) == 0);
	CHECK(off == 3 * kPage);

	// Whatever the end address converts to, no request may start there.
	uint64_t end_off = 0;
	if (absolute_to_offset(kGeo, kGeo.start + kGeo.size, &end_off) == 0) {
		CHECK(end_off == kGeo.size);
		CHECK(validate_range(kGeo, end_off, kPage) == EINVAL);
		CHECK(create(anon(end_off, kPage)) == EINVAL);
	}

	// The seed example: a mapping at TB(2) + 1 GiB.
	REQUIRE(absolute_to_offset(kGeo, 2 * TiB + 1 * GiB, &off) == 0);
	Mapping out;
	REQUIRE(create(anon(off, 2 * MiB), &out) == 0);
	CHECK(out.region_offset == 1 * GiB);
}

} // TEST_SUITE ranges

TEST_SUITE("Layout") {

TEST_CASE("empty layout")
{
	Layout l;
	CHECK(l.empty());
	CHECK(l.mappings().empty());
	CHECK(l.mapped_bytes() == 0);
	CHECK(l.find(0) == nullptr);
	CHECK_FALSE(l.covers(0, kPage));
	CHECK(l.covers(0, 0));
	std::vector<Mapping> removed;
	CHECK(l.remove_range(0, kPage, &removed) == 0);
	CHECK(removed.empty());
	CHECK(l.protect(0, kPage, kProtRead) == 0);
	CHECK(l.empty());
}

TEST_CASE("insert keeps mappings sorted; adjacency is allowed")
{
	Layout l;
	REQUIRE(l.insert(mk(8 * kPage, 4 * kPage, 2)) == 0);
	REQUIRE(l.insert(mk(0, 4 * kPage, 1)) == 0);
	REQUIRE(l.insert(mk(4 * kPage, 4 * kPage, 3)) == 0);  // touches both neighbours
	REQUIRE(l.insert(mk(12 * kPage, 1 * kPage, 4)) == 0); // touches the left one
	CHECK_FALSE(l.empty());
	CHECK(l.mapped_bytes() == 13 * kPage);
	CHECK(snap(l) == std::vector<Mapping>{mk(0, 4 * kPage, 1), mk(4 * kPage, 4 * kPage, 3),
					      mk(8 * kPage, 4 * kPage, 2), mk(12 * kPage, kPage, 4)});
	CHECK(l.covers(0, 13 * kPage));
	l.clear();
	CHECK(l.empty());
	CHECK(l.mapped_bytes() == 0);
}

TEST_CASE("constructor sorts")
{
	Layout l({mk(8 * kPage, kPage, 2), mk(0, kPage, 1), mk(4 * kPage, kPage, 3)});
	CHECK(snap(l) == std::vector<Mapping>{mk(0, kPage, 1), mk(4 * kPage, kPage, 3), mk(8 * kPage, kPage, 2)});
	CHECK(l.mapped_bytes() == 3 * kPage);
}

TEST_CASE("overlapping insert -> EEXIST and nothing changes")
{
	Layout l;
	REQUIRE(l.insert(mk(4 * kPage, 4 * kPage, 1)) == 0); // [4, 8) pages
	const auto before = snap(l);
	struct Case {
		uint64_t off, size;
	};
	for (Case c : {Case{4, 4}, Case{3, 2}, Case{7, 2}, Case{0, 16}, Case{5, 1}, Case{4, 1}, Case{7, 1},
		       Case{0, 5}, Case{7, 100}}) {
		CAPTURE(c.off);
		CAPTURE(c.size);
		const Mapping m = mk(c.off * kPage, c.size * kPage, 9);
		CHECK(l.can_insert(m) == EEXIST);
		CHECK(l.insert(m) == EEXIST);
		CHECK(snap(l) == before);
	}
	CHECK(l.can_insert(mk(0, 4 * kPage, 9)) == 0);
	CHECK(l.can_insert(mk(8 * kPage, 4 * kPage, 9)) == 0);
	CHECK(snap(l) == before); // can_insert does not insert
}

TEST_CASE("find")
{
	Layout l({mk(4 * kPage, 4 * kPage, 1), mk(8 * kPage, 2 * kPage, 2), mk(16 * kPage, kPage, 3)});
	CHECK(l.find(0) == nullptr);
	CHECK(l.find(4 * kPage - 1) == nullptr);
	REQUIRE(l.find(4 * kPage) != nullptr);
	CHECK(l.find(4 * kPage)->object_id == 1);
	CHECK(l.find(6 * kPage + 17)->object_id == 1);
	CHECK(l.find(8 * kPage - 1)->object_id == 1);
	CHECK(l.find(8 * kPage)->object_id == 2); // an end belongs to the next mapping
	CHECK(l.find(10 * kPage - 1)->object_id == 2);
	CHECK(l.find(10 * kPage) == nullptr);
	CHECK(l.find(16 * kPage)->object_id == 3);
	CHECK(l.find(17 * kPage) == nullptr);
	CHECK(l.find(kU64Max) == nullptr);
	CHECK(l.find(8 * kPage) == &l.mappings()[1]);
}

TEST_CASE("remove_range splits like munmap")
{
	const uint64_t base = 100 * kPage; // file offset of the object
	Layout l({mk(0, 16 * kPage, 1, base)});
	std::vector<Mapping> removed;

	SUBCASE("whole mapping") {
		CHECK(l.remove_range(0, 16 * kPage, &removed) == 0);
		CHECK(l.empty());
		CHECK(removed == std::vector<Mapping>{mk(0, 16 * kPage, 1, base)});
	}
	SUBCASE("more than the mapping") {
		CHECK(l.remove_range(0, 1 * GiB, &removed) == 0);
		CHECK(l.empty());
		CHECK(removed == std::vector<Mapping>{mk(0, 16 * kPage, 1, base)});
	}
	SUBCASE("the middle: split at both edges, tail offset adjusted") {
		CHECK(l.remove_range(4 * kPage, 8 * kPage, &removed) == 0);
		CHECK(snap(l) == std::vector<Mapping>{mk(0, 4 * kPage, 1, base),
						      mk(12 * kPage, 4 * kPage, 1, base + 12 * kPage)});
		CHECK(removed == std::vector<Mapping>{mk(4 * kPage, 8 * kPage, 1, base + 4 * kPage)});
		CHECK(l.mapped_bytes() == 8 * kPage);
		CHECK_FALSE(l.covers(4 * kPage, kPage));
		CHECK(l.find(12 * kPage)->object_offset == base + 12 * kPage);
	}
	SUBCASE("the head") {
		CHECK(l.remove_range(0, 4 * kPage, &removed) == 0);
		CHECK(snap(l) == std::vector<Mapping>{mk(4 * kPage, 12 * kPage, 1, base + 4 * kPage)});
		CHECK(removed == std::vector<Mapping>{mk(0, 4 * kPage, 1, base)});
	}
	SUBCASE("the tail, and past it") {
		CHECK(l.remove_range(12 * kPage, 8 * kPage, &removed) == 0);
		CHECK(snap(l) == std::vector<Mapping>{mk(0, 12 * kPage, 1, base)});
		CHECK(removed == std::vector<Mapping>{mk(12 * kPage, 4 * kPage, 1, base + 12 * kPage)});
	}
	SUBCASE("one page, twice") {
		CHECK(l.remove_range(5 * kPage, kPage, &removed) == 0);
		CHECK(l.remove_range(5 * kPage, kPage, &removed) == 0); // now a hole
		CHECK(removed.size() == 1);
		CHECK(snap(l) == std::vector<Mapping>{mk(0, 5 * kPage, 1, base),
						      mk(6 * kPage, 10 * kPage, 1, base + 6 * kPage)});
	}
	SUBCASE("removed may be null") {
		CHECK(l.remove_range(4 * kPage, 4 * kPage, nullptr) == 0);
		CHECK(l.mapped_bytes() == 12 * kPage);
	}
	SUBCASE("empty or wrapping range -> EINVAL, nothing changed") {
		CHECK(l.remove_range(4 * kPage, 0, &removed) == EINVAL);
		CHECK(l.remove_range(4 * kPage, kU64Max, &removed) == EINVAL);
		CHECK(l.remove_range(kU64Max, 2, &removed) == EINVAL);
		CHECK(removed.empty());
		CHECK(snap(l) == std::vector<Mapping>{mk(0, 16 * kPage, 1, base)});
	}
}

TEST_CASE("remove_range across mappings and holes")
{
	// A [0,16) pages, hole [16,32), B [32,48), C [48,52) adjacent to B.
	Layout l({mk(0, 16 * kPage, 1, 0), mk(32 * kPage, 16 * kPage, 2, 64 * kPage),
		  mk(48 * kPage, 4 * kPage, 3, 0)});
	std::vector<Mapping> removed;
	REQUIRE(l.remove_range(8 * kPage, 32 * kPage, &removed) == 0); // [8, 40)
	CHECK(snap(l) == std::vector<Mapping>{mk(0, 8 * kPage, 1, 0), mk(40 * kPage, 8 * kPage, 2, 72 * kPage),
					      mk(48 * kPage, 4 * kPage, 3, 0)});
	CHECK(removed == std::vector<Mapping>{mk(8 * kPage, 8 * kPage, 1, 8 * kPage),
					      mk(32 * kPage, 8 * kPage, 2, 64 * kPage)});

	// Exactly at the B|C boundary: C is removed whole, B untouched.
	removed.clear();
	REQUIRE(l.remove_range(48 * kPage, 4 * kPage, &removed) == 0);
	CHECK(removed == std::vector<Mapping>{mk(48 * kPage, 4 * kPage, 3, 0)});
	CHECK(snap(l) == std::vector<Mapping>{mk(0, 8 * kPage, 1, 0), mk(40 * kPage, 8 * kPage, 2, 72 * kPage)});
}

TEST_CASE("removing a hole is not an error")
{
	Layout l({mk(0, 4 * kPage, 1), mk(16 * kPage, 4 * kPage, 2)});
	const auto before = snap(l);
	std::vector<Mapping> removed;
	CHECK(l.remove_range(4 * kPage, 12 * kPage, &removed) == 0); // exactly the hole
	CHECK(l.remove_range(8 * kPage, kPage, &removed) == 0);
	CHECK(l.remove_range(1 * GiB, 1 * GiB, &removed) == 0);
	CHECK(removed.empty());
	CHECK(snap(l) == before);
}

TEST_CASE("remove_range on hugetlb: only on huge page boundaries")
{
	const uint64_t huge = 2 * MiB;
	// hugetlb [2 MiB, 8 MiB) and a base-page mapping [0, 2 MiB) before it.
	Layout l({mk(0, 2 * MiB, 1), mk(2 * MiB, 6 * MiB, 2, 0, kProtRW, huge)});
	const auto before = snap(l);
	std::vector<Mapping> removed;

	SUBCASE("start edge off a huge page boundary -> EINVAL, nothing changed") {
		CHECK(l.remove_range(2 * MiB + kPage, 2 * MiB, &removed) == EINVAL);
		CHECK(l.remove_range(3 * MiB, 5 * MiB, &removed) == EINVAL);
		CHECK(removed.empty());
		CHECK(snap(l) == before);
	}
	SUBCASE("end edge off a huge page boundary -> EINVAL, start edge not split") {
		CHECK(l.remove_range(4 * MiB, kPage, &removed) == EINVAL);
		CHECK(l.remove_range(2 * MiB, 3 * MiB, &removed) == EINVAL);
		// Start edge inside the base-page mapping: must not be split either.
		CHECK(l.remove_range(1 * MiB, 2 * MiB, &removed) == EINVAL);
		CHECK(removed.empty());
		CHECK(snap(l) == before);
	}
	SUBCASE("on huge page boundaries: split, huge page size kept") {
		CHECK(l.remove_range(4 * MiB, 2 * MiB, &removed) == 0);
		CHECK(snap(l) == std::vector<Mapping>{mk(0, 2 * MiB, 1), mk(2 * MiB, 2 * MiB, 2, 0, kProtRW, huge),
						      mk(6 * MiB, 2 * MiB, 2, 4 * MiB, kProtRW, huge)});
		CHECK(removed == std::vector<Mapping>{mk(4 * MiB, 2 * MiB, 2, 2 * MiB, kProtRW, huge)});
	}
	SUBCASE("a base-page edge plus a hugetlb edge on its boundary") {
		CHECK(l.remove_range(1 * MiB, 3 * MiB, &removed) == 0); // [1 MiB, 4 MiB)
		CHECK(snap(l) == std::vector<Mapping>{mk(0, 1 * MiB, 1),
						      mk(4 * MiB, 4 * MiB, 2, 2 * MiB, kProtRW, huge)});
		CHECK(removed == std::vector<Mapping>{mk(1 * MiB, 1 * MiB, 1, 1 * MiB),
						      mk(2 * MiB, 2 * MiB, 2, 0, kProtRW, huge)});
	}
	SUBCASE("1 GiB pages") {
		Layout g({mk(1 * GiB, 2 * GiB, 5, 0, kProtRW, 1 * GiB)});
		const auto gb = snap(g);
		CHECK(g.remove_range(1 * GiB, 2 * MiB, &removed) == EINVAL);
		CHECK(g.remove_range(1 * GiB + 2 * MiB, 1 * GiB, &removed) == EINVAL);
		CHECK(snap(g) == gb);
		CHECK(g.remove_range(2 * GiB, 1 * GiB, &removed) == 0);
		CHECK(snap(g) == std::vector<Mapping>{mk(1 * GiB, 1 * GiB, 5, 0, kProtRW, 1 * GiB)});
	}
}

TEST_CASE("orphaned_objects")
{
	// Object 1 is mapped twice, object 2 once, object 3 once.
	Layout l({mk(0, 8 * kPage, 1), mk(8 * kPage, 8 * kPage, 2), mk(32 * kPage, 8 * kPage, 1, 8 * kPage),
		  mk(48 * kPage, 4 * kPage, 3)});
	std::vector<Mapping> removed;

	SUBCASE("an object still mapped elsewhere is not orphaned") {
		REQUIRE(l.remove_range(0, 16 * kPage, &removed) == 0);
		CHECK(l.orphaned_objects(removed) == std::vector<uint64_t>{2});
		removed.clear();
		REQUIRE(l.remove_range(32 * kPage, 8 * kPage, &removed) == 0);
		CHECK(l.orphaned_objects(removed) == std::vector<uint64_t>{1});
	}
	SUBCASE("a partly removed object is not orphaned") {
		REQUIRE(l.remove_range(10 * kPage, 2 * kPage, &removed) == 0);
		CHECK(l.orphaned_objects(removed).empty());
	}
	SUBCASE("each orphan reported once, in order of removal") {
		REQUIRE(l.remove_range(0, 64 * kPage, &removed) == 0);
		CHECK(removed.size() == 4);
		CHECK(l.empty());
		CHECK(l.orphaned_objects(removed) == std::vector<uint64_t>{1, 2, 3});
	}
	SUBCASE("pieces of one object removed in two calls") {
		REQUIRE(l.remove_range(2 * kPage, 2 * kPage, &removed) == 0);
		REQUIRE(l.remove_range(6 * kPage, 2 * kPage, &removed) == 0);
		CHECK(removed.size() == 2);
		CHECK(l.orphaned_objects(removed).empty()); // [0,2) and [4,6) and the second mapping remain
	}
	SUBCASE("nothing removed") {
		CHECK(l.orphaned_objects({}).empty());
	}
}

TEST_CASE("protect splits at the edges")
{
	const uint64_t base = 40 * kPage;
	Layout l({mk(0, 16 * kPage, 1, base), mk(32 * kPage, 8 * kPage, 2)});

	SUBCASE("inside one mapping") {
		REQUIRE(l.protect(4 * kPage, 4 * kPage, kProtRead) == 0);
		CHECK(snap(l) == std::vector<Mapping>{mk(0, 4 * kPage, 1, base),
						      mk(4 * kPage, 4 * kPage, 1, base + 4 * kPage, kProtRead),
						      mk(8 * kPage, 8 * kPage, 1, base + 8 * kPage),
						      mk(32 * kPage, 8 * kPage, 2)});
		CHECK(l.mapped_bytes() == 24 * kPage);
		CHECK(l.covers(0, 16 * kPage));
	}
	SUBCASE("across a hole and two mappings") {
		REQUIRE(l.protect(8 * kPage, 28 * kPage, 0) == 0); // [8, 36)
		CHECK(snap(l) == std::vector<Mapping>{mk(0, 8 * kPage, 1, base),
						      mk(8 * kPage, 8 * kPage, 1, base + 8 * kPage, 0),
						      mk(32 * kPage, 4 * kPage, 2, 0, 0),
						      mk(36 * kPage, 4 * kPage, 2, 4 * kPage)});
		CHECK_FALSE(l.covers(8 * kPage, 28 * kPage)); // protect never fills holes
	}
	SUBCASE("whole mappings: no split") {
		REQUIRE(l.protect(0, 64 * kPage, kProtRead | kProtExec) == 0);
		CHECK(snap(l) == std::vector<Mapping>{mk(0, 16 * kPage, 1, base, kProtRead | kProtExec),
						      mk(32 * kPage, 8 * kPage, 2, 0, kProtRead | kProtExec)});
	}
	SUBCASE("only a hole") {
		const auto before = snap(l);
		REQUIRE(l.protect(16 * kPage, 16 * kPage, kProtRead) == 0);
		CHECK(snap(l) == before);
	}
	SUBCASE("unknown prot bits, empty or wrapping range -> EINVAL, nothing changed") {
		const auto before = snap(l);
		CHECK(l.protect(4 * kPage, 4 * kPage, 0x8) == EINVAL);
		CHECK(l.protect(4 * kPage, 4 * kPage, 0x01000000) == EINVAL);
		CHECK(l.protect(4 * kPage, 0, kProtRead) == EINVAL);
		CHECK(l.protect(4 * kPage, kU64Max, kProtRead) == EINVAL);
		CHECK(snap(l) == before);
	}
	SUBCASE("hugetlb: only on huge page boundaries") {
		Layout h({mk(0, 4 * kPage, 1), mk(2 * MiB, 4 * MiB, 2, 0, kProtRW, 2 * MiB)});
		const auto before = snap(h);
		CHECK(h.protect(2 * kPage, 2 * MiB, kProtRead) == EINVAL); // end edge inside a huge page
		CHECK(h.protect(3 * MiB, 1 * MiB, kProtRead) == EINVAL);
		CHECK(snap(h) == before); // the base-page mapping was not split either
		REQUIRE(h.protect(2 * kPage, 2 * MiB - 2 * kPage + 2 * MiB, kProtRead) == 0); // ends at 4 MiB
		CHECK(snap(h) == std::vector<Mapping>{mk(0, 2 * kPage, 1),
						      mk(2 * kPage, 2 * kPage, 1, 2 * kPage, kProtRead),
						      mk(2 * MiB, 2 * MiB, 2, 0, kProtRead, 2 * MiB),
						      mk(4 * MiB, 2 * MiB, 2, 2 * MiB, kProtRW, 2 * MiB)});
	}
}

TEST_CASE("pieces and covers")
{
	// hole [0,4) A [4,8) hole [8,12) B [12,16) C [16,20) hole beyond (pages)
	const Layout l({mk(4 * kPage, 4 * kPage, 1, 100 * kPage), mk(12 * kPage, 4 * kPage, 2),
			mk(16 * kPage, 4 * kPage, 3, 8 * kPage)});
	const Mapping *a = &l.mappings()[0];
	const Mapping *b = &l.mappings()[1];
	const Mapping *c = &l.mappings()[2];

	auto check_contiguous = [](const std::vector<Piece> &ps, uint64_t off, uint64_t len) {
		uint64_t pos = off;
		for (const auto &p : ps) {
			CHECK(p.region_offset == pos);
			CHECK(p.size > 0);
			pos += p.size;
		}
		CHECK(pos - off == len);
	};

	SUBCASE("holes at the start, middle and end") {
		const auto ps = l.pieces(0, 24 * kPage);
		REQUIRE(ps.size() == 6);
		CHECK(ps[0].region_offset == 0);
		CHECK(ps[0].size == 4 * kPage);
		CHECK(ps[0].mapping == nullptr);
		CHECK(ps[1].region_offset == 4 * kPage);
		CHECK(ps[1].size == 4 * kPage);
		CHECK(ps[1].mapping == a);
		CHECK(ps[1].object_offset() == 100 * kPage);
		CHECK(ps[2].region_offset == 8 * kPage);
		CHECK(ps[2].size == 4 * kPage);
		CHECK(ps[2].mapping == nullptr);
		CHECK(ps[3].mapping == b);
		CHECK(ps[3].size == 4 * kPage);
		CHECK(ps[4].mapping == c); // adjacent mappings: no hole between
		CHECK(ps[4].region_offset == 16 * kPage);
		CHECK(ps[4].object_offset() == 8 * kPage);
		CHECK(ps[5].region_offset == 20 * kPage);
		CHECK(ps[5].size == 4 * kPage);
		CHECK(ps[5].mapping == nullptr);
		check_contiguous(ps, 0, 24 * kPage);
	}
	SUBCASE("starting and ending inside mappings") {
		const auto ps = l.pieces(6 * kPage + 100, 8 * kPage);
		REQUIRE(ps.size() == 3);
		CHECK(ps[0].mapping == a);
		CHECK(ps[0].region_offset == 6 * kPage + 100);
		CHECK(ps[0].size == 2 * kPage - 100);
		CHECK(ps[0].object_offset() == 102 * kPage + 100);
		CHECK(ps[1].mapping == nullptr);
		CHECK(ps[1].size == 4 * kPage);
		CHECK(ps[2].mapping == b);
		CHECK(ps[2].region_offset == 12 * kPage);
		CHECK(ps[2].size == 2 * kPage + 100);
		CHECK(ps[2].object_offset() == 0);
		check_contiguous(ps, 6 * kPage + 100, 8 * kPage);
	}
	SUBCASE("across the boundary of adjacent mappings") {
		const auto ps = l.pieces(15 * kPage, 2 * kPage);
		REQUIRE(ps.size() == 2);
		CHECK(ps[0].mapping == b);
		CHECK(ps[0].object_offset() == 3 * kPage);
		CHECK(ps[1].mapping == c);
		CHECK(ps[1].object_offset() == 8 * kPage);
		check_contiguous(ps, 15 * kPage, 2 * kPage);
	}
	SUBCASE("inside one mapping or one hole") {
		auto ps = l.pieces(5 * kPage, kPage);
		REQUIRE(ps.size() == 1);
		CHECK(ps[0].mapping == a);
		CHECK(ps[0].object_offset() == 101 * kPage);
		ps = l.pieces(9 * kPage, 2 * kPage);
		REQUIRE(ps.size() == 1);
		CHECK(ps[0].mapping == nullptr);
		CHECK(ps[0].region_offset == 9 * kPage);
		CHECK(ps[0].size == 2 * kPage);
		ps = l.pieces(100 * kPage, kPage);
		REQUIRE(ps.size() == 1);
		CHECK(ps[0].mapping == nullptr);
		ps = Layout().pieces(0, 1 * GiB);
		REQUIRE(ps.size() == 1);
		CHECK(ps[0].mapping == nullptr);
		CHECK(ps[0].size == 1 * GiB);
	}
	SUBCASE("an empty range has no pieces") {
		CHECK(l.pieces(0, 0).empty());
		CHECK(l.pieces(4 * kPage, 0).empty());
		CHECK(l.pieces(5 * kPage, 0).empty());
		CHECK(l.pieces(10 * kPage, 0).empty());
	}
	SUBCASE("a range running off the end of the address space is clamped") {
		const uint64_t off = 0 - kPage;
		const auto ps = l.pieces(off, 2 * kPage);
		REQUIRE(ps.size() == 1);
		CHECK(ps[0].mapping == nullptr);
		CHECK(ps[0].region_offset == off);
		CHECK(ps[0].size == kU64Max - off);
	}
	SUBCASE("covers") {
		CHECK(l.covers(4 * kPage, 4 * kPage));
		CHECK(l.covers(5 * kPage, kPage));
		CHECK(l.covers(12 * kPage, 8 * kPage)); // B and C, adjacent
		CHECK(l.covers(13 * kPage + 1, 5 * kPage));
		CHECK_FALSE(l.covers(0, 8 * kPage));
		CHECK_FALSE(l.covers(4 * kPage, 5 * kPage));
		CHECK_FALSE(l.covers(7 * kPage, 6 * kPage));
		CHECK_FALSE(l.covers(19 * kPage, 2 * kPage));
		CHECK_FALSE(l.covers(8 * kPage, kPage));
		CHECK(l.covers(8 * kPage, 0)); // nothing to cover
	}
}

} // TEST_SUITE Layout

TEST_SUITE("ioctl") {

TEST_CASE("classify_ioctl: every number")
{
	// Literal numbers (SPEC 2); tests/abi checks the header against them.
	CHECK(classify_ioctl(0x80107800u, false) == IoctlOp::get_size);
	CHECK(classify_ioctl(0x80107800u, true) == IoctlOp::get_size);
	CHECK(classify_ioctl(0x40107801u, false) == IoctlOp::set_size);
	CHECK(classify_ioctl(0x40107801u, true) == IoctlOp::unmap_v3);
	CHECK(classify_ioctl(0x40287802u, false) == IoctlOp::create_mapping);
	CHECK(classify_ioctl(0x40287802u, true) == IoctlOp::create_mapping);
	CHECK(classify_ioctl(0x40107803u, false) == IoctlOp::unmap);
	CHECK(classify_ioctl(0x40107803u, true) == IoctlOp::unmap);
	CHECK(classify_ioctl(0x40287800u, false) == IoctlOp::create_mapping_v3);
	CHECK(classify_ioctl(0x40287800u, true) == IoctlOp::create_mapping_v3);
	CHECK(classify_ioctl(0x40187804u, false) == IoctlOp::protect);
	CHECK(classify_ioctl(0x40187804u, true) == IoctlOp::protect);
	CHECK(classify_ioctl(0x7805u, false) == IoctlOp::lock);
	CHECK(classify_ioctl(0x7805u, true) == IoctlOp::lock);
	CHECK(classify_ioctl(0x7806u, false) == IoctlOp::unlock);
	CHECK(classify_ioctl(0x7806u, true) == IoctlOp::unlock);

	// The same through the header's macros.
	CHECK(classify_ioctl(MSHAREFS_GET_SIZE, true) == IoctlOp::get_size);
	CHECK(classify_ioctl(MSHAREFS_SET_SIZE, false) == IoctlOp::set_size);
	CHECK(classify_ioctl(MSHAREFS_UNMAP_V3, true) == IoctlOp::unmap_v3);
	CHECK(classify_ioctl(MSHAREFS_CREATE_MAPPING, true) == IoctlOp::create_mapping);
	CHECK(classify_ioctl(MSHAREFS_UNMAP, true) == IoctlOp::unmap);
	CHECK(classify_ioctl(MSHAREFS_CREATE_MAPPING_V3, true) == IoctlOp::create_mapping_v3);
	CHECK(classify_ioctl(MSHAREFS_PROTECT, true) == IoctlOp::protect);
	CHECK(classify_ioctl(MSHAREFS_LOCK, true) == IoctlOp::lock);
	CHECK(classify_ioctl(MSHAREFS_UNLOCK, true) == IoctlOp::unlock);
	CHECK(classify_ioctl(MSHAREFS_SET_OWNER, false) == IoctlOp::set_owner);
	CHECK(classify_ioctl(MSHAREFS_SET_OWNER, true) == IoctlOp::set_owner);
}

TEST_CASE("classify_ioctl: SET_SIZE and UNMAP_V3 share a number")
{
	static_assert(MSHAREFS_SET_SIZE == MSHAREFS_UNMAP_V3);
	CHECK(classify_ioctl(MSHAREFS_SET_SIZE, false) == IoctlOp::set_size);
	CHECK(classify_ioctl(MSHAREFS_SET_SIZE, true) == IoctlOp::unmap_v3);
	CHECK(classify_ioctl(MSHAREFS_UNMAP_V3, false) == IoctlOp::set_size);
	CHECK(classify_ioctl(MSHAREFS_UNMAP_V3, true) == IoctlOp::unmap_v3);
}

TEST_CASE("classify_ioctl: anything else is unknown")
{
	for (bool sized : {false, true}) {
		CAPTURE(sized);
		CHECK(classify_ioctl(0, sized) == IoctlOp::unknown);
		CHECK(classify_ioctl(0xffffffffu, sized) == IoctlOp::unknown);
		CHECK(classify_ioctl(0x7800u, sized) == IoctlOp::unknown);     // _IO('x', 0)
		CHECK(classify_ioctl(0x7807u, sized) == IoctlOp::unknown);     // _IO('x', 7)
		CHECK(classify_ioctl(0x40107800u, sized) == IoctlOp::unknown); // _IOW('x', 0, 16)
		CHECK(classify_ioctl(0x80107801u, sized) == IoctlOp::unknown); // _IOR('x', 1, 16)
		CHECK(classify_ioctl(0xc0107800u, sized) == IoctlOp::unknown); // _IOWR('x', 0, 16)
		CHECK(classify_ioctl(0x40247802u, sized) == IoctlOp::unknown); // 36-byte create (i386 without padding)
		CHECK(classify_ioctl(0x40287803u, sized) == IoctlOp::unknown);
		CHECK(classify_ioctl(0x40107804u, sized) == IoctlOp::unknown); // protect with a 16-byte struct
		CHECK(classify_ioctl(0x40107901u, sized) == IoctlOp::unknown); // magic 'y'
		CHECK(classify_ioctl(0x80107700u, sized) == IoctlOp::unknown); // magic 'w'
		CHECK(classify_ioctl(0x5401u, sized) == IoctlOp::unknown);     // TCGETS
	}

	// Exhaustively over the 'x' magic: directions, small sizes, numbers.
	int known = 0, differ = 0;
	for (uint32_t dir = 0; dir < 4; dir++)
		for (uint32_t size = 0; size <= 64; size++)
			for (uint32_t nr = 0; nr < 256; nr++) {
				const uint32_t cmd = dir << 30 | size << 16 | uint32_t{'x'} << 8 | nr;
				const IoctlOp unsized = classify_ioctl(cmd, false);
				const IoctlOp sized = classify_ioctl(cmd, true);
				known += unsized != IoctlOp::unknown;
				// Only the shared SET_SIZE/UNMAP_V3 number depends on "sized".
				differ += unsized != sized;
			}
	CHECK(known == 9); // ten names, UNMAP_V3 == SET_SIZE
	CHECK(differ == 1);
}

TEST_CASE("ioctl_name")
{
	CHECK(std::string(ioctl_name(IoctlOp::get_size)) == "GET_SIZE");
	CHECK(std::string(ioctl_name(IoctlOp::set_size)) == "SET_SIZE");
	CHECK(std::string(ioctl_name(IoctlOp::create_mapping)) == "CREATE_MAPPING");
	CHECK(std::string(ioctl_name(IoctlOp::unmap)) == "UNMAP");
	CHECK(std::string(ioctl_name(IoctlOp::create_mapping_v3)) == "CREATE_MAPPING_V3");
	CHECK(std::string(ioctl_name(IoctlOp::unmap_v3)) == "UNMAP_V3");
	CHECK(std::string(ioctl_name(IoctlOp::protect)) == "PROTECT");
	CHECK(std::string(ioctl_name(IoctlOp::lock)) == "LOCK");
	CHECK(std::string(ioctl_name(IoctlOp::unlock)) == "UNLOCK");
	CHECK(std::string(ioctl_name(IoctlOp::set_owner)) == "SET_OWNER");
	CHECK(std::string(ioctl_name(IoctlOp::unknown)) == "unknown");
}

} // TEST_SUITE ioctl

TEST_SUITE("parse_bytes") {

TEST_CASE("plain numbers and suffixes")
{
	CHECK(parse_bytes("0") == 0u);
	CHECK(parse_bytes("1") == 1u);
	CHECK(parse_bytes("4096") == 4096u);
	CHECK(parse_bytes("007") == 7u);
	CHECK(parse_bytes("4K") == 4 * KiB);
	CHECK(parse_bytes("4k") == 4 * KiB);
	CHECK(parse_bytes("4KiB") == 4 * KiB);
	CHECK(parse_bytes("2M") == 2 * MiB);
	CHECK(parse_bytes("2MiB") == 2 * MiB);
	CHECK(parse_bytes("1G") == 1 * GiB);
	CHECK(parse_bytes("300GiB") == 300 * GiB);
	CHECK(parse_bytes("2T") == 2 * TiB);
	CHECK(parse_bytes("128TiB") == 128 * TiB);
	CHECK(parse_bytes("512G") == MSHAREFS_DEFAULT_ALIGN);
	CHECK(parse_bytes("0K") == 0u);
}

TEST_CASE("limits")
{
	CHECK(parse_bytes("18446744073709551615") == kU64Max);
	CHECK(parse_bytes("18446744073709551616") == std::nullopt);
	CHECK(parse_bytes("99999999999999999999999") == std::nullopt);
	CHECK(parse_bytes("16777215T") == 16777215 * TiB);
	CHECK(parse_bytes("16777216T") == std::nullopt); // 2^64
	CHECK(parse_bytes("17179869183G") == 17179869183 * GiB);
	CHECK(parse_bytes("17179869184G") == std::nullopt);
	CHECK(parse_bytes("18014398509481983K") == 18014398509481983 * KiB);
	CHECK(parse_bytes("18014398509481984K") == std::nullopt);
}

TEST_CASE("malformed text")
{
	for (const char *bad : {"", "K", "G", "-1", "+1", " 1", "1 ", "1 K", "1KB", "1Kib", "1.5G", "0x10",
				"1KK", "1K1", "4Ki", "abc", "1e3", "1Ti"}) {
		CAPTURE(bad);
		CHECK(parse_bytes(bad) == std::nullopt);
	}
	// Not NUL terminated: only the view counts.
	const char text[] = "64Kxyz";
	CHECK(parse_bytes(std::string_view(text, 3)) == 64 * KiB);
	CHECK(parse_bytes(std::string_view(text, 2)) == 64u);
	CHECK(parse_bytes(std::string_view(text, 4)) == std::nullopt);
}

} // TEST_SUITE parse_bytes
