"""ICMP errors about intercepted flows: parse, validate, rate-limit (sans-IO).

Every segment a leg sends leaves with DF set (RFC 1191 §3, RFC 8201: IPv6
never fragments in the path), so a router whose next link is narrower than
ours drops it and answers ICMP frag-needed (type 3 code 4, RFC 1191 §4) or
ICMPv6 Packet Too Big (RFC 4443 §3.2).  Without it the leg would retransmit
full-size segments into a black hole.

The capture (stackpep._fast.capture) keeps ICMPv4 type 3 and ICMPv6 types 1-4,
checks the ICMP checksum and files each error under the flow key of the TCP
packet it quotes -- a packet *this box* sent, so its source is the leg's local
address (the spoofed address of the far endpoint) and its destination the
leg's remote.  The error itself is addressed to that spoofed source, not to the
box: it is captured from the wire like intercepted TCP.

What the dispatcher does with one (every refusal is a counter named here):
1. rate limit: a token bucket over all ICMP errors (`IcmpGuard.admit`), so a
   flood of forged errors costs little (RFC 5927 §4.3 / §7 discuss the attack);
2. parse (`parse_icmp_error`);
3. the outer destination is the quote's source (RFC 792, RFC 4443 §2.4(c):
   an error goes back to the source of the offending packet);
4. the quoted 4-tuple is a leg's (local, remote) and the quoted SEQ lies in
   SND.UNA..SND.NXT of that leg (RFC 5927 §4.1; Linux tcp_v4_err does the same):
   a blind attacker must guess an in-flight sequence number;
5. Packet Too Big lowers the leg's path MTU, so its MSS (RFC 1191 §6.1,
   RFC 8201 §4 and §5.2); an IPv4 next-hop MTU of 0 (a pre-RFC 1191 router)
   takes the plateau below the quoted Total Length (RFC 1191 §5 and §7).
   Anything else is a soft error (RFC 1122 §4.2.3.9, RFC 5461 §4: treat even
   "hard" unreachables as soft in synchronized states): counted and recorded
   on the connection, never an abort.

The kernel still forwards every ICMP message it routes, these included (no
netfilter rule drops ICMP): an error about a leg's packet then also reaches
the endpoint whose address the leg borrowed.  Its TCP finds the same 4-tuple
but a sequence number from the leg's own space (another ISS), outside its
SND.UNA..SND.NXT, and ignores it (RFC 5927 §4.1; Linux counts it as
TcpExtOutOfWindowIcmps).  Errors that quote no intercepted flow are only
counted here and forwarded by the kernel as before.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Dict, Optional

from stackpep._fast.capture import ICMP_ERROR  # noqa: F401  (the flags value of an ICMP error in a batch)
from stackpep._fast.wire import plateau_mtu  # RFC 1191 §5 / §7 Table 7-1
from stackpep.pep.reset import TokenBucket

ICMP4_UNREACH = 3
ICMP4_FRAG_NEEDED = 4
ICMP6_PTB = 2

#: counters the dispatcher keeps for ICMP errors (stackpep.pep.dispatcher.COUNTERS)
ICMP_COUNTERS = (
    "icmp_errors_in",  # ICMP errors quoting TCP that reached the dispatcher
    "icmp_ptb_client_leg",  # Packet Too Big that lowered the client leg's path MTU
    "icmp_ptb_server_leg",  # ... the server leg's
    "icmp_ptb_no_change",  # valid Packet Too Big, MTU not below the leg's current one
    "icmp_soft_error_client_leg",  # other unreachables: recorded, the connection goes on
    "icmp_soft_error_server_leg",
    "icmp_drop_rate_limited",
    "icmp_drop_malformed",
    "icmp_drop_wrong_destination",  # not addressed to the quoted packet's source
    "icmp_drop_not_intercepted",  # quotes a flow we do not intercept (the kernel forwards it)
    "icmp_drop_unknown_flow",  # quotes an intercepted 4-tuple with no connection
    "icmp_drop_wrong_tuple",  # the quote is not a packet of that leg
    "icmp_drop_stale_seq",  # quoted SEQ outside SND.UNA..SND.NXT (RFC 5927 §4.1)
    "icmp_drop_not_ready",  # the leg does not exist yet
)

_UNREACH4 = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
             3: "port unreachable", 4: "fragmentation needed", 5: "source route failed",
             6: "destination network unknown", 7: "destination host unknown", 9: "network prohibited",
             10: "host prohibited", 11: "network unreachable for TOS", 12: "host unreachable for TOS",
             13: "communication administratively prohibited"}
_TYPES6 = {1: "destination unreachable", 2: "packet too big", 3: "time exceeded", 4: "parameter problem"}
_UNREACH6 = {0: "no route to destination", 1: "administratively prohibited", 2: "beyond scope of source address",
             3: "address unreachable", 4: "port unreachable", 5: "source address failed ingress/egress policy",
             6: "reject route to destination"}


class IcmpReject(ValueError):
    """An ICMP error that cannot be used; `reason` names the counter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class IcmpError:
    """An ICMP(v6) error message and the TCP header it quotes."""

    version: int
    type: int
    code: int
    mtu: int  # Packet Too Big: the reported MTU (IPv4 may say 0); otherwise 0
    src: bytes  # outer source: the router that reports
    dst: bytes  # outer destination: the quoted packet's source
    quoted_src: bytes
    quoted_dst: bytes
    quoted_sport: int
    quoted_dport: int
    quoted_seq: int
    quoted_total_length: int  # IPv4 Total Length / IPv6 40 + Payload Length of the quote

    @property
    def packet_too_big(self) -> bool:
        if self.version == 4:
            return self.type == ICMP4_UNREACH and self.code == ICMP4_FRAG_NEEDED
        return self.type == ICMP6_PTB

    def path_mtu(self) -> int:
        """The MTU to use: the one reported, or RFC 1191 §5's plateau when it is 0."""
        if self.mtu == 0 and self.version == 4:
            return plateau_mtu(self.quoted_total_length)
        return self.mtu

    def describe(self) -> str:
        if self.version == 4:
            what = _UNREACH4.get(self.code, "destination unreachable")
            tag = f"ICMP {self.type}/{self.code}"
        else:
            what = _TYPES6.get(self.type, "error")
            if self.type == 1:
                what = _UNREACH6.get(self.code, what)
            tag = f"ICMPv6 {self.type}/{self.code}"
        return f"{what} ({tag}) from {ipaddress.ip_address(self.src)}"


