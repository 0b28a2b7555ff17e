"""handshake.mode = "syn-cookie": the client leg proves the client is real
before the server leg opens (RFC 4987 §3.6).

A SYN for a new flow gets a SYN-ACK whose ISN is a cookie
(`stackpep._fast.syncookie.SynCookies`: SipHash-2-4 under a per-box secret,
a 64 s counter, MSS index, window scale, SACK-permitted and timestamps) and the
box keeps nothing.  A later non-SYN segment of an unknown flow whose ACK - 1 is
a valid cookie for its 4-tuple and SEQ - 1 proves the client saw our SYN-ACK
from its own address: only then does the dispatcher open the split connection,
whose client leg is established from the cookie at once and whose server leg
opens then.  Spoofed SYNs cost the box one SYN-ACK each and open nothing.

Both the stateless SYN-ACK and the established client leg come from the same
engine (`TcpConnection`, the client leg's `TcpConfig`, ISS = the cookie) fed
the same canonical SYN (`canonical_syn`: only what the cookie keeps, MSS
rounded down to `MSS_TABLE`), so what the client was told (MSS, window scale,
SACK, timestamps; TSval from the engine's own clock, so the client's TSecr
gives a true RTT sample) is what the leg believes it said.  Not kept: ECN
(RFC 3168) and SCPS capabilities are not offered on a cookie connection.

Trade-off (like `immediate`): the client's connection is established before
the server is asked; a server that refuses or stays silent makes the box reset
the client's established connection, and the client's first data waits in the
client leg until the server leg is up.

Sans-IO: the secret and `now` (int µs) come in.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from stackpep._fast.syncookie import MSS_TABLE, SynCookies
from stackpep._fast.wire import Segment, parse_packet

TH_SYN, TH_RST, TH_ACK = 0x02, 0x04, 0x10

SYNCOOKIE_COUNTERS = (
    "syncookies_sent",  # SYN-ACKs carrying a cookie (no state kept)
    "syncookies_valid",  # ACKs whose cookie verified: a split connection opened
    "syncookie_drop_invalid",  # ACK of an unknown flow whose ACK - 1 is no cookie of ours (then: unknown flow)
    "syncookie_drop_expired",  # ... a cookie of ours, older than MAX_AGE periods
    "syncookie_drop_lookups_pending",  # SYN not answered: too many answers wait for a route lookup
)

__all__ = ["CookieGate", "SYNCOOKIE_COUNTERS", "canonical_syn", "MSS_TABLE"]


def canonical_syn(client: bytes, server: bytes, cport: int, sport: int, isn: int, window: int, mss: int,
                  wscale: Optional[int], sack_perm: bool, tsval: Optional[int]) -> bytes:
    """The client's SYN as the cookie remembers it (RFC 9293 §3.1 header,
    RFC 7323 / RFC 2018 options)."""
    s = Segment()
    s.ip_version = 4 if len(client) == 4 else 6
    s.src, s.dst, s.sport, s.dport = client, server, cport, sport
    s.flags, s.seq, s.ack, s.window, s.ttl = TH_SYN, isn, 0, min(window, 0xFFFF), 64
    s.mss = mss
    s.wscale = wscale
    s.sack_perm = sack_perm
    s.ts = (tsval, 0) if tsval is not None else None
    return s.to_bytes()


def _rounded_mss(mss: Optional[int], ipv6: bool) -> int:
    # RFC 9293 §3.7.1: no MSS option means 536 (IPv4) / 1220 (IPv6, RFC 8200 §5)
    m = mss if mss is not None else (1220 if ipv6 else 536)
    best = MSS_TABLE[0]
    for v in MSS_TABLE:
        if v <= m:
            best = v
    return best


class CookieGate:
    """Stateless SYN-ACKs and the check of the ACK that returns a cookie."""

    def __init__(self, secret: bytes, counters: Dict[str, int]) -> None:
        self.cookies = SynCookies(secret)
        self.counters = counters

    def answer(self, syn: bytes, leg_config: Any, now: int) -> Optional[bytes]:
        """The SYN-ACK (an IP packet) answering the client's SYN, ISN = cookie."""
        from stackpep._fast.tcp import TcpConnection

        seg = parse_packet(syn, 0)
        ipv6 = seg.ip_version == 6
        mss = _rounded_mss(seg.mss, ipv6)
        tsval = seg.ts[0] if seg.ts is not None else None
        cookie = self.cookies.make(seg.src, seg.dst, seg.sport, seg.dport, seg.seq, mss, seg.wscale,
                                   seg.sack_perm, tsval is not None, now)
        canon = canonical_syn(seg.src, seg.dst, seg.sport, seg.dport, seg.seq, seg.window, mss, seg.wscale,
                              seg.sack_perm, tsval)
        # The engine the client leg will be, answering; then forgotten.
        conn = TcpConnection(leg_config, seg.dst, seg.dport, seg.src, seg.sport, cookie)
        conn.listen()
        conn.receive_packet(canon, now)
        pkts = conn.packets_to_send(now)
        if not pkts:
            return None
        self.counters["syncookies_sent"] += 1
        return pkts[0]

    def verify(self, packet: bytes, now: int) -> Optional[Tuple[int, bytes]]:
        """For a segment of an unknown flow: (our ISS, the canonical SYN) if its
        ACK returns a valid cookie, else None (counted)."""
        seg = parse_packet(packet, 0)
        if not seg.flags & TH_ACK or seg.flags & (TH_SYN | TH_RST):
            return None
        iss = (seg.ack - 1) & 0xFFFFFFFF
        isn = (seg.seq - 1) & 0xFFFFFFFF
        got = self.cookies.check(seg.src, seg.dst, seg.sport, seg.dport, isn, iss, now)
        if isinstance(got, str):
            self.counters[f"syncookie_drop_{got}"] += 1
            return None
        mss, wscale, sack_perm, ts = got
        tsval = seg.ts[0] if ts and seg.ts is not None else None
        window = seg.window << (wscale or 0)  # RFC 7323 §2.3: scaled in every non-SYN segment
        canon = canonical_syn(seg.src, seg.dst, seg.sport, seg.dport, isn, window, mss, wscale, sack_perm, tsval)
        self.counters["syncookies_valid"] += 1
        return iss, canon
