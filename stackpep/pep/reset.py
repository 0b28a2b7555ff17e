"""Resets the splitter sends on behalf of nobody: for a SYN whose server refused
(the client must see what it would see without a proxy) and for segments of a
flow the splitter does not know.

RFC 9293 §3.10.7.1 (CLOSED state): if the incoming segment has ACK,
<SEQ=SEG.ACK><CTL=RST>; else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, where
SYN and FIN count in SEG.LEN.  A segment carrying RST gets no answer.
"""
from __future__ import annotations

import struct
from typing import Optional

from stackpep._fast.checksum import internet_checksum, pseudo_header_sum

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10


def _tcp_of(packet: bytes):
    v = packet[0] >> 4
    if v == 4:
        ihl = (packet[0] & 15) * 4
        total = int.from_bytes(packet[2:4], "big")
        return 4, packet[12:16], packet[16:20], packet[ihl:total]
    if v == 6:
        plen = int.from_bytes(packet[4:6], "big")
        return 6, packet[8:24], packet[24:40], packet[40:40 + plen]
    raise ValueError("not an IP packet")


def reset_for(packet: bytes, ttl: int = 64) -> Optional[bytes]:
    """The RST answering `packet` (an IP packet carrying TCP), or None for a RST."""
    v, src, dst, tcp = _tcp_of(packet)
    if len(tcp) < 20:
        raise ValueError("truncated TCP header")
    sport, dport, seq, ack = struct.unpack("!HHII", tcp[:12])
    doff = (tcp[12] >> 4) * 4
    flags = tcp[13]
    if flags & TH_RST:
        return None
    seglen = len(tcp) - doff + (1 if flags & TH_SYN else 0) + (1 if flags & TH_FIN else 0)
    if flags & TH_ACK:
        r_seq, r_ack, r_flags = ack, 0, TH_RST
    else:
        r_seq, r_ack, r_flags = 0, (seq + seglen) & 0xFFFFFFFF, TH_RST | TH_ACK
    hdr = bytearray(struct.pack("!HHIIBBHHH", dport, sport, r_seq, r_ack, 5 << 4, r_flags, 0, 0, 0))
    csum = internet_checksum(bytes(hdr), pseudo_header_sum(bytes(dst), bytes(src), 6, 20))
    hdr[16:18] = csum.to_bytes(2, "big")
    if v == 4:
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, ttl, 6, 0, bytes(dst), bytes(src)))
        ip[10:12] = internet_checksum(bytes(ip)).to_bytes(2, "big")
    else:
        ip = bytearray(struct.pack("!IHBB16s16s", 6 << 28, 20, 6, ttl, bytes(dst), bytes(src)))
    return bytes(ip + hdr)
