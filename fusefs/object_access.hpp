// What a mapped object allows: CREATE_MAPPING and PROTECT never grant more
// than mmap of the same descriptor would.
#pragma once

#include <cstdint>

namespace msharefs {

// The protections a MAP_SHARED mmap of fd could have: PROT_READ|PROT_EXEC
// if fd is readable, PROT_WRITE as well if it is open O_RDWR, not O_APPEND,
// not sealed against writing (F_SEAL_WRITE, F_SEAL_FUTURE_WRITE) and its
// file not append-only or immutable. 0 if fd cannot be mapped at all.
uint32_t object_max_prot(int fd);

} // namespace msharefs
