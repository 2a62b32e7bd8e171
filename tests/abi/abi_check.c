/*
 * Checks the msharefs ABI header against the numbers in the specification.
 *
 * Every expected value below is a literal worked out by hand from the _IOC
 * encoding (dir << 30 | size << 16 | type << 8 | nr, with _IOW = 1 and
 * _IOR = 2, type 'x' = 0x78), never from the header's own macros. Compiled
 * for the native ABI and with -m32: a 32-bit client must see the same
 * numbers and layouts. Fails to compile if anything differs (_Static_assert),
 * and prints every value and exits non-zero at run time as well.
 */
#include <linux/msharefs.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MEMBER_SIZE(type, member) sizeof(((type *)0)->member)

/* ioctl numbers */
_Static_assert(MSHAREFS_GET_SIZE == 0x80107800u, "MSHAREFS_GET_SIZE");
_Static_assert(MSHAREFS_SET_SIZE == 0x40107801u, "MSHAREFS_SET_SIZE");
_Static_assert(MSHAREFS_CREATE_MAPPING == 0x40287802u, "MSHAREFS_CREATE_MAPPING");
_Static_assert(MSHAREFS_UNMAP == 0x40107803u, "MSHAREFS_UNMAP");
_Static_assert(MSHAREFS_CREATE_MAPPING_V3 == 0x40287800u, "MSHAREFS_CREATE_MAPPING_V3");
_Static_assert(MSHAREFS_UNMAP_V3 == 0x40107801u, "MSHAREFS_UNMAP_V3");
_Static_assert(MSHAREFS_UNMAP_V3 == MSHAREFS_SET_SIZE, "UNMAP_V3 shares the SET_SIZE number");
_Static_assert(MSHAREFS_PROTECT == 0x40187804u, "MSHAREFS_PROTECT");
_Static_assert(MSHAREFS_LOCK == 0x7805u, "MSHAREFS_LOCK");
_Static_assert(MSHAREFS_UNLOCK == 0x7806u, "MSHAREFS_UNLOCK");
_Static_assert(MSHAREFS_SET_OWNER == 0x40087807u, "MSHAREFS_SET_OWNER");
_Static_assert(MSHAREFS_MAGIC == 0x78, "MSHAREFS_MAGIC");

/* struct sizes */
_Static_assert(sizeof(struct mshare_info) == 16, "sizeof(struct mshare_info)");
_Static_assert(sizeof(struct mshare_create) == 40, "sizeof(struct mshare_create)");
_Static_assert(sizeof(struct mshare_unmap) == 16, "sizeof(struct mshare_unmap)");
_Static_assert(sizeof(struct mshare_create_v3) == 40, "sizeof(struct mshare_create_v3)");
_Static_assert(sizeof(struct mshare_unmap_v3) == 16, "sizeof(struct mshare_unmap_v3)");
_Static_assert(sizeof(struct mshare_protect) == 24, "sizeof(struct mshare_protect)");
_Static_assert(sizeof(struct mshare_owner) == 8, "sizeof(struct mshare_owner)");

/* field offsets */
_Static_assert(offsetof(struct mshare_info, start) == 0, "mshare_info.start");
_Static_assert(offsetof(struct mshare_info, size) == 8, "mshare_info.size");

_Static_assert(offsetof(struct mshare_create, addr) == 0, "mshare_create.addr");
_Static_assert(offsetof(struct mshare_create, size) == 8, "mshare_create.size");
_Static_assert(offsetof(struct mshare_create, offset) == 16, "mshare_create.offset");
_Static_assert(offsetof(struct mshare_create, prot) == 24, "mshare_create.prot");
_Static_assert(offsetof(struct mshare_create, flags) == 28, "mshare_create.flags");
_Static_assert(offsetof(struct mshare_create, fd) == 32, "mshare_create.fd");

_Static_assert(offsetof(struct mshare_unmap, addr) == 0, "mshare_unmap.addr");
_Static_assert(offsetof(struct mshare_unmap, size) == 8, "mshare_unmap.size");

_Static_assert(offsetof(struct mshare_create_v3, region_offset) == 0, "mshare_create_v3.region_offset");
_Static_assert(offsetof(struct mshare_create_v3, size) == 8, "mshare_create_v3.size");
_Static_assert(offsetof(struct mshare_create_v3, offset) == 16, "mshare_create_v3.offset");
_Static_assert(offsetof(struct mshare_create_v3, prot) == 24, "mshare_create_v3.prot");
_Static_assert(offsetof(struct mshare_create_v3, flags) == 28, "mshare_create_v3.flags");
_Static_assert(offsetof(struct mshare_create_v3, fd) == 32, "mshare_create_v3.fd");

_Static_assert(offsetof(struct mshare_unmap_v3, region_offset) == 0, "mshare_unmap_v3.region_offset");
_Static_assert(offsetof(struct mshare_unmap_v3, size) == 8, "mshare_unmap_v3.size");

_Static_assert(offsetof(struct mshare_protect, addr) == 0, "mshare_protect.addr");
_Static_assert(offsetof(struct mshare_protect, size) == 8, "mshare_protect.size");
_Static_assert(offsetof(struct mshare_protect, prot) == 16, "mshare_protect.prot");
_Static_assert(offsetof(struct mshare_protect, pad) == 20, "mshare_protect.pad");

_Static_assert(offsetof(struct mshare_owner, pidfd) == 0, "mshare_owner.pidfd");
_Static_assert(offsetof(struct mshare_owner, flags) == 4, "mshare_owner.flags");

