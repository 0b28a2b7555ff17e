"""Wire layer, Python face: errors, counters, validated Reprs, vector files.

The fast path (views, parse_ip_tcp/emit_ip_tcp) is in stackpep._fast.wire; the
Reprs here build on the same C parsers, so a rejection is found, named and
counted in one place.
"""
from stackpep._fast.wire import (  # noqa: F401
    EthernetFrame,
    Ipv4Packet,
    Ipv6Packet,
    Segment,
    TcpSegment,
    check_packet,
    parse_frame,
    parse_many,
    parse_packet,
    parse_ptb,
    parse_ptb_ex,
    plateau_mtu,
)
from stackpep.wire.counters import counters  # noqa: F401
from stackpep.wire.errors import IntegrityError, SanityError, WireError  # noqa: F401
from stackpep.wire.reprs import (  # noqa: F401
    CSUM_BAD,
    CSUM_GOOD,
    CSUM_PARTIAL,
    CSUM_UNCHECKED,
    EthernetRepr,
    IcmpPtbRepr,
    Ipv4Repr,
    Ipv6ExtHeader,
    Ipv6Repr,
    ScpsCapabilities,
    TcpFlags,
    TcpOptions,
    TcpRepr,
    parse_frame_repr,
    parse_ip_tcp_repr,
)
