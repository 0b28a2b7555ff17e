# cython: language_level=3
"""AF_PACKET capture and emit for the splitter: TPACKET_V3 receive rings read in
batches, frames sent in batches with sendmmsg().

Receive (packet(7), Documentation/networking/packet_mmap.rst):
- one socket per interface, ETH_P_ALL, bound to the interface, with
  PACKET_IGNORE_OUTGOING (we never want our own or the kernel's transmissions)
  and a classic BPF filter that keeps only IPv4/IPv6 TCP and the ICMP errors
  path-MTU discovery needs (ICMPv4 type 3, ICMPv6 types 1-4), so UDP, echo,
  neighbour discovery and the rest never cross into user space;
- a TPACKET_V3 ring of variable-size frames packed into blocks; a block is
  handed to us when full or after `retire_ms`, so one wake-up serves a batch.

Default offloads stay on.  Veth and NICs hand AF_PACKET GRO/TSO super-frames (an
IP packet up to 64 KiB whose total length covers every merged segment, with one
valid TCP header) and frames whose TCP checksum is not yet computed
(CHECKSUM_PARTIAL: TP_STATUS_CSUMNOTREADY, the field holds only the
pseudo-header sum).  A super-frame is a legal TCP segment larger than the MSS,
which a receiver accepts (RFC 9293 §3.7.1 limits what a sender sends); a
checksum-not-ready frame gets its checksum completed here (RFC 1071), in place
in the ring, so every packet that leaves this module carries a correct checksum.

Emit: with `gso=True` a second, send-only socket with PACKET_VNET_HDR sends
every frame behind a virtio_net_hdr, and a run of back-to-back segments of one
connection (what a TSO sender cuts from one buffer) goes out as one super-frame
marked for segmentation and checksum offload; the device, or the kernel's
software GSO, cuts it back into exactly those segments.  That saves most of the
per-packet cost of the send path.  Without it, frames go out one by one
(sendmmsg() in batches either way).

Per packet nothing but C runs until the final bytes objects are made: the flow
key (client address, client port, server address, server port) and the IP
packet itself.  With a FastFlows table (read_batch's `fast`), a segment of a
flow whose receiving leg is opened there is not made into objects at all: it
goes from the ring to that leg's engine (TcpConnection.receive_ptr), and only
the flow key is made, once per run of the flow's segments.

ICMP errors (RFC 792, RFC 4443) come out of read_batch() as
(key, ip_packet, ICMP_ERROR): the key is the flow of the TCP packet the error
quotes, a packet this box sent (see _icmp_error_key), and the ICMP checksum was
verified here.  stackpep.pep.icmp reads the rest.

SCPS-TP compressed headers (IP protocol 105, CCSDS 714.0-B-2, notes "TCP option kinds (IANA)"): a ring made
with `hc_table` (a stackpep._fast.scpshc.HcTable) also takes IPv4 protocol 105
and IPv6 next header 105 (an 8-instruction BPF prefix), expands each such packet
in C through the table's contexts, and hands on the expanded IP/TCP packet as
(key, ip_packet, tcp_flags | HC_EXPANDED), checked like any captured segment.
A packet the table cannot expand is dropped and counted there
(hc_drop_no_context / hc_drop_checksum / hc_drop_malformed) and here
(rx_hc_dropped); IPv4 fragments of protocol 105 are left to the kernel.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport errno, EAGAIN, ENOBUFS, EINTR
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset, strlen, strncpy
from cpython.mem cimport PyMem_Malloc, PyMem_Free

from stackpep._fast.checksum cimport csum_add, csum_fold, pseudo_v4, pseudo_v6
from stackpep._fast.wire cimport (tcp_seg_t, parse_ip_tcp, wire_count, seg_final_dst, WIRE_OK, WIRE_IP_VERSION_MISMATCH,
                                  WIRE_NOT_TCP, WIRE_FRAGMENT, WIRE_ERR_MIN)
from stackpep._fast.wire import ERRORS as _WIRE_ERRORS
from stackpep._fast.scpshc cimport HcTable
from stackpep._fast.tcp cimport TcpConnection
from stackpep._fast.wire cimport TH_SYN, TH_ACK

# counter name of each rejection reason (the wire layer's names, e.g. tcp_checksum)
_REASONS = tuple((-code, name) for code, (name, _) in sorted(_WIRE_ERRORS.items(), reverse=True)
                 if code not in (WIRE_NOT_TCP, WIRE_FRAGMENT))

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct iovec:
        void* iov_base
        size_t iov_len
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int socket(int domain, int type, int protocol)
    int setsockopt(int fd, int level, int optname, const void* optval, socklen_t optlen)
    int getsockopt(int fd, int level, int optname, void* optval, socklen_t* optlen)
    int bind(int fd, const sockaddr* addr, socklen_t len)
    int sendmmsg(int fd, mmsghdr* msgvec, unsigned int vlen, int flags)
    int AF_PACKET
    int SOCK_RAW
    int SOCK_NONBLOCK
    int SOCK_CLOEXEC
    int SOL_SOCKET
    int SO_ATTACH_FILTER
    int SO_MARK
    int SO_RCVBUF
    int SO_SNDBUF
    int MSG_DONTWAIT

cdef extern from "<unistd.h>" nogil:
    int close(int fd)

cdef extern from "<sys/mman.h>" nogil:
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void* addr, size_t length)
    void* MAP_FAILED
    int PROT_READ
    int PROT_WRITE
    int MAP_SHARED
    int MAP_LOCKED

cdef extern from "<net/if.h>" nogil:
    unsigned int if_nametoindex(const char* ifname)

cdef extern from "<arpa/inet.h>" nogil:
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)

cdef extern from "<linux/filter.h>" nogil:
    struct sock_filter:
        uint16_t code
        uint8_t jt
        uint8_t jf
        uint32_t k
    struct sock_fprog:
        unsigned short len
        sock_filter* filter

cdef extern from "<linux/if_packet.h>" nogil:
    struct sockaddr_ll:
        unsigned short sll_family
        unsigned short sll_protocol
        int sll_ifindex
        unsigned short sll_hatype
        unsigned char sll_pkttype
        unsigned char sll_halen
        unsigned char sll_addr[8]
    struct tpacket_req3:
        unsigned int tp_block_size
        unsigned int tp_block_nr
        unsigned int tp_frame_size
        unsigned int tp_frame_nr
        unsigned int tp_retire_blk_tov
        unsigned int tp_sizeof_priv
        unsigned int tp_feature_req_word
    struct tpacket_hdr_v1:
        uint32_t block_status
        uint32_t num_pkts
        uint32_t offset_to_first_pkt
        uint32_t blk_len
        uint64_t seq_num
    union tpacket_bd_header_u:
        tpacket_hdr_v1 bh1
    struct tpacket_block_desc:
        uint32_t version
        uint32_t offset_to_priv
        tpacket_bd_header_u hdr
    struct tpacket3_hdr:
        uint32_t tp_next_offset
        uint32_t tp_sec
        uint32_t tp_nsec
        uint32_t tp_snaplen
        uint32_t tp_len
        uint32_t tp_status
        uint16_t tp_mac
        uint16_t tp_net
    struct tpacket_stats_v3:
        unsigned int tp_packets
        unsigned int tp_drops
        unsigned int tp_freeze_q_cnt
    int SOL_PACKET
    int PACKET_RX_RING
    int PACKET_VERSION
    int PACKET_STATISTICS
    int PACKET_IGNORE_OUTGOING
    int PACKET_VNET_HDR
    int TPACKET_V3
    int PACKET_FANOUT
    int PACKET_FANOUT_DATA
    int PACKET_FANOUT_CBPF
    int PACKET_FANOUT_FLAG_UNIQUEID
    int TP_STATUS_KERNEL
    int TP_STATUS_USER
    int TP_STATUS_CSUMNOTREADY
    int TP_STATUS_CSUM_VALID

DEF ETH_HLEN = 14
DEF ETH_P_ALL = 0x0003
DEF ETH_P_IP = 0x0800
DEF ETH_P_IPV6 = 0x86DD
DEF IPPROTO_TCP = 6
DEF MAX_BATCH = 512
DEF MAX_GSO_SEGS = 64          # segments merged into one super-frame (<= 64 KiB anyway)
DEF PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000   # linux/if_packet.h (recent; older headers lack it)
DEF VNET_HLEN = 10             # struct virtio_net_hdr
DEF HDR_SCRATCH = 160          # vnet + Ethernet + IP (<= 60) + TCP (<= 60) header copy
DEF VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
DEF VIRTIO_NET_HDR_GSO_TCPV4 = 1
DEF VIRTIO_NET_HDR_GSO_TCPV6 = 4

# Classic BPF (Documentation/networking/filter.rst): accept IPv4 with protocol TCP
# and IPv6 whose next header is TCP, directly or behind one or two extension
# headers (Hop-by-Hop 0, Routing 43, Destination Options 60, AH 51: RFC 8200 §4);
# read_batch() walks the whole chain (the wire layer's parse_ip_tcp) and keeps
# TCP.  MLD and other ICMPv6 behind a Hop-by-Hop header stay out.  IPv6
# fragments (44) are left to the kernel, as IPv4 fragments are.
DEF TCP_FILTER_LEN = 18
cdef sock_filter _TCP_ONLY[TCP_FILTER_LEN]
_TCP_ONLY[0] = sock_filter(0x28, 0, 0, 12)        # ldh [12]          ethertype
_TCP_ONLY[1] = sock_filter(0x15, 0, 2, 0x0800)    # jeq #IPv4 ? next : v6
_TCP_ONLY[2] = sock_filter(0x30, 0, 0, 23)        # ldb [23]          IPv4 protocol
_TCP_ONLY[3] = sock_filter(0x15, 12, 13, 6)       # jeq #TCP ? accept : drop
_TCP_ONLY[4] = sock_filter(0x15, 0, 12, 0x86DD)   # v6: jeq #IPv6 ? next : drop
_TCP_ONLY[5] = sock_filter(0x30, 0, 0, 20)        # ldb [20]          IPv6 next header
_TCP_ONLY[6] = sock_filter(0x15, 9, 0, 6)         # jeq #TCP ? accept
_TCP_ONLY[7] = sock_filter(0x15, 3, 0, 0)         # jeq #Hop-by-Hop ? ext
_TCP_ONLY[8] = sock_filter(0x15, 2, 0, 60)        # jeq #Destination Options ? ext
_TCP_ONLY[9] = sock_filter(0x15, 1, 0, 43)        # jeq #Routing ? ext
_TCP_ONLY[10] = sock_filter(0x15, 0, 6, 51)       # jeq #AH ? ext : drop
_TCP_ONLY[11] = sock_filter(0x30, 0, 0, 54)       # ext: ldb [54]     next header of the first one
_TCP_ONLY[12] = sock_filter(0x15, 3, 0, 6)        # jeq #TCP ? accept
_TCP_ONLY[13] = sock_filter(0x15, 2, 0, 60)       # jeq #Destination Options ? accept
_TCP_ONLY[14] = sock_filter(0x15, 1, 0, 43)       # jeq #Routing ? accept
_TCP_ONLY[15] = sock_filter(0x15, 0, 1, 51)       # jeq #AH ? accept : drop
_TCP_ONLY[16] = sock_filter(0x06, 0, 0, 0x40000)  # accept: ret #262144
_TCP_ONLY[17] = sock_filter(0x06, 0, 0, 0)        # drop: ret #0

# The same plus the ICMP errors that quote TCP this box sent (path MTU, RFC 1191 /
# RFC 8201; soft errors, RFC 1122 §4.2.3.9): ICMPv4 type 3 (destination
# unreachable, frag-needed included) and ICMPv6 types 1-4 (RFC 4443 §3).  A
# 13-instruction prefix accepts those and falls through to _TCP_ONLY for the rest.
DEF ICMP_PREFIX_LEN = 13
DEF ICMP_FILTER_LEN = ICMP_PREFIX_LEN + TCP_FILTER_LEN
DEF _ACCEPT = ICMP_PREFIX_LEN + TCP_FILTER_LEN - 2     # _TCP_ONLY's accept
cdef sock_filter _ICMP_PREFIX[ICMP_PREFIX_LEN]
_ICMP_PREFIX[0] = sock_filter(0x28, 0, 0, 12)        # ldh [12]            ethertype
_ICMP_PREFIX[1] = sock_filter(0x15, 0, 5, 0x0800)    # jeq #IPv4 ? next : V6
_ICMP_PREFIX[2] = sock_filter(0x30, 0, 0, 23)        # ldb [23]            IPv4 protocol
_ICMP_PREFIX[3] = sock_filter(0x15, 0, 9, 1)         # jeq #ICMP ? next : TCP
_ICMP_PREFIX[4] = sock_filter(0xb1, 0, 0, 14)        # ldxb 4*([14]&0xf)   IPv4 header length
_ICMP_PREFIX[5] = sock_filter(0x50, 0, 0, 14)        # ldb [x+14]          ICMP type
_ICMP_PREFIX[6] = sock_filter(0x15, _ACCEPT - 7, 6, 3)   # jeq #3 ? accept : TCP
_ICMP_PREFIX[7] = sock_filter(0x15, 0, 5, 0x86DD)    # V6: jeq #IPv6 ? next : TCP
_ICMP_PREFIX[8] = sock_filter(0x30, 0, 0, 20)        # ldb [20]            IPv6 next header
_ICMP_PREFIX[9] = sock_filter(0x15, 0, 3, 58)        # jeq #ICMPv6 ? next : TCP
_ICMP_PREFIX[10] = sock_filter(0x30, 0, 0, 54)       # ldb [54]            ICMPv6 type
_ICMP_PREFIX[11] = sock_filter(0x35, 0, 1, 1)        # jge #1 ? next : TCP
_ICMP_PREFIX[12] = sock_filter(0x25, 0, _ACCEPT - 13, 4)  # jgt #4 ? TCP : accept
# TCP: _TCP_ONLY follows the prefix (PacketRing.__init__ copies both)

# SCPS-TP compressed headers (CCSDS 714.0-B-2, notes "TCP option kinds (IANA)"): IPv4 protocol 105 or IPv6 next
# header 105 is accepted; anything else falls through to the filter that follows
# (the ICMP prefix, or _TCP_ONLY).  Jumps are relative, so prefixes stack.
DEF HC_PREFIX_LEN = 8
cdef sock_filter _HC_PREFIX[HC_PREFIX_LEN]
_HC_PREFIX[0] = sock_filter(0x28, 0, 0, 12)        # ldh [12]            ethertype
_HC_PREFIX[1] = sock_filter(0x15, 0, 2, 0x0800)    # jeq #IPv4 ? next : V6
_HC_PREFIX[2] = sock_filter(0x30, 0, 0, 23)        # ldb [23]            IPv4 protocol
_HC_PREFIX[3] = sock_filter(0x15, 3, 4, 105)       # jeq #105 ? accept : rest
_HC_PREFIX[4] = sock_filter(0x15, 0, 3, 0x86DD)    # V6: jeq #IPv6 ? next : rest
_HC_PREFIX[5] = sock_filter(0x30, 0, 0, 20)        # ldb [20]            IPv6 next header
_HC_PREFIX[6] = sock_filter(0x15, 0, 1, 105)       # jeq #105 ? accept : rest
_HC_PREFIX[7] = sock_filter(0x06, 0, 0, 0x40000)   # accept: ret #262144
# rest: the next filter


# PACKET_FANOUT_CBPF program (PacketRing._join_fanout): a flow hash symmetric in
# both directions -- xor of the two addresses' low 32-bit words and of the two
# ports, times 2^32/phi, high 16 bits (Knuth's multiplicative hashing), so
# `hash % members` depends on every bit: Linux picks connect() ports of one
# parity (__inet_hash_connect steps by 2), so the ports' low bit alone would
# send every connection of a host to one worker.
# Loads are relative to the network header (SKF_NET_OFF, linux/filter.h), so
# it does not matter where skb->data points when the fanout runs.
# - IPv4/IPv6 TCP: the packet's own addresses and ports (IPv6: TCP directly
#   after the fixed header; behind extension headers only the addresses count,
#   see docs/deployment.md "Workers");
# - ICMP errors (ICMPv4 type 3, ICMPv6 1-4, what the capture takes): the
#   quoted packet's addresses and ports -- a packet this box sent, so its IPv4
#   header has no options and its IPv6 header no extension headers: the quoted
#   flow's worker gets the error;
# - anything else IP: the addresses (SCPS compressed headers, protocol 105,
#   have no ports here: with workers > 1 they may reach another worker than
#   their flow's TCP packets); not IP: member 0.
# A load beyond the packet ends the program with 0 (member 0).
_NET = -0x100000      # SKF_NET_OFF
_AD_PROTOCOL = -0x1000  # SKF_AD_OFF + SKF_AD_PROTOCOL: the ethertype


def _assemble(prog):
    """(code, k, jt, jf) with labels (str) for jump targets -> (code, jt, jf, k)."""
    at, pc = {}, 0
    for item in prog:
        if isinstance(item, str):
            at[item] = pc
        else:
            pc += 1
    out, pc = [], 0
    for item in prog:
        if isinstance(item, str):
            continue
        code, k, jt, jf = item
        if code == 0x05:                      # ja: the offset is k
            k = at[k] - pc - 1
        jt = at[jt] - pc - 1 if isinstance(jt, str) else jt
        jf = at[jf] - pc - 1 if isinstance(jf, str) else jf
        out.append((code, jt, jf, k & 0xffffffff))
        pc += 1
    return tuple(out)


_LDW, _LDH, _LDB = 0x20, 0x28, 0x30            # ld{,h,b} [k]
_LDWI, _LDHI = 0x40, 0x48                      # ld{,h} [x + k]
_LDM, _LDXM, _ST, _LDK = 0x60, 0x61, 0x02, 0x00  # ld M[k], ldx M[k], st M[k], ld #k
_AND, _LSH, _RSH, _XORX, _MUL = 0x54, 0x64, 0x74, 0xac, 0x24
_TAX, _JA, _JEQ, _RETA, _RETK = 0x07, 0x05, 0x15, 0x16, 0x06

FANOUT_PROGRAM = _assemble((
    (_LDH, _AD_PROTOCOL, 0, 0),
    (_JEQ, 0x0800, "v4", 0),
    (_JEQ, 0x86DD, "v6", 0),
    (_RETK, 0, 0, 0),
    "v4",
    (_LDW, _NET + 12, 0, 0), (_ST, 0, 0, 0),        # M0 = source address
    (_LDW, _NET + 16, 0, 0), (_ST, 1, 0, 0),        # M1 = destination address
    (_LDB, _NET + 0, 0, 0), (_AND, 0x0f, 0, 0), (_LSH, 2, 0, 0), (_TAX, 0, 0, 0),  # X = IHL
    (_LDB, _NET + 9, 0, 0),
    (_JEQ, 6, 0, "v4_not_tcp"),
    (_LDHI, _NET + 0, 0, 0), (_ST, 2, 0, 0),        # M2 = source port
    (_LDHI, _NET + 2, 0, 0), (_ST, 3, 0, 0),        # M3 = destination port
    (_JA, "hash", 0, 0),
    "v4_not_tcp",
    (_JEQ, 1, 0, "no_ports"),
    # ICMP at X, the quoted IPv4 header (20 bytes) at X + 8, its TCP at X + 28
    (_LDWI, _NET + 20, 0, 0), (_ST, 0, 0, 0),
    (_LDWI, _NET + 24, 0, 0), (_ST, 1, 0, 0),
    (_LDHI, _NET + 28, 0, 0), (_ST, 2, 0, 0),
    (_LDHI, _NET + 30, 0, 0), (_ST, 3, 0, 0),
    (_JA, "hash", 0, 0),
    "v6",
    (_LDW, _NET + 20, 0, 0), (_ST, 0, 0, 0),        # low word of the source address
    (_LDW, _NET + 36, 0, 0), (_ST, 1, 0, 0),        # ... of the destination address
    (_LDB, _NET + 6, 0, 0),
    (_JEQ, 6, 0, "v6_not_tcp"),
    (_LDH, _NET + 40, 0, 0), (_ST, 2, 0, 0),
    (_LDH, _NET + 42, 0, 0), (_ST, 3, 0, 0),
    (_JA, "hash", 0, 0),
    "v6_not_tcp",
    (_JEQ, 58, 0, "no_ports"),
    # ICMPv6 at 40, the quoted IPv6 header at 48 (addresses' low words at 68, 84), TCP at 88
    (_LDW, _NET + 68, 0, 0), (_ST, 0, 0, 0),
    (_LDW, _NET + 84, 0, 0), (_ST, 1, 0, 0),
    (_LDH, _NET + 88, 0, 0), (_ST, 2, 0, 0),
    (_LDH, _NET + 90, 0, 0), (_ST, 3, 0, 0),
    (_JA, "hash", 0, 0),
    "no_ports",
    (_LDK, 0, 0, 0), (_ST, 2, 0, 0), (_ST, 3, 0, 0),
    "hash",
    (_LDM, 0, 0, 0), (_LDXM, 1, 0, 0), (_XORX, 0, 0, 0),
    (_LDXM, 2, 0, 0), (_XORX, 0, 0, 0), (_LDXM, 3, 0, 0), (_XORX, 0, 0, 0),
    (_MUL, 0x9E3779B1, 0, 0), (_RSH, 16, 0, 0),     # Fibonacci hashing: the high half mixes every bit
    (_RETA, 0, 0, 0),
))

#: flags value read_batch() gives an ICMP error (TCP flags fit in 8 bits)
ICMP_ERROR = 0x100
DEF ICMP_ERROR_FLAG = 0x100
#: flag read_batch() adds to a segment that arrived with a compressed header (expanded here)
HC_EXPANDED = 0x200
DEF HC_EXPANDED_FLAG = 0x200
DEF PROTO_SCPS_HC = 105
DEF HC_HEADROOM = 16        # room before the expanded packet for the ethertype _take_tcp-style checks read
DEF HC_BUF = 65535 + 64 + HC_HEADROOM
DEF IPPROTO_ICMP = 1
DEF IPPROTO_ICMPV6 = 58


class CaptureError(OSError):
    """Setting up an AF_PACKET socket or ring failed (errno and step in the message)."""


cdef inline uint16_t _be16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef bint _v6_has_fragment_header(const uint8_t* ip, Py_ssize_t upper_off) noexcept nogil:
    """Does the (already validated) IPv6 extension-header chain before
    upper_off hold a Fragment header (RFC 8200 §4.5)?  Lengths as RFC 8200
    §4.3-4.6 and RFC 4302 §2.2 (AH)."""
    cdef uint8_t nh = ip[6]
    cdef Py_ssize_t off = 40
    while off < upper_off:
        if nh == 44:
            return True
        if nh == 51:
            nh, off = ip[off], off + (<Py_ssize_t>ip[off + 1] + 2) * 4
        else:
            nh, off = ip[off], off + (<Py_ssize_t>ip[off + 1] + 1) * 8
    return False


cdef int _complete_tcp_checksum(uint8_t* ip, Py_ssize_t n, int v6, Py_ssize_t l4off,
                                const uint8_t* dst6=NULL) noexcept nogil:
    """Compute the TCP checksum of a CHECKSUM_PARTIAL packet in place (RFC 1071,
    pseudo-header RFC 9293 §3.1 / RFC 8200 §8.1: `dst6`, when given, is the
    final destination of an IPv6 routing header).  Returns 0, or -1 if too short."""
    cdef Py_ssize_t seglen = n - l4off
    cdef uint64_t acc
    cdef uint16_t c
    if seglen < 20:
        return -1
    ip[l4off + 16] = 0
    ip[l4off + 17] = 0
    if v6:
        acc = pseudo_v6(ip + 8, dst6 if dst6 != NULL else ip + 24, IPPROTO_TCP, <uint32_t>seglen)
    else:
        acc = pseudo_v4(ip + 12, ip + 16, IPPROTO_TCP, <uint32_t>seglen)
    acc = csum_add(ip + l4off, seglen, acc)
    c = csum_fold(acc)
    ip[l4off + 16] = c >> 8
    ip[l4off + 17] = c & 0xff
    return 0


cdef inline bint _is_scps_hc(const uint8_t* ip) noexcept nogil:
    # (n >= 20 was checked; the IPv6 next-header byte is at 6)
    if (ip[0] >> 4) == 4:
        return ip[9] == PROTO_SCPS_HC
    return (ip[0] >> 4) == 6 and ip[6] == PROTO_SCPS_HC


cdef inline int _flow_key(const tcp_seg_t* seg, bint client_side, uint8_t* key) noexcept nogil:
    # client address + client port + server address + server port (big-endian ports)
    cdef int alen = 16 if seg.ip_version == 6 else 4
    cdef const uint8_t* ca
    cdef const uint8_t* sa
    cdef uint16_t cport, sport
    if client_side:
        ca = seg.src; cport = seg.sport
        sa = seg.dst; sport = seg.dport
    else:
        sa = seg.src; sport = seg.sport
        ca = seg.dst; cport = seg.dport
    memcpy(key, ca, alen)
    key[alen] = cport >> 8; key[alen + 1] = cport & 0xff
    memcpy(key + alen + 2, sa, alen)
    key[2 * alen + 2] = sport >> 8; key[2 * alen + 3] = sport & 0xff
    return 2 * alen + 4


cdef inline bint _is_icmp(const uint8_t* ip) noexcept nogil:
    # (n >= 20 was checked; the IPv6 next-header byte is at 6)
    if (ip[0] >> 4) == 4:
        return ip[9] == IPPROTO_ICMP
    return (ip[0] >> 4) == 6 and ip[6] == IPPROTO_ICMPV6


cdef int _icmp_error_key(const uint8_t* ip, Py_ssize_t n, bint client_side, uint8_t* key,
                         Py_ssize_t* iplen_out) noexcept nogil:
    """The flow key of the TCP packet an ICMP error quotes, or -1 (malformed,
    not an error type we take, no IP header + 8 bytes of TCP quoted), -2 (bad
    ICMP checksum, RFC 792 / RFC 4443 §2.3), -3 (the quote is not TCP).

    The quoted packet is one this box sent (nothing else of an intercepted flow
    passes it): on a client-facing interface a client-leg packet, source = the
    server, destination = the client; on a server-facing one a server-leg
    packet, source = the client.  So the key is read the other way round from a
    received TCP segment's."""
    cdef Py_ssize_t ihl, iplen, ilen, qlen, qihl
    cdef const uint8_t* icmp
    cdef const uint8_t* q
    cdef const uint8_t* qs
    cdef const uint8_t* qd
    cdef const uint8_t* th
    cdef uint64_t acc
    cdef int v6 = (ip[0] >> 4) == 6, alen
    if v6:
        if n < 40:
            return -1
        ihl = 40
        iplen = 40 + <Py_ssize_t>_be16(ip + 4)
        alen = 16
    else:
        ihl = (ip[0] & 0x0f) * 4
        iplen = _be16(ip + 2)
        alen = 4
        if ihl < 20 or (_be16(ip + 6) & 0x3fff) != 0:   # a fragment: not ours to reassemble
            return -1
    if iplen > n or iplen < ihl + 8:
        return -1
    icmp = ip + ihl
    ilen = iplen - ihl
    if v6:
        if icmp[0] < 1 or icmp[0] > 4:
            return -1
        acc = pseudo_v6(ip + 8, ip + 24, IPPROTO_ICMPV6, <uint32_t>ilen)
    else:
        if icmp[0] != 3:
            return -1
        acc = 0
    if csum_fold(csum_add(icmp, ilen, acc)) != 0:
        return -2
    q = icmp + 8
    qlen = ilen - 8
    if qlen < 20 or (q[0] >> 4) != (6 if v6 else 4):
        return -1
    if v6:
        # what the engines send carries no extension headers
        if qlen < 48:
            return -1
        if q[6] != IPPROTO_TCP:
            return -3
        qihl = 40
        qs = q + 8
        qd = q + 24
    else:
        qihl = (q[0] & 0x0f) * 4
        if qihl < 20 or qlen < qihl + 8:
            return -1
        if q[9] != IPPROTO_TCP or (_be16(q + 6) & 0x1fff) != 0:
            return -3
        qs = q + 12
        qd = q + 16
    th = q + qihl
    if client_side:   # quote: server -> client
        memcpy(key, qd, alen); memcpy(key + alen, th + 2, 2)
        memcpy(key + alen + 2, qs, alen); memcpy(key + 2 * alen + 2, th, 2)
    else:             # quote: client -> server
        memcpy(key, qs, alen); memcpy(key + alen, th, 2)
        memcpy(key + alen + 2, qd, alen); memcpy(key + 2 * alen + 2, th + 2, 2)
    iplen_out[0] = iplen
    return 2 * alen + 4