def parse_icmp_error(packet: bytes, verify_checksum: bool = False) -> IcmpError:
    """An IP packet carrying ICMPv4 type 3 or ICMPv6 type 1-4 that quotes an IP
    header and at least 8 bytes of TCP (RFC 792, RFC 4443 §3).  The capture has
    checked the checksum already; verify_checksum=True checks it here (memory ports).
    Raises IcmpReject("icmp_drop_malformed")."""
    p = bytes(packet)
    bad = "icmp_drop_malformed"
    if len(p) < 20:
        raise IcmpReject(bad, "shorter than an IP header")
    v = p[0] >> 4
    if v == 4:
        ihl = (p[0] & 15) * 4
        iplen = struct.unpack_from("!H", p, 2)[0]
        if ihl < 20 or p[9] != 1 or struct.unpack_from("!H", p, 6)[0] & 0x3FFF:
            raise IcmpReject(bad, "not an unfragmented ICMP datagram")
        src, dst = p[12:16], p[16:20]
    elif v == 6:
        ihl = 40
        if len(p) < 40 or p[6] != 58:
            raise IcmpReject(bad, "not ICMPv6 right after the IPv6 header")
        iplen = 40 + struct.unpack_from("!H", p, 4)[0]
        src, dst = p[8:24], p[24:40]
    else:
        raise IcmpReject(bad, "not IP")
    if iplen > len(p) or iplen < ihl + 8 + 20 + 8:
        raise IcmpReject(bad, "too short for a quoted IP header and 8 bytes of TCP")
    icmp = p[ihl:iplen]
    typ, code = icmp[0], icmp[1]
    if (v == 4 and typ != ICMP4_UNREACH) or (v == 6 and not 1 <= typ <= 4):
        raise IcmpReject(bad, f"ICMP type {typ} is not an error we take")
    if verify_checksum:
        from stackpep._fast.checksum import internet_checksum, pseudo_header_sum

        init = 0 if v == 4 else pseudo_header_sum(src, dst, 58, len(icmp))
        if internet_checksum(icmp, init) != 0:
            raise IcmpReject(bad, "ICMP checksum")
    if v == 4:
        mtu = struct.unpack_from("!H", icmp, 6)[0] if code == ICMP4_FRAG_NEEDED else 0
    else:
        mtu = struct.unpack_from("!I", icmp, 4)[0] if typ == ICMP6_PTB else 0
    q = icmp[8:]
    if q[0] >> 4 != v:
        raise IcmpReject(bad, "quoted IP version differs")
    if v == 4:
        qihl = (q[0] & 15) * 4
        if qihl < 20 or len(q) < qihl + 8 or q[9] != 6 or struct.unpack_from("!H", q, 6)[0] & 0x1FFF:
            raise IcmpReject(bad, "quote is not the head of a TCP segment")
        qsrc, qdst = q[12:16], q[16:20]
        qtotal = struct.unpack_from("!H", q, 2)[0]
    else:
        qihl = 40
        if len(q) < 48 or q[6] != 6:
            raise IcmpReject(bad, "quote is not a TCP segment without extension headers")
        qsrc, qdst = q[8:24], q[24:40]
        qtotal = 40 + struct.unpack_from("!H", q, 4)[0]
    sport, dport, seq = struct.unpack_from("!HHI", q, qihl)
    return IcmpError(v, typ, code, mtu, src, dst, qsrc, qdst, sport, dport, seq, qtotal)


