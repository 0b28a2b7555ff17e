# SCPS-TP header compression (CCSDS 714.0-B-2, notes "TCP option kinds (IANA)", IP protocol 105), C level.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

# hc_expand() results below 0 (and hc_compress()'s refusals)
cdef enum:
    HC_DROP_MALFORMED = -1      # not a well-formed compressed packet (lengths, IP header)
    HC_DROP_CHECKSUM = -2       # the compressed header's checksum does not verify
    HC_DROP_NO_CONTEXT = -3     # no context for (addresses, connection id), or a field it lacks
    HC_DROP_NO_ROOM = -4        # the output buffer is too small (a caller bug)

ctypedef struct hc_ctx_t:
    uint8_t state               # 0 empty, 1 used, 2 deleted
    uint8_t v6
    uint8_t cid
    uint8_t have                # HAVE_* bits: fields learnt from packets of this direction
    uint8_t src[16]
    uint8_t dst[16]
    uint16_t sport
    uint16_t dport
    uint16_t win
    uint32_t seq
    uint32_t ack
    uint32_t tsval
    uint32_t tsecr

cdef Py_ssize_t hc_compress(const uint8_t* ip, Py_ssize_t n, uint8_t cid, uint8_t* out,
                            Py_ssize_t cap) noexcept nogil

cdef class HcTable:
    cdef hc_ctx_t* slots
    cdef Py_ssize_t nslots, used, deleted
    cdef public uint64_t expanded, drop_no_context, drop_checksum, drop_malformed
    # Expand one IP packet of protocol 105 into `out` (room: n + HC_GROWTH bytes):
    # the length of the IP/TCP packet written, or an HC_DROP_* code (counted).
    cdef Py_ssize_t expand_into(self, const uint8_t* ip, Py_ssize_t n, uint8_t* out,
                                Py_ssize_t cap) noexcept nogil
    cdef hc_ctx_t* _find(self, uint8_t v6, const uint8_t* src, const uint8_t* dst, uint8_t cid) noexcept nogil
    cdef _grow(self)
