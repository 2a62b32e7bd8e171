// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libmshare: the mshare API as library calls.
 *
 * Everything here is built on the msharefs files and ioctls of
 * <linux/msharefs.h>: a region is a file under the msharefs mount, sized with
 * MSHAREFS_SET_SIZE, populated with MSHAREFS_CREATE_MAPPING and attached by
 * mmap() of the file.
 *
 * Nothing that can change under a remount is cached: the mount point is looked
 * up on every call and the alignment is read from mshare_info every time. The
 * only state kept is the set of mount point strings handed out by
 * mshare_mount_point(), so that the pointers it returns stay valid.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/msharefs.h>

#include "mshare.h"
#include "mshare_internal.h"
#include "mshare_runtime.h"

#define MSHARE_EXPORT __attribute__((visibility("default")))

#define PROC_MOUNTS		"/proc/self/mounts"
#define MOUNT_ENV		"MSHAREFS_MOUNT"

/* Times mshare() retries when a region appears or vanishes under it. */
#define MSHARE_OPEN_RETRIES	8

/*
 * Mount point strings returned by mshare_mount_point(). Each distinct path is
 * stored once and never freed, so a returned pointer stays valid for the life
 * of the process even if the mount moves; the list only grows by the number of
 * distinct mount points ever seen.
 */
struct mount_str {
	struct mount_str *next;
	char path[];
};

static struct mount_str *mount_strs;
static pthread_mutex_t mount_strs_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *intern_mount_point(const char *path)
{
	struct mount_str *m;
	size_t len = strlen(path);

	pthread_mutex_lock(&mount_strs_lock);
	for (m = mount_strs; m; m = m->next)
		if (!strcmp(m->path, path))
			goto out;

	m = malloc(sizeof(*m) + len + 1);
	if (m) {
		memcpy(m->path, path, len + 1);
		m->next = mount_strs;
		mount_strs = m;
	}
out:
	pthread_mutex_unlock(&mount_strs_lock);
	if (!m)
		errno = ENOMEM;
	return m ? m->path : NULL;
}

static bool is_msharefs_type(const char *type)
{
	return !strcmp(type, "fuse.msharefs") || !strcmp(type, "msharefs");
}

/* Decodes the octal escapes (\040, \011, \012, \134) of a mounts field. */
static void unescape_mount_field(char *s)
{
	char *out = s;

	while (*s) {
		if (s[0] == '\\' &&
		    s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*out++ = (char)(((s[1] - '0') << 6) |
					((s[2] - '0') << 3) |
					(s[3] - '0'));
			s += 4;
		} else {
			*out++ = *s++;
		}
	}
	*out = '\0';
}

/*
 * Splits one line of /proc/self/mounts ("source target type options 0 0")
 * and returns the decoded target and the type, or false if malformed.
 */
static bool parse_mount_line(char *line, char **target, char **type)
{
	char *save = NULL;

	if (!strtok_r(line, " \t\n", &save))
		return false;
	*target = strtok_r(NULL, " \t\n", &save);
	*type = strtok_r(NULL, " \t\n", &save);
	if (!*target || !*type)
		return false;
	unescape_mount_field(*target);
	return true;
}

/*
 * Scans /proc/self/mounts. Sets *default_ok if the topmost (last) mount on
 * MSHAREFS_MOUNT_POINT is an msharefs mount, and copies the first msharefs
 * mount point found into first (empty if none).
 */
static int scan_mounts(bool *default_ok, char *first, size_t first_size)
{
	char *line = NULL, *target, *type;
	size_t cap = 0;
	FILE *f;

	*default_ok = false;
	first[0] = '\0';

	f = fopen(PROC_MOUNTS, "re");
	if (!f)
		return -1;

	while (getline(&line, &cap, f) != -1) {
		if (!parse_mount_line(line, &target, &type))
			continue;
		if (!strcmp(target, MSHAREFS_MOUNT_POINT))
			*default_ok = is_msharefs_type(type);
		if (!first[0] && is_msharefs_type(type) &&
		    strlen(target) < first_size)
			strcpy(first, target);
	}

	free(line);
	fclose(f);
	return 0;
}

