/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libmshare's own helpers, shared between its files; not exported. */
#ifndef MSHARE_INTERNAL_H
#define MSHARE_INTERNAL_H

#include <stddef.h>

/*
 * The path of NAME under the mount into buf; -1 with errno (EINVAL for empty
 * names and ".." components, ENAMETOOLONG, ENOENT without a mount).
 */
int mshare_region_path(const char *name, char *buf, size_t size);

#endif /* MSHARE_INTERNAL_H */