def emit_icmp_error(version: int, src: bytes, dst: bytes, type_: int, code: int, quote: bytes,
                    mtu: int = 0, ttl: int = 64) -> bytes:
    """An ICMP(v6) error IP packet quoting `quote` (for tests and tools; a router
    quotes IPv4 header + 8 bytes at least, RFC 792, and IPv6 as much as fits in
    1280 bytes, RFC 4443 §2.4(c))."""
    from stackpep._fast.checksum import internet_checksum, pseudo_header_sum

    if version == 4:
        body = bytearray(struct.pack("!BBHHH", type_, code, 0, 0, mtu if type_ == 3 and code == 4 else 0) + quote)
        ck = internet_checksum(bytes(body))
        struct.pack_into("!H", body, 2, ck)
        hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, ttl, 1, 0, src, dst))
        struct.pack_into("!H", hdr, 10, internet_checksum(bytes(hdr)))
        return bytes(hdr + body)
    body = bytearray(struct.pack("!BBHI", type_, code, 0, mtu if type_ == ICMP6_PTB else 0) + quote)
    ck = internet_checksum(bytes(body), pseudo_header_sum(src, dst, 58, len(body)))
    struct.pack_into("!H", body, 2, ck)
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, ttl, src, dst) + bytes(body)


class IcmpGuard:
    """The checks of the module doc, steps 1, 3 and 4, with their counters.

    `leg` is the engine of the leg the error names (stackpep._fast.tcp.TcpConnection):
    its local/remote address and port, and `icmp_quote_acceptable(seq)`."""

    #: defaults: a box with many connections on a narrowing path draws about one
    #: useful error per connection; well above that, errors are only cost
    RATE = 1000.0  # per second
    BURST = 200

    def __init__(self, counters: Dict[str, int], rate: float = RATE, burst: int = BURST) -> None:
        self.counters = counters
        self.bucket = TokenBucket(rate, burst)

    def admit(self, now: int) -> bool:
        """Step 1: the rate limit (before any parsing)."""
        if self.bucket.allow(now):
            return True
        self.counters["icmp_drop_rate_limited"] += 1
        return False

    def parse(self, packet: bytes, verify_checksum: bool = False) -> Optional[IcmpError]:
        try:
            err = parse_icmp_error(packet, verify_checksum)
        except IcmpReject as exc:
            self.counters[exc.reason] += 1
            return None
        if err.dst != err.quoted_src:
            self.counters["icmp_drop_wrong_destination"] += 1
            return None
        return err

    def validate(self, err: IcmpError, leg) -> bool:
        """Step 4 for one leg: its own 4-tuple, and an in-flight SEQ."""
        if (err.quoted_src, err.quoted_sport, err.quoted_dst, err.quoted_dport) != (
                leg.local_addr, leg.local_port, leg.remote_addr, leg.remote_port):
            self.counters["icmp_drop_wrong_tuple"] += 1
            return False
        if not leg.icmp_quote_acceptable(err.quoted_seq):
            self.counters["icmp_drop_stale_seq"] += 1
            return False
        return True