/* True if DIR/mshare_info exists and is a regular file. */
static bool has_mshare_info(const char *dir)
{
	char path[PATH_MAX];
	struct stat st;
	int n;

	n = snprintf(path, sizeof(path), "%s/%s", dir, MSHAREFS_INFO_NAME);
	if (n < 0 || (size_t)n >= sizeof(path))
		return false;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

MSHARE_EXPORT const char *mshare_mount_point(void)
{
	char first[PATH_MAX];
	char resolved[PATH_MAX];
	const char *env;
	bool default_ok;
	int saved = errno;

	if (scan_mounts(&default_ok, first, sizeof(first)) < 0) {
		default_ok = false;
		first[0] = '\0';
	}

	if (default_ok) {
		errno = saved;
		return MSHAREFS_MOUNT_POINT;
	}

	/*
	 * secure_getenv(): a set-user-ID program must not be pointed at
	 * another directory by its caller.
	 */
	env = secure_getenv(MOUNT_ENV);
	if (env && env[0] && realpath(env, resolved) &&
	    has_mshare_info(resolved)) {
		const char *p = intern_mount_point(resolved);

		if (p)
			errno = saved;
		return p;
	}

	if (first[0]) {
		const char *p = intern_mount_point(first);

		if (p)
			errno = saved;
		return p;
	}

	errno = ENOENT;
	return NULL;
}

/*
 * Builds the path of NAME under the mount into buf. NAME is relative to the
 * mount point; leading slashes are allowed. Empty names and names with a ".."
 * component are rejected with EINVAL.
 */
int mshare_region_path(const char *name, char *buf, size_t size)
{
	const char *mnt, *p;
	int n;

	if (!name) {
		errno = EINVAL;
		return -1;
	}
	while (*name == '/')
		name++;
	if (!*name) {
		errno = EINVAL;
		return -1;
	}
	for (p = name; *p; ) {
		size_t len = strcspn(p, "/");

		if (len == 2 && p[0] == '.' && p[1] == '.') {
			errno = EINVAL;
			return -1;
		}
		p += len;
		while (*p == '/')
			p++;
	}

	mnt = mshare_mount_point();
	if (!mnt)
		return -1;

	/* A mount on "/" must not produce "//name". */
	n = snprintf(buf, size, "%s/%s", strcmp(mnt, "/") ? mnt : "", name);
	if (n < 0 || (size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

MSHARE_EXPORT unsigned long long mshare_alignment(void)
{
	char path[PATH_MAX];
	char buf[64];
	unsigned long long align;
	const char *mnt;
	char *end;
	ssize_t n;
	int fd, saved = errno;

	mnt = mshare_mount_point();
	if (!mnt)
		return 0;
	n = snprintf(path, sizeof(path), "%s/%s", strcmp(mnt, "/") ? mnt : "",
		     MSHAREFS_INFO_NAME);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return 0;
	}

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	do {
		n = read(fd, buf, sizeof(buf) - 1);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		int err = errno;

		close(fd);
		errno = err;
		return 0;
	}
	close(fd);
	buf[n] = '\0';

	/* Decimal digits, optionally followed by one newline. */
	if (buf[0] < '0' || buf[0] > '9') {
		errno = EINVAL;
		return 0;
	}
	errno = 0;
	align = strtoull(buf, &end, 10);
	if (errno == ERANGE)
		return 0;
	if (*end == '\n')
		end++;
	if (*end || !align) {
		errno = EINVAL;
		return 0;
	}
	errno = saved;
	return align;
}

MSHARE_EXPORT int mcreate(const char *name, int flags, mode_t mode)
{
	char path[PATH_MAX];

	if (mshare_region_path(name, path, sizeof(path)) < 0)
		return -1;
	return open(path, flags | O_CREAT, mode);
}

MSHARE_EXPORT int mshare_unlink(const char *name)
{
	char path[PATH_MAX];

	if (mshare_region_path(name, path, sizeof(path)) < 0)
		return -1;
	return unlink(path);
}

/* close() that leaves errno alone, for error paths. */
static void close_keep_errno(int fd)
{
	int saved = errno;

	close(fd);
	errno = saved;
}

/*
 * Removes PATH if it still names the region open on fd, so that an error path
 * never removes a region someone else created under the same name meanwhile.
 * Leaves errno alone.
 */
static void unlink_created(const char *path, int fd)
{
	struct stat fst, pst;
	int saved = errno;

	if (fstat(fd, &fst) == 0 && stat(path, &pst) == 0 &&
	    fst.st_dev == pst.st_dev && fst.st_ino == pst.st_ino)
		unlink(path);
	errno = saved;
}

/* Maps the window of the region open on fd at addr, which must be exact. */
static int map_window(int fd, void *addr, size_t len, int prot)
{
	void *p;

	p = mshare_runtime_mmap(addr, len, prot, MAP_SHARED | MAP_FIXED, fd, 0);
	if (p == MAP_FAILED)
		return -1;
	if (p != addr) {
		mshare_runtime_munmap(p, len);
		errno = EINVAL;
		return -1;
	}
	return 0;
}

/*
 * Creates the region at path, sized to [addr, addr + len) and backed by one
 * shared anonymous mapping, and maps its window at addr. Returns the fd, or -1
 * with errno set; EEXIST means the name is taken and nothing was done.
 */
static int create_named_region(const char *path, void *addr, size_t len,
			 int open_flags, mode_t mode)
{
	struct mshare_info info = {
		.start = (uintptr_t)addr,
		.size = len,
	};
	struct mshare_create create = {
		.addr = (uintptr_t)addr,
		.size = len,
		.offset = 0,
		.prot = PROT_READ | PROT_WRITE,
		.flags = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED,
		.fd = (__u32)-1,
	};
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_EXCL | open_flags, mode);
	if (fd < 0)
		return -1;

	if (ioctl(fd, MSHAREFS_SET_SIZE, &info) < 0 ||
	    ioctl(fd, MSHAREFS_CREATE_MAPPING, &create) < 0 ||
	    map_window(fd, addr, len, PROT_READ | PROT_WRITE) < 0) {
		unlink_created(path, fd);
		close_keep_errno(fd);
		return -1;
	}
	return fd;
}

/*
 * Attaches the existing region at path, whose start and size must be addr and
 * len. Read-only for O_RDONLY, read-write otherwise.
 */
static int attach_named_region(const char *path, void *addr, size_t len,
			 int oflags, int open_flags)
{
	struct mshare_info info;
	bool rdonly = (oflags & O_ACCMODE) == O_RDONLY;
	int prot = PROT_READ | (rdonly ? 0 : PROT_WRITE);
	int fd;

	fd = open(path, (rdonly ? O_RDONLY : O_RDWR) | open_flags);
	if (fd < 0)
		return -1;

	if (ioctl(fd, MSHAREFS_GET_SIZE, &info) < 0)
		goto fail;
	if (info.start != (uintptr_t)addr || info.size != len) {
		errno = EINVAL;
		goto fail;
	}
	if (map_window(fd, addr, len, prot) < 0)
		goto fail;
	return fd;

fail:
	close_keep_errno(fd);
	return -1;
}

MSHARE_EXPORT int mshare(const char *name, void *addr, size_t len, int oflags,
			 mode_t mode)
{
	char path[PATH_MAX];
	unsigned long long align;
	uintptr_t start = (uintptr_t)addr;
	int open_flags = oflags & O_CLOEXEC;
	int fd, tries;

	if (mshare_region_path(name, path, sizeof(path)) < 0)
		return -1;

	align = mshare_alignment();
	if (!align)
		return -1;
	if (!addr || !len || start % align || len % align ||
	    start + len < start) {
		errno = EINVAL;
		return -1;
	}

	if (!(oflags & O_CREAT))
		return attach_named_region(path, addr, len, oflags, open_flags);

	/*
	 * Without O_EXCL an existing region is attached instead. The name may
	 * be removed between the failed create and the attach, or created
	 * between a failed attach and the next create: retry a few times.
	 */
	for (tries = 0; ; tries++) {
		fd = create_named_region(path, addr, len, open_flags, mode);
		if (fd >= 0 || errno != EEXIST || (oflags & O_EXCL))
			return fd;

		fd = attach_named_region(path, addr, len, oflags, open_flags);
		if (fd >= 0 || errno != ENOENT ||
		    tries + 1 >= MSHARE_OPEN_RETRIES)
			return fd;
	}
}
