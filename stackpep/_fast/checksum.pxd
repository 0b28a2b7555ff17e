# C-level internet checksum (RFC 1071) shared by every compiled module.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef uint64_t csum_add(const uint8_t* p, Py_ssize_t n, uint64_t acc) noexcept nogil
cdef uint16_t csum_fold(uint64_t acc) noexcept nogil
cdef uint64_t pseudo_v4(const uint8_t* src, const uint8_t* dst, uint8_t proto, uint32_t length) noexcept nogil
cdef uint64_t pseudo_v6(const uint8_t* src, const uint8_t* dst, uint8_t proto, uint32_t length) noexcept nogil
cdef uint16_t csum_update16(uint16_t old_csum, uint16_t old_val, uint16_t new_val) noexcept nogil
cdef uint16_t csum_update32(uint16_t old_csum, uint32_t old_val, uint32_t new_val) noexcept nogil
# Complete a CHECKSUM_PARTIAL frame: the field at csum_start+csum_offset holds the
# folded pseudo-header sum; sum buf[csum_start:n] and store the complement there.
cdef void csum_complete_partial(uint8_t* buf, Py_ssize_t n, Py_ssize_t csum_start, Py_ssize_t csum_offset) noexcept nogil