def icmp_error_key(bytes packet, bint client_side):
    """The key read_batch() gives an ICMP error IP packet (None if it would be
    dropped): for tests and the in-memory port."""
    cdef uint8_t key[36]
    cdef Py_ssize_t iplen
    cdef int k
    if len(packet) < 20 or not _is_icmp(<const uint8_t*>PyBytes_AS_STRING(packet)):
        return None
    k = _icmp_error_key(<const uint8_t*>PyBytes_AS_STRING(packet), len(packet), client_side, key, &iplen)
    if k < 0:
        return None
    return PyBytes_FromStringAndSize(<char*>key, k)



# -- Opened legs' segments straight to their engines -----------------------------------
cdef class _FastFlow:
    # one flow of FastFlows: the engine of each side whose leg is opened (None: not yet)
    cdef TcpConnection client, server
    cdef object conn            # the SplitConnection (what the dispatcher turns)
    cdef uint64_t slow_read     # the read in which one of its packets went the Python way
    cdef uint64_t touched_take  # the take() period in which it was last put on `touched`


cdef class FastFlows:
    """Flow key -> the engines of a split connection's opened legs, so that a
    ring read (PacketRing.read_batch with `fast`) hands an established flow's
    segments to the engine from ring memory (TcpConnection.receive_ptr): no
    bytes object, tuple or Python call per packet.  The dispatcher fills it
    when a leg opens and empties it when the connection's outcome is decided or
    it leaves the table; everything else -- unknown flows, SYNs (a SYN may
    supersede an old connection), ICMP errors, a leg not yet opened -- comes
    out of the read as before, for the dispatcher's Python path.

    Order within a flow is the ring's: once one of a flow's packets went the
    Python way in a read, the rest of that flow in the same read goes too (the
    Python path runs after the read, so a later packet handed over in C would
    overtake it).  `take()` reports once per read what was handed over."""
    cdef dict flows
    cdef list touched           # connections that took packets here since take(), each once
    cdef list failed            # (connection, exception): its engine raised (the dispatcher fails it)
    cdef uint64_t read_seq, take_seq
    cdef uint64_t taken         # packets handed to engines since take()
    cdef public uint64_t fast_packets   # all packets handed to engines here (statistics)

    def __cinit__(self):
        self.flows = {}
        self.touched = []
        self.failed = []
        self.read_seq = 1
        self.take_seq = 1

    def set_leg(self, bytes key, object conn, bint client_side, TcpConnection engine):
        """The leg of `conn` facing the client side (client_side) or the server side
        is opened: its segments may go to `engine` from now on."""
        cdef _FastFlow f = self.flows.get(key)
        if f is None or f.conn is not conn:
            f = _FastFlow()
            f.conn = conn
            self.flows[key] = f
        if client_side:
            f.client = engine
        else:
            f.server = engine

    def discard(self, bytes key, object conn=None):
        """No more fast delivery for `key` (only if it is `conn`'s, when given)."""
        cdef _FastFlow f = self.flows.get(key)
        if f is not None and (conn is None or f.conn is conn):
            del self.flows[key]

    def __len__(self):
        return len(self.flows)

    def __contains__(self, key):
        return key in self.flows

    def take(self):
        """(packets handed to engines, [connections that took them, each once],
        [(connection, exception) whose engine raised]) since the last take()."""
        cdef tuple r = (self.taken, self.touched, self.failed)
        self.taken = 0
        self.touched = []
        self.failed = []
        self.take_seq += 1
        return r

    cdef inline _FastFlow lookup(self, object key):
        return <_FastFlow>self.flows.get(key)

    cdef inline void mark_slow(self, object key):
        cdef _FastFlow f = self.flows.get(key)
        if f is not None:
            f.slow_read = self.read_seq

    cdef int deliver(self, _FastFlow f, bint client_side, const uint8_t* ip, Py_ssize_t n, int flags,
                     uint64_t now) except -1:
        """1 if the packet went to its engine here, 0 if it goes the Python way."""
        cdef TcpConnection engine
        if f.slow_read == self.read_seq:
            return 0
        engine = f.client if client_side else f.server
        if engine is None or (flags & TH_SYN and not flags & TH_ACK):
            f.slow_read = self.read_seq
            return 0
        self.taken += 1
        try:
            engine.receive_ptr(ip, n, now)
        except Exception as exc:
            # as the Python path: the connection is failed (by the dispatcher); its
            # later packets go the Python way
            self.failed.append((f.conn, exc))
            f.slow_read = self.read_seq
            return 1
        self.fast_packets += 1
        if f.touched_take != self.take_seq:
            f.touched_take = self.take_seq
            self.touched.append(f.conn)
        return 1

    def filter(self, list batch, bint client_side, uint64_t now):
        """The same choice for a batch already made of (key, ip_packet, flags)
        (an in-memory port): what goes to an engine here is taken out, the rest
        returned in order."""
        cdef list out = []
        cdef object key, pkt
        cdef int flags
        cdef _FastFlow f
        self.read_seq += 1
        for key, pkt, flags in batch:
            if flags & ICMP_ERROR_FLAG or type(pkt) is not bytes:
                self.mark_slow(key)
            else:
                f = self.lookup(key)
                if f is not None and self.deliver(f, client_side, <const uint8_t*>PyBytes_AS_STRING(pkt),
                                                  PyBytes_GET_SIZE(pkt), flags, now):
                    continue
            out.append((key, pkt, flags))
        return out