/* fixed-width fields */
_Static_assert(MEMBER_SIZE(struct mshare_create, addr) == 8, "mshare_create.addr is 64-bit");
_Static_assert(MEMBER_SIZE(struct mshare_create, prot) == 4, "mshare_create.prot is 32-bit");
_Static_assert(MEMBER_SIZE(struct mshare_create, flags) == 4, "mshare_create.flags is 32-bit");
_Static_assert(MEMBER_SIZE(struct mshare_create, fd) == 4, "mshare_create.fd is 32-bit");
_Static_assert(MEMBER_SIZE(struct mshare_protect, prot) == 4, "mshare_protect.prot is 32-bit");
_Static_assert(MEMBER_SIZE(struct mshare_protect, pad) == 4, "mshare_protect.pad is 32-bit");
_Static_assert(MEMBER_SIZE(struct mshare_owner, pidfd) == 4, "mshare_owner.pidfd is 32-bit");
_Static_assert(MEMBER_SIZE(struct mshare_owner, flags) == 4, "mshare_owner.flags is 32-bit");

static int failures;

static void check(const char *what, unsigned long long value, unsigned long long expected)
{
	const int ok = value == expected;
	printf("%-48s 0x%08llx (%llu)  expected 0x%08llx  %s\n", what, value, value, expected,
	       ok ? "ok" : "MISMATCH");
	if (!ok)
		failures++;
}

#define CHECK_IOCTL(name, expected) check(#name, (unsigned long long)(name), expected)
#define CHECK_SIZE(type, expected) check("sizeof(" #type ")", sizeof(type), expected)
#define CHECK_OFFSET(type, member, expected) \
	check("offsetof(" #type ", " #member ")", offsetof(type, member), expected)

int main(void)
{
	printf("msharefs ABI, %u-bit (sizeof(long) = %u)\n", (unsigned)(sizeof(void *) * 8),
	       (unsigned)sizeof(long));

	CHECK_IOCTL(MSHAREFS_GET_SIZE, 0x80107800u);
	CHECK_IOCTL(MSHAREFS_SET_SIZE, 0x40107801u);
	CHECK_IOCTL(MSHAREFS_CREATE_MAPPING, 0x40287802u);
	CHECK_IOCTL(MSHAREFS_UNMAP, 0x40107803u);
	CHECK_IOCTL(MSHAREFS_CREATE_MAPPING_V3, 0x40287800u);
	CHECK_IOCTL(MSHAREFS_UNMAP_V3, 0x40107801u);
	CHECK_IOCTL(MSHAREFS_PROTECT, 0x40187804u);
	CHECK_IOCTL(MSHAREFS_LOCK, 0x7805u);
	CHECK_IOCTL(MSHAREFS_UNLOCK, 0x7806u);
	CHECK_IOCTL(MSHAREFS_SET_OWNER, 0x40087807u);
	CHECK_IOCTL(MSHAREFS_MAGIC, 0x78u);
	/* The numbers as a 32-bit unsigned int, as the FUSE ioctl handler sees them. */
	check("(uint32_t)MSHAREFS_GET_SIZE", (uint32_t)MSHAREFS_GET_SIZE, 0x80107800u);

	CHECK_SIZE(struct mshare_info, 16);
	CHECK_SIZE(struct mshare_create, 40);
	CHECK_SIZE(struct mshare_unmap, 16);
	CHECK_SIZE(struct mshare_create_v3, 40);
	CHECK_SIZE(struct mshare_unmap_v3, 16);
	CHECK_SIZE(struct mshare_protect, 24);
	CHECK_SIZE(struct mshare_owner, 8);

	CHECK_OFFSET(struct mshare_info, start, 0);
	CHECK_OFFSET(struct mshare_info, size, 8);

	CHECK_OFFSET(struct mshare_create, addr, 0);
	CHECK_OFFSET(struct mshare_create, size, 8);
	CHECK_OFFSET(struct mshare_create, offset, 16);
	CHECK_OFFSET(struct mshare_create, prot, 24);
	CHECK_OFFSET(struct mshare_create, flags, 28);
	CHECK_OFFSET(struct mshare_create, fd, 32);

	CHECK_OFFSET(struct mshare_unmap, addr, 0);
	CHECK_OFFSET(struct mshare_unmap, size, 8);

	CHECK_OFFSET(struct mshare_create_v3, region_offset, 0);
	CHECK_OFFSET(struct mshare_create_v3, size, 8);
	CHECK_OFFSET(struct mshare_create_v3, offset, 16);
	CHECK_OFFSET(struct mshare_create_v3, prot, 24);
	CHECK_OFFSET(struct mshare_create_v3, flags, 28);
	CHECK_OFFSET(struct mshare_create_v3, fd, 32);

	CHECK_OFFSET(struct mshare_unmap_v3, region_offset, 0);
	CHECK_OFFSET(struct mshare_unmap_v3, size, 8);

	CHECK_OFFSET(struct mshare_protect, addr, 0);
	CHECK_OFFSET(struct mshare_protect, size, 8);
	CHECK_OFFSET(struct mshare_protect, prot, 16);
	CHECK_OFFSET(struct mshare_protect, pad, 20);

	CHECK_OFFSET(struct mshare_owner, pidfd, 0);
	CHECK_OFFSET(struct mshare_owner, flags, 4);

	if (failures) {
		printf("%d mismatch(es)\n", failures);
		return 1;
	}
	printf("all values match\n");
	return 0;
}