cdef class PacketRing:
    """An AF_PACKET socket on one interface with a TPACKET_V3 receive ring.

    read_batch() returns the TCP packets that arrived, each as
    (flow_key, ip_packet, tcp_flags); send_batch() emits IP packets with one
    Ethernet header.  `client_side` says which end of a flow is the client:
    on a client-facing interface the source of a received packet is the client,
    on a server-facing one the destination is.
    """
    cdef int fd
    cdef uint8_t* ring
    cdef size_t ring_len
    cdef unsigned int block_size, block_nr, cur_block
    cdef readonly int ifindex
    cdef readonly str ifname
    cdef readonly bint client_side
    # counters (named drop reasons, RFC-free plumbing)
    cdef public uint64_t rx_packets, rx_bytes, rx_blocks, rx_csum_completed, rx_csum_valid
    cdef public uint64_t rx_truncated, rx_not_ip_tcp, rx_malformed, rx_gro_frames
    cdef public uint64_t tx_packets, tx_bytes, tx_nobufs, tx_again, tx_errors, tx_too_big
    cdef public uint64_t kernel_packets, kernel_ring_drops, kernel_freezes
    cdef public uint64_t tx_gso_frames, tx_gso_segments
    cdef public uint64_t tx_calls       # sendmmsg() system calls made (frames per call = tx frames / tx_calls)
    cdef public uint64_t rx_icmp_errors, rx_icmp_malformed, rx_icmp_bad_checksum, rx_icmp_not_tcp
    cdef public uint64_t rx_fragments   # IP fragments: left to the kernel (the rules pass them)
    cdef public uint64_t rx_hc_expanded, rx_hc_dropped
    cdef public uint64_t rx_resync_dropped   # waiting in the ring when a restarted worker took it over
    cdef readonly HcTable hc_table      # SCPS compressed headers are expanded through it (or None)
    cdef uint8_t* hcbuf
    cdef uint64_t rx_drop_reason[64]    # integrity/sanity rejections by WIRE_* code (index -code)
    cdef int txfd                     # PACKET_VNET_HDR socket for segmentation offload, or -1
    cdef readonly bint gso
    cdef mmsghdr gmsgs[MAX_BATCH]
    cdef iovec giovs[MAX_BATCH * (MAX_GSO_SEGS + 2)]
    cdef uint8_t ghdr[MAX_BATCH][HDR_SCRATCH]
    cdef int gsegs[MAX_BATCH]
    cdef mmsghdr msgs[MAX_BATCH]
    cdef iovec iovs[2 * MAX_BATCH]
    cdef uint8_t eth[MAX_BATCH][ETH_HLEN]
    cdef sockaddr_ll addr
    cdef readonly int fanout_group      # PACKET_FANOUT group id (-1: not in one); see _join_fanout

    def __cinit__(self):
        self.fanout_group = -1
        memset(self.rx_drop_reason, 0, sizeof(self.rx_drop_reason))
        self.fd = -1
        self.txfd = -1
        self.ring = NULL
        self.hcbuf = NULL

    def __init__(self, str ifname, bint client_side=True, unsigned int block_size=1 << 18,
                 unsigned int block_nr=64, unsigned int retire_ms=1, int mark=0,
                 bint tcp_filter=True, bint gso=False, bint icmp_errors=True, HcTable hc_table=None,
                 object fanout_group=None):
        cdef bytes name = ifname.encode()
        cdef int fd, one = 1, v = TPACKET_V3, sndbuf = 4 << 20
        cdef tpacket_req3 req
        cdef sock_fprog prog
        cdef sock_filter flt[HC_PREFIX_LEN + ICMP_FILTER_LEN]
        cdef int pre = 0
        if block_size < (1 << 17):
            raise ValueError("block_size must be >= 128 KiB (a 64 KiB super-frame must fit)")
        self.ifname = ifname
        self.client_side = client_side
        self.ifindex = if_nametoindex(name)
        if self.ifindex == 0:
            raise CaptureError(errno, f"no interface {ifname!r}")
        fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL))
        if fd < 0:
            raise CaptureError(errno, "socket(AF_PACKET) failed (needs CAP_NET_RAW)")
        self.fd = fd
        if hc_table is not None:
            self.hcbuf = <uint8_t*>PyMem_Malloc(HC_BUF)
            if self.hcbuf == NULL:
                raise MemoryError()
            self.hc_table = hc_table
        # The filter goes on before bind so no unfiltered frame is queued.
        if tcp_filter and hc_table is not None:
            memcpy(flt, _HC_PREFIX, sizeof(_HC_PREFIX))
            pre = HC_PREFIX_LEN
        if tcp_filter and icmp_errors:
            memcpy(flt + pre, _ICMP_PREFIX, sizeof(_ICMP_PREFIX))
            memcpy(flt + pre + ICMP_PREFIX_LEN, _TCP_ONLY, sizeof(_TCP_ONLY))
            prog.len = pre + ICMP_FILTER_LEN
            prog.filter = flt
            self._check(setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)), "SO_ATTACH_FILTER")
        elif tcp_filter:
            memcpy(flt + pre, _TCP_ONLY, sizeof(_TCP_ONLY))
            prog.len = pre + TCP_FILTER_LEN
            prog.filter = flt
            self._check(setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)), "SO_ATTACH_FILTER")
        self._check(setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)), "PACKET_IGNORE_OUTGOING")
        self._check(setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)), "PACKET_VERSION")
        memset(&req, 0, sizeof(req))
        req.tp_block_size = block_size
        req.tp_block_nr = block_nr
        req.tp_frame_size = 2048  # only a sanity unit for V3 (frames are variable)
        req.tp_frame_nr = (block_size // 2048) * block_nr
        req.tp_retire_blk_tov = retire_ms
        self._check(setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)), "PACKET_RX_RING")
        self.block_size = block_size
        self.block_nr = block_nr
        self.ring_len = <size_t>block_size * block_nr
        self.ring = <uint8_t*>mmap(NULL, self.ring_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if self.ring == <uint8_t*>MAP_FAILED:
            self.ring = NULL
            self._check(-1, "mmap")
        if mark:
            self._check(setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)), "SO_MARK")
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf))
        memset(&self.addr, 0, sizeof(self.addr))
        self.addr.sll_family = AF_PACKET
        self.addr.sll_protocol = htons(ETH_P_ALL)
        self.addr.sll_ifindex = self.ifindex
        self._check(bind(fd, <sockaddr*>&self.addr, sizeof(self.addr)), "bind")
        self.cur_block = 0
        if gso:
            self._open_gso_socket(mark)
        if fanout_group is not None:
            self._join_fanout(-1 if fanout_group == "new" else int(fanout_group))

    # -- PACKET_FANOUT: one flow, one worker (stackpep.pep.workers) --------------------
    # Each worker has its own ring on every interface; the rings of one interface
    # form a fanout group (packet(7) PACKET_FANOUT, type PACKET_FANOUT_CBPF) whose
    # classic BPF program (FANOUT_PROGRAM) computes a hash that is symmetric in
    # the flow's addresses and ports; the kernel hands the packet to member
    # `hash % members`, members numbered in the order they joined.  Both
    # directions of a connection arrive on different interfaces (client side,
    # server side): the same hash and the same join order on each interface
    # send them to the same worker.
    cdef _join_fanout(self, int group):
        cdef int val, got
        cdef socklen_t ln = sizeof(got)
        cdef sock_fprog prog
        cdef sock_filter* flt
        cdef Py_ssize_t i, n = len(FANOUT_PROGRAM)
        # The group has one receive hook of its own, which does not look at the
        # members' PACKET_IGNORE_OUTGOING: without the fanout flag every packet the
        # kernel sends or forwards out of the interface (an ICMP error on its way
        # through the box, ...) would reach a member a second time.
        cdef int flags = PACKET_FANOUT_FLAG_IGNORE_OUTGOING
        if group < 0:
            # a new group: the kernel picks an id no other group uses (Linux >= 4.4)
            val = (PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_UNIQUEID | flags) << 16
        else:
            val = (group & 0xffff) | ((PACKET_FANOUT_CBPF | flags) << 16)
        self._check(setsockopt(self.fd, SOL_PACKET, PACKET_FANOUT, &val, sizeof(val)),
                    "PACKET_FANOUT (with PACKET_FANOUT_FLAG_IGNORE_OUTGOING, which older kernels refuse: run one worker there)")
        self._check(getsockopt(self.fd, SOL_PACKET, PACKET_FANOUT, &got, &ln), "PACKET_FANOUT (read back)")
        self.fanout_group = got & 0xffff
        # the program belongs to the group: every member sets the same one
        flt = <sock_filter*>PyMem_Malloc(n * sizeof(sock_filter))
        if flt == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                flt[i].code, flt[i].jt, flt[i].jf, flt[i].k = FANOUT_PROGRAM[i]
            prog.len = <unsigned short>n
            prog.filter = flt
            self._check(setsockopt(self.fd, SOL_PACKET, PACKET_FANOUT_DATA, &prog, sizeof(prog)),
                        "PACKET_FANOUT_DATA")
        finally:
            PyMem_Free(flt)

    def resync(self):
        """Take over a ring another process read before (a restarted worker: the
        supervisor keeps every ring open, so the fanout group keeps its members
        and their order).  What is waiting is dropped -- it was for connections
        that ended with the old worker -- and reading goes on at the block the
        kernel fills now: the one it opened last, the highest `seq_num`
        (Documentation/networking/packet_mmap.rst, TPACKET_V3).  Returns the
        number of packets dropped (also counted as rx_drop_resync)."""
        cdef unsigned int i, best = 0
        cdef uint64_t top = 0
        cdef tpacket_block_desc* bd
        cdef uint64_t dropped = 0
        if self.ring == NULL:
            raise ValueError("ring closed")
        for i in range(self.block_nr):
            bd = self._block(i)
            if bd.hdr.bh1.block_status & TP_STATUS_USER:
                dropped += bd.hdr.bh1.num_pkts
                bd.hdr.bh1.block_status = TP_STATUS_KERNEL
        for i in range(self.block_nr):
            bd = self._block(i)
            if bd.hdr.bh1.seq_num >= top:
                top = bd.hdr.bh1.seq_num
                best = i
        self.cur_block = best
        self.rx_resync_dropped += dropped
        return dropped

    cdef _open_gso_socket(self, int mark):
        # A send-only socket (protocol 0: it receives nothing) with PACKET_VNET_HDR:
        # every frame starts with a virtio_net_hdr, so runs of back-to-back
        # segments of one connection can go out as one TSO/GSO super-frame that the
        # device or the kernel's GSO cuts back into exactly those segments.
        cdef int one = 1, sndbuf = 4 << 20
        cdef sockaddr_ll a
        cdef int t = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
        if t < 0:
            self._check(-1, "socket(AF_PACKET) for transmit")
        self.txfd = t
        self._check(setsockopt(t, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)), "PACKET_VNET_HDR")
        if mark:
            self._check(setsockopt(t, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)), "SO_MARK")
        setsockopt(t, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf))
        memset(&a, 0, sizeof(a))
        a.sll_family = AF_PACKET
        a.sll_protocol = 0
        a.sll_ifindex = self.ifindex
        self._check(bind(t, <sockaddr*>&a, sizeof(a)), "bind (transmit socket)")
        self.gso = True

    cdef _check(self, int rc, str what):
        cdef int e
        if rc < 0:
            e = errno
            self.close()
            raise CaptureError(e, f"{what} on {self.ifname}: {__import__('os').strerror(e)}")

    def fileno(self):
        return self.fd

    def close(self):
        if self.txfd >= 0:
            close(self.txfd)
            self.txfd = -1
        if self.ring != NULL:
            munmap(self.ring, self.ring_len)
            self.ring = NULL
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def __dealloc__(self):
        PyMem_Free(self.hcbuf)
        if self.txfd >= 0:
            close(self.txfd)
        if self.ring != NULL:
            munmap(self.ring, self.ring_len)
        if self.fd >= 0:
            close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    cdef inline tpacket_block_desc* _block(self, unsigned int i) noexcept nogil:
        return <tpacket_block_desc*>(self.ring + <size_t>i * self.block_size)

    def pending(self):
        """True if a retired block is waiting (what poll() reports as readable)."""
        if self.ring == NULL:
            return False
        return (self._block(self.cur_block).hdr.bh1.block_status & TP_STATUS_USER) != 0

    def filling(self):
        """True if packets wait in the block the kernel is filling now (not yet
        retired: it is handed over when full or after `retire_ms`).  Read from the
        mapped block header (its packet count, which the kernel updates per
        packet and zeroes when it opens the block), no system call."""
        cdef tpacket_block_desc* bd
        if self.ring == NULL:
            return False
        bd = self._block(self.cur_block)
        return (bd.hdr.bh1.block_status & TP_STATUS_USER) == 0 and bd.hdr.bh1.num_pkts > 0

    cdef int _take_tcp(self, uint8_t* ip, Py_ssize_t n, uint32_t status, tcp_seg_t* seg) noexcept:
        """Is this frame an intact TCP segment the splitter may act on?  WIRE_OK,
        or the reason it is not (counted here, before anything creates state).

        Integrity first (the wire layer's parse_ip_tcp, which walks the IPv6
        extension-header chain, RFC 8200 §4): IPv4 header checksum (RFC 791
        §3.1) always -- the kernel checks it only after us, in ip_rcv() --, TCP
        checksum (RFC 9293 §3.1, RFC 8200 §8.1) unless the kernel vouched for
        it: TP_STATUS_CSUM_VALID (checked by the device/veth) or
        TP_STATUS_CSUMNOTREADY (CHECKSUM_PARTIAL: generated on this host, the
        field holds only the pseudo-header sum; completed here in place).
        Fragments and what is not TCP are left to the kernel: the rules do not
        drop them (stackpep.io.rules), so it forwards them."""
        cdef int rc, verify
        cdef uint16_t et = _be16(ip - 2)    # the ethertype, just before the network header
        if status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID):
            verify = 2      # IP header checked, TCP checksum trusted/completed
        else:
            verify = 1
        # RFC 1122 §3.2.1.1, RFC 8200 §3: the version agrees with the ethertype
        # (the kernel's ip_rcv()/ipv6_rcv() drop a mismatch, so must we).
        if n < 1 or (ip[0] >> 4) != (6 if et == ETH_P_IPV6 else 4):
            rc = WIRE_IP_VERSION_MISMATCH
            wire_count(rc)
        else:
            rc = parse_ip_tcp(ip, n, seg, verify)
        if rc == WIRE_OK and seg.ip_version == 6 and seg.ip_hdr_len > 40 and _v6_has_fragment_header(ip, seg.ip_hdr_len):
            rc = WIRE_FRAGMENT     # an atomic fragment (RFC 6946): left to the kernel like any fragment
        if rc == WIRE_OK:
            if status & TP_STATUS_CSUMNOTREADY:
                _complete_tcp_checksum(ip, seg.payload_off + seg.payload_len, seg.ip_version == 6, seg.ip_hdr_len,
                                       seg_final_dst(seg) if seg.ip_version == 6 else NULL)
                self.rx_csum_completed += 1
            elif status & TP_STATUS_CSUM_VALID:
                self.rx_csum_valid += 1
            if seg.payload_len > 1500:
                self.rx_gro_frames += 1
            return WIRE_OK
        if rc == WIRE_NOT_TCP:
            self.rx_not_ip_tcp += 1
        elif rc == WIRE_FRAGMENT:
            self.rx_fragments += 1
        else:
            self.rx_malformed += 1
            self.rx_drop_reason[-rc] += 1
        return rc

    def read_batch(self, int max_blocks=16, FastFlows fast=None, uint64_t now=0):
        """Drain up to max_blocks retired blocks; return [(key, ip_packet, flags)].

        key = client address + client port (2 bytes, big-endian) + server
        address + server port: 12 bytes for IPv4, 36 for IPv6.  Consecutive
        segments of one flow share one key object (equal keys either way; the
        dispatcher's table lookup then reuses its cached hash).

        With `fast` (a FastFlows), a segment of a flow whose receiving leg is
        opened there goes to its engine from the ring (at `now`, µs) and is not
        in the list; `fast.take()` says which connections took segments.
        """
        cdef list out = []
        cdef bytes last_key = None
        cdef _FastFlow flow = None
        cdef tpacket_block_desc* bd
        cdef tpacket3_hdr* h
        cdef uint8_t* frame
        cdef uint8_t* ip
        cdef uint8_t key[36]
        cdef uint32_t i, npkts, status
        cdef Py_ssize_t n, iplen, keylen
        cdef int blocks = 0
        cdef tcp_seg_t seg
        if self.ring == NULL:
            raise ValueError("ring closed")
        if fast is not None:
            fast.read_seq += 1
        while blocks < max_blocks:
            bd = self._block(self.cur_block)
            if (bd.hdr.bh1.block_status & TP_STATUS_USER) == 0:
                break
            blocks += 1
            self.rx_blocks += 1
            npkts = bd.hdr.bh1.num_pkts
            h = <tpacket3_hdr*>((<uint8_t*>bd) + bd.hdr.bh1.offset_to_first_pkt)
            for i in range(npkts):
                status = h.tp_status
                frame = (<uint8_t*>h) + h.tp_mac
                ip = (<uint8_t*>h) + h.tp_net
                n = <Py_ssize_t>h.tp_snaplen - (<Py_ssize_t>h.tp_net - <Py_ssize_t>h.tp_mac)
                self.rx_packets += 1
                self.rx_bytes += h.tp_len
                if h.tp_snaplen < h.tp_len:
                    self.rx_truncated += 1
                elif n >= 20 and _is_icmp(ip):
                    self._icmp_error(ip, n, out, fast)
                elif self.hcbuf != NULL and n >= 20 and _is_scps_hc(ip):
                    self._hc_expand(ip, n, key, out, fast, now)
                elif self._take_tcp(ip, n, status, &seg) == WIRE_OK:
                    iplen = seg.payload_off + seg.payload_len
                    keylen = _flow_key(&seg, self.client_side, key)
                    if last_key is None or PyBytes_GET_SIZE(last_key) != keylen \
                            or memcmp(PyBytes_AS_STRING(last_key), key, keylen) != 0:
                        last_key = PyBytes_FromStringAndSize(<char*>key, keylen)
                        if fast is not None:
                            flow = fast.lookup(last_key)   # once per run of one flow's segments
                    if flow is None or not fast.deliver(flow, self.client_side, ip, iplen, seg.flags, now):
                        out.append((last_key, PyBytes_FromStringAndSize(<char*>ip, iplen), seg.flags))
                h = <tpacket3_hdr*>((<uint8_t*>h) + h.tp_next_offset)
            # hand the block back to the kernel
            bd.hdr.bh1.block_status = TP_STATUS_KERNEL
            self.cur_block = (self.cur_block + 1) % self.block_nr
        return out

    cdef int _hc_expand(self, const uint8_t* ip, Py_ssize_t n, uint8_t* key, list out, FastFlows fast,
                        uint64_t now) except -1:
        # A compressed SCPS-TP header: expand it through the table's contexts, then
        # take the result like any captured segment (IP header and sanity checked;
        # its TCP checksum was computed by the expansion).
        cdef uint8_t* x = self.hcbuf + HC_HEADROOM
        cdef Py_ssize_t r
        cdef tcp_seg_t seg
        cdef int rc, keylen
        cdef bytes k
        cdef _FastFlow flow
        if (ip[0] >> 4) == 4 and (_be16(ip + 6) & 0x3fff):
            self.rx_fragments += 1          # RFC 791 §3.2: left to the kernel, as TCP fragments are
            return 0
        r = self.hc_table.expand_into(ip, n, x, HC_BUF - HC_HEADROOM)
        if r < 0:
            self.rx_hc_dropped += 1
            return 0
        x[-2] = ip[-2]
        x[-1] = ip[-1]                      # the ethertype, where _take_tcp reads it
        rc = self._take_tcp(x, r, 0, &seg)
        if rc != WIRE_OK:
            self.rx_hc_dropped += 1
            return 0
        self.rx_hc_expanded += 1
        keylen = _flow_key(&seg, self.client_side, key)
        k = PyBytes_FromStringAndSize(<char*>key, keylen)
        if fast is not None:
            flow = fast.lookup(k)
            if flow is not None and fast.deliver(flow, self.client_side, x, seg.payload_off + seg.payload_len,
                                                 seg.flags, now):
                return 0
        out.append((k, PyBytes_FromStringAndSize(<char*>x, seg.payload_off + seg.payload_len),
                    seg.flags | HC_EXPANDED_FLAG))
        return 0

    cdef int _icmp_error(self, const uint8_t* ip, Py_ssize_t n, list out, FastFlows fast) except -1:
        # An ICMP error: hand it on under the key of the flow it quotes.
        cdef uint8_t key[36]
        cdef Py_ssize_t iplen
        cdef bytes k
        cdef int keylen = _icmp_error_key(ip, n, self.client_side, key, &iplen)
        if keylen == -1:
            self.rx_icmp_malformed += 1
        elif keylen == -2:
            self.rx_icmp_bad_checksum += 1
        elif keylen == -3:
            self.rx_icmp_not_tcp += 1
        else:
            self.rx_icmp_errors += 1
            k = PyBytes_FromStringAndSize(<char*>key, keylen)
            if fast is not None:
                fast.mark_slow(k)   # the flow's later segments stay behind it (the Python path)
            out.append((k, PyBytes_FromStringAndSize(<const char*>ip, iplen), ICMP_ERROR))
        return 0

    def send_batch(self, list packets, const uint8_t[::1] macs):
        """Send IP packets as Ethernet frames: macs = destination MAC + source MAC
        (12 bytes); the EtherType follows each packet's IP version.

        Returns the number sent.  ENOBUFS (a full qdisc) and EAGAIN (socket buffer
        full) are counted as drops: TCP above recovers them like any queue drop.
        """
        cdef Py_ssize_t total = len(packets), base = 0, i, cnt, n
        cdef int r, sent = 0, e
        cdef object p
        cdef char* data
        if macs.shape[0] != 12:
            raise ValueError("macs must be 12 bytes (destination + source)")
        if self.fd < 0:
            raise ValueError("socket closed")
        if self.txfd >= 0:
            return self._send_gso(packets, &macs[0])
        while base < total:
            cnt = min(total - base, MAX_BATCH)
            for i in range(cnt):
                p = packets[base + i]
                data = PyBytes_AS_STRING(p)
                n = PyBytes_GET_SIZE(p)
                memcpy(self.eth[i], &macs[0], 12)
                if n and (<uint8_t>data[0] >> 4) == 6:
                    self.eth[i][12] = 0x86; self.eth[i][13] = 0xDD
                else:
                    self.eth[i][12] = 0x08; self.eth[i][13] = 0x00
                self.iovs[2 * i].iov_base = self.eth[i]
                self.iovs[2 * i].iov_len = ETH_HLEN
                self.iovs[2 * i + 1].iov_base = data
                self.iovs[2 * i + 1].iov_len = n
                memset(&self.msgs[i], 0, sizeof(mmsghdr))
                self.msgs[i].msg_hdr.msg_iov = &self.iovs[2 * i]
                self.msgs[i].msg_hdr.msg_iovlen = 2
                self.tx_bytes += n
            i = 0
            while i < cnt:
                with nogil:
                    r = sendmmsg(self.fd, &self.msgs[i], <unsigned int>(cnt - i), MSG_DONTWAIT)
                self.tx_calls += 1
                if r < 0:
                    e = errno
                    if e == EINTR:
                        continue
                    if e == ENOBUFS:
                        self.tx_nobufs += 1
                    elif e == EAGAIN:
                        self.tx_again += 1
                    elif e == 90:  # EMSGSIZE: larger than the device MTU
                        self.tx_too_big += 1
                    else:
                        self.tx_errors += 1
                    self.tx_bytes -= self.iovs[2 * i + 1].iov_len
                    i += 1   # that frame is dropped; go on with the rest
                else:
                    sent += r
                    i += r
            base += cnt
        self.tx_packets += sent
        return sent

    cdef int _send_gso(self, list packets, const uint8_t* macs) except -1:
        """send_batch() through the PACKET_VNET_HDR socket, merging runs of
        segments that a TSO sender would have cut from one buffer: same
        connection, back-to-back sequence numbers, identical IP/TCP headers and
        options, every segment but the last a full `gso_size` with flags ACK
        only (the last may add PSH; Linux's tcp_gso_segment() puts PSH/FIN only
        on the last segment, RFC 9293 §3.7.4 leaves PSH placement to the sender)."""
        cdef Py_ssize_t total = len(packets), i = 0, j, k, n, m, ihl, thl, plen, qihl, qthl, qplen
        cdef Py_ssize_t hl, sum_plen, gso_size, nmsg, iov_at, start
        cdef const uint8_t* p
        cdef const uint8_t* q
        cdef const uint8_t* last
        cdef uint8_t* h
        cdef uint8_t* iph
        cdef uint32_t next_seq
        cdef uint64_t acc
        cdef uint16_t c, lastflags
        cdef int v6, r, e, sent = 0
        while i < total:
            nmsg = 0
            iov_at = 0
            while i < total and nmsg < MAX_BATCH:
                p = <const uint8_t*>PyBytes_AS_STRING(packets[i])
                n = PyBytes_GET_SIZE(packets[i])
                v6 = n > 0 and (p[0] >> 4) == 6
                h = self.ghdr[nmsg]
                memset(h, 0, VNET_HLEN)
                memcpy(h + VNET_HLEN, macs, 12)
                h[VNET_HLEN + 12] = 0x86 if v6 else 0x08
                h[VNET_HLEN + 13] = 0xDD if v6 else 0x00
                j = i + 1
                # header lengths of the first segment (0 if not a plain TCP packet)
                ihl = thl = plen = 0
                if n >= 40 and v6 and p[6] == IPPROTO_TCP and n >= 60:
                    ihl = 40
                elif n >= 40 and not v6 and (p[0] >> 4) == 4 and p[9] == IPPROTO_TCP:
                    ihl = (p[0] & 0x0f) * 4
                if ihl and n >= ihl + 20:
                    thl = (p[ihl + 12] >> 4) * 4
                    if thl >= 20 and ihl + thl <= n and ihl + thl <= HDR_SCRATCH - VNET_HLEN - ETH_HLEN:
                        plen = n - ihl - thl
                gso_size = plen
                sum_plen = plen
                last = p
                if plen > 0 and p[ihl + 13] == 0x10:
                    next_seq = ((<uint32_t>p[ihl + 4] << 24) | (<uint32_t>p[ihl + 5] << 16) |
                                (<uint32_t>p[ihl + 6] << 8) | p[ihl + 7]) + <uint32_t>plen
                    while j < total and j - i < MAX_GSO_SEGS and last[ihl + 13] == 0x10:
                        q = <const uint8_t*>PyBytes_AS_STRING(packets[j])
                        m = PyBytes_GET_SIZE(packets[j])
                        if m <= ihl + thl or (q[0] >> 4) != (p[0] >> 4):
                            break
                        qplen = m - ihl - thl
                        if qplen > gso_size or (last != p and (PyBytes_GET_SIZE(packets[j - 1]) - ihl - thl) != gso_size):
                            break
                        if sum_plen + qplen + thl + (0 if v6 else ihl) > 65535:
                            break
                        # identical IP header but for length/id/checksum
                        if v6:
                            if memcmp(p, q, 4) != 0 or memcmp(p + 6, q + 6, 34) != 0:
                                break
                        else:
                            if (q[0] & 0x0f) * 4 != ihl or p[1] != q[1] or memcmp(p + 6, q + 6, 4) != 0 \
                                    or memcmp(p + 12, q + 12, ihl - 12) != 0:
                                break
                        # identical TCP header but for seq/checksum/flags (ACK or ACK|PSH)
                        if memcmp(p + ihl, q + ihl, 4) != 0 or memcmp(p + ihl + 8, q + ihl + 8, 5) != 0 \
                                or memcmp(p + ihl + 14, q + ihl + 14, 2) != 0 \
                                or memcmp(p + ihl + 18, q + ihl + 18, thl - 18) != 0 \
                                or (q[ihl + 13] != 0x10 and q[ihl + 13] != 0x18):
                            break
                        if ((<uint32_t>q[ihl + 4] << 24) | (<uint32_t>q[ihl + 5] << 16) |
                                (<uint32_t>q[ihl + 6] << 8) | q[ihl + 7]) != next_seq:
                            break
                        next_seq += <uint32_t>qplen
                        sum_plen += qplen
                        last = q
                        j += 1
                self.msgs_setup(nmsg, iov_at)
                if j - i == 1:
                    # one packet as it is: a zero virtio_net_hdr (checksums already filled)
                    self.giovs[iov_at].iov_base = h
                    self.giovs[iov_at].iov_len = VNET_HLEN + ETH_HLEN
                    self.giovs[iov_at + 1].iov_base = <void*>p
                    self.giovs[iov_at + 1].iov_len = n
                    self.gmsgs[nmsg].msg_hdr.msg_iovlen = 2
                    iov_at += 2
                    self.gsegs[nmsg] = 1
                    self.tx_bytes += n
                else:
                    hl = ihl + thl
                    iph = h + VNET_HLEN + ETH_HLEN
                    memcpy(iph, p, hl)
                    iph[ihl + 13] = last[ihl + 13]  # PSH of the last segment
                    if v6:
                        iph[4] = <uint8_t>((thl + sum_plen) >> 8)
                        iph[5] = <uint8_t>((thl + sum_plen) & 0xff)
                        acc = pseudo_v6(iph + 8, iph + 24, IPPROTO_TCP, <uint32_t>(thl + sum_plen))
                    else:
                        iph[2] = <uint8_t>((hl + sum_plen) >> 8)
                        iph[3] = <uint8_t>((hl + sum_plen) & 0xff)
                        iph[10] = 0
                        iph[11] = 0
                        c = csum_fold(csum_add(iph, ihl, 0))
                        iph[10] = c >> 8
                        iph[11] = c & 0xff
                        acc = pseudo_v4(iph + 12, iph + 16, IPPROTO_TCP, <uint32_t>(thl + sum_plen))
                    # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum and
                    # the kernel/device completes each segment's checksum.
                    c = <uint16_t>(~csum_fold(acc))
                    iph[ihl + 16] = c >> 8
                    iph[ihl + 17] = c & 0xff
                    h[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM
                    h[1] = VIRTIO_NET_HDR_GSO_TCPV6 if v6 else VIRTIO_NET_HDR_GSO_TCPV4
                    (<uint16_t*>(h + 2))[0] = <uint16_t>(ETH_HLEN + hl)       # hdr_len
                    (<uint16_t*>(h + 4))[0] = <uint16_t>gso_size              # gso_size
                    (<uint16_t*>(h + 6))[0] = <uint16_t>(ETH_HLEN + ihl)      # csum_start
                    (<uint16_t*>(h + 8))[0] = 16                              # csum_offset
                    self.giovs[iov_at].iov_base = h
                    self.giovs[iov_at].iov_len = VNET_HLEN + ETH_HLEN + hl
                    iov_at += 1
                    for k in range(i, j):
                        q = <const uint8_t*>PyBytes_AS_STRING(packets[k])
                        m = PyBytes_GET_SIZE(packets[k])
                        self.giovs[iov_at].iov_base = <void*>(q + hl)
                        self.giovs[iov_at].iov_len = m - hl
                        iov_at += 1
                        self.tx_bytes += m
                    self.gmsgs[nmsg].msg_hdr.msg_iovlen = 1 + (j - i)
                    self.gsegs[nmsg] = <int>(j - i)
                    self.tx_gso_frames += 1
                    self.tx_gso_segments += j - i
                nmsg += 1
                i = j
            # send the messages built so far
            k = 0
            while k < nmsg:
                with nogil:
                    r = sendmmsg(self.txfd, &self.gmsgs[k], <unsigned int>(nmsg - k), MSG_DONTWAIT)
                self.tx_calls += 1
                if r < 0:
                    e = errno
                    if e == EINTR:
                        continue
                    if e == ENOBUFS:
                        self.tx_nobufs += self.gsegs[k]
                    elif e == EAGAIN:
                        self.tx_again += self.gsegs[k]
                    elif e == 90:  # EMSGSIZE
                        self.tx_too_big += self.gsegs[k]
                    else:
                        self.tx_errors += self.gsegs[k]
                    k += 1
                else:
                    for m in range(k, k + r):
                        sent += self.gsegs[m]
                    k += r
        self.tx_packets += sent
        return sent

    cdef inline void msgs_setup(self, Py_ssize_t nmsg, Py_ssize_t iov_at) noexcept:
        memset(&self.gmsgs[nmsg], 0, sizeof(mmsghdr))
        self.gmsgs[nmsg].msg_hdr.msg_iov = &self.giovs[iov_at]

    def kernel_statistics(self):
        """PACKET_STATISTICS since the last call (the kernel resets them on read):
        (packets, drops because the ring was full, freeze_q_cnt).  Also added to
        the running totals statistics() reports."""
        cdef tpacket_stats_v3 st
        cdef socklen_t ln = sizeof(st)
        if self.fd < 0:
            return (0, 0, 0)
        if getsockopt(self.fd, SOL_PACKET, PACKET_STATISTICS, &st, &ln) < 0:
            raise CaptureError(errno, "PACKET_STATISTICS")
        self.kernel_packets += st.tp_packets
        self.kernel_ring_drops += st.tp_drops
        self.kernel_freezes += st.tp_freeze_q_cnt
        return (st.tp_packets, st.tp_drops, st.tp_freeze_q_cnt)

    def statistics(self):
        """Counters as an immutable snapshot (a dict copy).  rx_drop_ring_full is
        the kernel's count of frames it could not put in the ring (the ring was
        full: user space fell behind).  rx_drop_malformed counts every segment
        refused for integrity or sanity, and rx_drop_<reason> (the wire layer's
        counter names: rx_drop_tcp_checksum, rx_drop_ipv4_checksum,
        rx_drop_tcp_truncated, rx_drop_tcp_doff, ...) each reason;
        rx_pass_fragment the IP fragments left to the kernel."""
        self.kernel_statistics()
        return {
            "rx_kernel_packets": self.kernel_packets, "rx_drop_ring_full": self.kernel_ring_drops,
            "rx_ring_freezes": self.kernel_freezes,
            "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes, "rx_blocks": self.rx_blocks,
            "rx_csum_completed": self.rx_csum_completed, "rx_csum_valid": self.rx_csum_valid,
            "rx_gro_frames": self.rx_gro_frames,
            "rx_drop_truncated": self.rx_truncated, "rx_drop_not_ip_tcp": self.rx_not_ip_tcp,
            "rx_drop_malformed": self.rx_malformed, "rx_pass_fragment": self.rx_fragments,
            **{f"rx_drop_{name}": self.rx_drop_reason[i] for i, name in _REASONS},
            "rx_icmp_errors": self.rx_icmp_errors, "rx_icmp_drop_malformed": self.rx_icmp_malformed,
            "rx_icmp_drop_bad_checksum": self.rx_icmp_bad_checksum, "rx_icmp_drop_not_tcp": self.rx_icmp_not_tcp,
            "rx_hc_expanded": self.rx_hc_expanded, "rx_hc_dropped": self.rx_hc_dropped,
            "rx_drop_resync": self.rx_resync_dropped,
            "tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes,
            "tx_gso_frames": self.tx_gso_frames, "tx_gso_segments": self.tx_gso_segments,
            "tx_sendmmsg_calls": self.tx_calls,
            "tx_drop_nobufs": self.tx_nobufs, "tx_drop_again": self.tx_again,
            "tx_drop_too_big": self.tx_too_big, "tx_drop_error": self.tx_errors,
        }


def flow_key(bytes client_addr, int client_port, bytes server_addr, int server_port):
    """The key read_batch() gives a flow (for callers that build it from a SYN)."""
    if len(client_addr) != len(server_addr) or len(client_addr) not in (4, 16):
        raise ValueError("addresses must both be 4 or 16 bytes")
    return client_addr + client_port.to_bytes(2, "big") + server_addr + server_port.to_bytes(2, "big")


def split_key(bytes key):
    """Inverse of flow_key: (client_addr, client_port, server_addr, server_port)."""
    cdef Py_ssize_t a
    if len(key) == 12:
        a = 4
    elif len(key) == 36:
        a = 16
    else:
        raise ValueError("bad key length")
    return (key[:a], int.from_bytes(key[a:a + 2], "big"), key[a + 2:2 * a + 2],
            int.from_bytes(key[2 * a + 2:], "big"))


def complete_checksum(bytearray packet):
    """Fill the TCP checksum of an IP packet in place (for tests and the
    in-memory port): the same routine the ring uses for checksum-not-ready frames."""
    cdef uint8_t* p = <uint8_t*>(<char*>packet)
    cdef Py_ssize_t n = len(packet)
    cdef int v6
    if n < 40:
        raise ValueError("packet too short")
    v6 = (p[0] >> 4) == 6
    if _complete_tcp_checksum(p, n, v6, 40 if v6 else (p[0] & 0x0f) * 4) < 0:
        raise ValueError("packet too short")
