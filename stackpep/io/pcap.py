"""Capturing what the box sees: every IP packet a port captures or emits, to pcapng.

Three layers, each knowing only its own job:

- `PcapngWriter` is sans-IO: it turns (interface, time, packet, direction) into
  pcapng blocks (bytes) and knows nothing of files or clocks;
- `RotatingPcap` owns the files: FILE, then FILE.1 ... FILE.<files-1>, each at
  most `max_bytes`, the oldest removed, every file a complete pcapng section
  (its own Section Header and Interface Description Blocks) that Wireshark and
  tshark open on its own;
- `PcapTap` wraps a `PacketPort`: what its `receive_batch()` returns is written
  as inbound, what its `send()` is handed as outbound, one timestamp per batch.
  It exists only when capture is on (stackpep.pep.api), so a box that does not
  capture pays nothing: no branch, no attribute check.

Format (draft-ietf-opsawg-pcapng, "PCAP Now Generic"): one set of files per
interface (`interface_path`: FILE with the interface name inserted), since
both legs of a split connection carry the same addresses and ports and a
reader's TCP analysis would mix them up in one file; in it one Interface
Description Block (§4.2) with LINKTYPE_RAW (101: the packet starts with the
IPv4 or IPv6 header, as the capture ring hands it over without its Ethernet
header), each packet an Enhanced Packet Block (§4.3) whose epb_flags option
(§4.3.1) says inbound or outbound.  `mergecap` makes one file of them, with
the interface and direction of each packet kept.
"""
from __future__ import annotations

import logging
import os
import struct
import time
from typing import Dict, List, Optional, Sequence, Tuple

from stackpep.io.ports import Batch, PacketPort

log = logging.getLogger("stackpep.pcap")

__all__ = ["PcapngWriter", "RotatingPcap", "PcapTap", "LINKTYPE_RAW", "INBOUND", "OUTBOUND",
           "DEFAULT_MAX_BYTES", "DEFAULT_FILES", "MIN_MAX_BYTES", "rotated_names", "path_problem",
           "interface_path", "tap_ports"]

# ------------------------------------------------------------------ constants
# Block types (draft-ietf-opsawg-pcapng §4.1 SHB, §4.2 IDB, §4.3 EPB).
BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D       # §4.1: written in the writer's byte order (little-endian here)
# Option codes: common (§3.5), SHB (§4.1), IDB (§4.2), EPB (§4.3).
OPT_ENDOFOPT = 0
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
EPB_FLAGS = 2
# epb_flags bits 0-1: inbound/outbound direction (§4.3.1).
INBOUND = 1
OUTBOUND = 2
LINKTYPE_RAW = 101                  # tcpdump.org link types: raw IPv4/IPv6
MAX_SNAPLEN = 262144                # what tcpdump and Wireshark take as "the whole packet"

EPB_FIXED = 28                      # type, length, interface id, ts high/low, captured and original length
EPB_OPTIONS = 8 + 4                 # epb_flags (4 + 4 bytes) and opt_endofopt
EPB_OVERHEAD = EPB_FIXED + EPB_OPTIONS + 4   # + the trailing length

DEFAULT_MAX_BYTES = 64 << 20        # capture.pcap_max_bytes
DEFAULT_FILES = 4                   # capture.pcap_files
MIN_MAX_BYTES = 65536

_EPB_HEAD = struct.Struct("<IIIIIII")
_EPB_TAIL = struct.Struct("<HHIHHI")  # epb_flags option, opt_endofopt, trailing length


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _option(code: int, value: bytes) -> bytes:
    # §3.5: code, length, value padded to 32 bits.
    return struct.pack("<HH", code, len(value)) + value + b"\0" * _pad4(len(value))


def _block(btype: int, body: bytes) -> bytes:
    # §3.1: type, total length, body (a multiple of 4 bytes), total length again.
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


# --------------------------------------------------------------------- writer
class PcapngWriter:
    """pcapng blocks for a fixed list of interfaces; sans-IO (bytes out, time in).

    `interfaces` is [(name, description)]; interface ids are their positions.
    Timestamps are integer microseconds since the epoch (if_tsresol 6, the
    default, written anyway so readers need not assume it)."""

    def __init__(self, interfaces: Sequence[Tuple[str, str]], snaplen: int = MAX_SNAPLEN,
                 application: str = "") -> None:
        if not interfaces:
            raise ValueError("at least one interface")
        if snaplen < 64:
            raise ValueError(f"snaplen {snaplen} is too small to hold an IP and TCP header")
        self.interfaces = list(interfaces)
        self.snaplen = snaplen
        if not application:
            from stackpep import __version__

            application = f"stackpep {__version__}"
        self.application = application

    def header(self) -> bytes:
        """What every file starts with: the Section Header Block and one
        Interface Description Block per interface."""
        shb = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)  # version 1.0, section length unknown
        shb += _option(SHB_USERAPPL, self.application.encode()) + _option(OPT_ENDOFOPT, b"")
        out = [_block(BT_SHB, shb)]
        for name, desc in self.interfaces:
            idb = struct.pack("<HHI", LINKTYPE_RAW, 0, self.snaplen)
            idb += _option(IF_NAME, name.encode())
            if desc:
                idb += _option(IF_DESCRIPTION, desc.encode())
            idb += _option(IF_TSRESOL, b"\x06") + _option(OPT_ENDOFOPT, b"")
            out.append(_block(BT_IDB, idb))
        return b"".join(out)

    def packet(self, if_id: int, ts_us: int, data: bytes, direction: int) -> bytes:
        """One Enhanced Packet Block; a packet longer than the snaplen is cut to
        it (captured length < original length, as `tcpdump -s` does)."""
        orig = len(data)
        cap = min(orig, self.snaplen)
        if cap < orig:
            data = data[:cap]
        pad = _pad4(cap)
        total = EPB_OVERHEAD + cap + pad
        return b"".join((
            _EPB_HEAD.pack(BT_EPB, total, if_id, (ts_us >> 32) & 0xFFFFFFFF, ts_us & 0xFFFFFFFF, cap, orig),
            data, b"\0" * pad,
            _EPB_TAIL.pack(EPB_FLAGS, 4, direction, OPT_ENDOFOPT, 0, total),
        ))

    def block_len(self, n: int) -> int:
        cap = min(n, self.snaplen)
        return EPB_OVERHEAD + cap + _pad4(cap)


# ---------------------------------------------------------------------- files
def rotated_names(path: str, files: int) -> List[str]:
    """FILE, FILE.1, ... FILE.<files-1>: newest first."""
    return [path] + [f"{path}.{i}" for i in range(1, files)]


def path_problem(path: str) -> Optional[str]:
    """Why the box could not write `path` and its rotated siblings, or None."""
    if not os.path.isabs(path):
        return f"must be an absolute path, got {path!r}"
    if path.endswith("/") or os.path.isdir(path):
        return f"{path!r} is a directory; give a file name in it"
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        return f"directory {d!r} does not exist"
    if not os.access(d, os.W_OK | os.X_OK):
        return f"directory {d!r} is not writable (the files rotate by renaming in it)"
    for name in rotated_names(path, 2):
        # rotation renames: a device node (/dev/null), FIFO or socket must never be moved
        if os.path.exists(name) and not os.path.isfile(name):
            return f"{name!r} is not a regular file (the capture files rotate by renaming)"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path!r} exists and is not writable"
    return None


class RotatingPcap:
    """pcapng files bounded in size: FILE is written until the next block would
    make it larger than `max_bytes`; then FILE.<files-2> becomes FILE.<files-1>
    (the oldest is replaced), ... FILE becomes FILE.1, and a new FILE starts with
    its own header.  Starting rotates too, so a previous run's capture survives
    as FILE.1 (within the same bound).  At most `files` × `max_bytes` bytes on disk.

    One write(2) per batch (the file is unbuffered): what a batch held is on disk
    when `write()` returns, so `tshark -r` on a running box sees it.

    A write that fails (disk full) stops the capture -- never the box: it is
    counted in `pcap_write_errors` and logged once."""

    def __init__(self, path: str, interfaces: Sequence[Tuple[str, str]], max_bytes: int = DEFAULT_MAX_BYTES,
                 files: int = DEFAULT_FILES) -> None:
        if files < 1:
            raise ValueError("files must be >= 1")
        for name in rotated_names(path, files):
            if os.path.exists(name) and not os.path.isfile(name):
                raise ValueError(f"{name!r} is not a regular file (the capture files rotate by renaming)")
        self.path = path
        self.files = files
        self.max_bytes = max_bytes
        probe = PcapngWriter(interfaces)
        hlen = len(probe.header())
        # A block must fit an empty file: the snaplen follows from the size bound.
        snaplen = min(MAX_SNAPLEN, (max_bytes - hlen - EPB_OVERHEAD) & ~3)
        if snaplen < 64:
            raise ValueError(f"max_bytes {max_bytes} leaves no room for a packet after the {hlen}-byte header")
        self.writer = PcapngWriter(interfaces, snaplen=snaplen, application=probe.application)
        self._header = self.writer.header()
        self.counters: Dict[str, int] = {"pcap_packets": 0, "pcap_bytes": 0, "pcap_truncated": 0,
                                         "pcap_rotations": 0, "pcap_write_errors": 0, "pcap_lost": 0}
        self._fd: Optional[int] = None
        self._size = 0
        self._open(rotate=True)

    # -- files -------------------------------------------------------------------
    def _open(self, rotate: bool) -> None:
        if rotate:
            names = rotated_names(self.path, self.files)
            for i in range(len(names) - 1, 0, -1):
                if os.path.exists(names[i - 1]):
                    os.replace(names[i - 1], names[i])  # replaces (removes) the oldest
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        self._size = 0
        self._write(self._header)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)
        self.counters["pcap_bytes"] += len(data)

    def _fail(self, exc: OSError, lost: int) -> None:
        self.counters["pcap_write_errors"] += 1
        self.counters["pcap_lost"] += lost
        log.error("packet capture to %s stopped: %s (the box goes on without it)", self.path, exc)
        self.close()

    @property
    def closed(self) -> bool:
        return self._fd is None

    # -- packets -----------------------------------------------------------------
    def write(self, if_id: int, direction: int, packets: Sequence[bytes], ts_us: int) -> None:
        """Write one batch of one interface, all at time `ts_us` (µs since the epoch)."""
        if self._fd is None:
            return
        w = self.writer
        pending: List[bytes] = []
        size = self._size
        written = cut = 0
        try:
            for p in packets:
                blk = w.packet(if_id, ts_us, p, direction)
                if size + len(blk) > self.max_bytes and size > len(self._header):
                    self._write(b"".join(pending))
                    written += len(pending)
                    pending = []
                    os.close(self._fd)
                    self._fd = None
                    self._open(rotate=True)
                    self.counters["pcap_rotations"] += 1
                    size = self._size
                pending.append(blk)
                size += len(blk)
                if len(p) > w.snaplen:
                    cut += 1
            self._write(b"".join(pending))
            written += len(pending)
        except OSError as exc:
            self.counters["pcap_packets"] += written
            self._fail(exc, len(packets) - written)
            return
        self.counters["pcap_packets"] += written
        self.counters["pcap_truncated"] += cut

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None


# ------------------------------------------------------------------------ tap
class PcapTap(PacketPort):
    """A port that writes what passes through it, then hands it on unchanged.

    Inbound: what `receive_batch()` returns (TCP segments and the ICMP errors
    the capture took, as the ring gives them: GRO super-frames of up to 64 KiB,
    checksums completed).  Outbound: every packet handed to `send()`, before the
    capture module merges runs of segments into GSO super-frames -- the
    segments as they will be on the wire, including any the device then refuses
    (counted in the port's tx_* counters)."""

    def __init__(self, port: PacketPort, pcap: RotatingPcap, if_id: int, clock=time.time_ns) -> None:
        self.port = port
        self.name = port.name
        self.client_side = port.client_side
        self.pcap = pcap
        self.if_id = if_id
        self._clock = clock

    def __getattr__(self, attr):  # ifindex, ring, ... of the port underneath
        if attr == "port":
            raise AttributeError(attr)
        return getattr(self.port, attr)

    async def receive_batch(self) -> Batch:
        batch = await self.port.receive_batch()
        self.pcap.write(self.if_id, INBOUND, [b[1] for b in batch], self._clock() // 1000)
        return batch

    def poll_batch(self) -> Batch:
        batch = self.port.poll_batch()
        if batch:
            self.pcap.write(self.if_id, INBOUND, [b[1] for b in batch], self._clock() // 1000)
        return batch

    def wait_fd(self):
        return self.port.wait_fd()

    def pending(self) -> bool:
        return self.port.pending()

    def rx_bytes(self) -> int:
        return self.port.rx_bytes()

    def send(self, packets: List[bytes], hop) -> int:
        self.pcap.write(self.if_id, OUTBOUND, packets, self._clock() // 1000)
        return self.port.send(packets, hop)

    def defer(self) -> None:
        self.port.defer()

    def flush(self) -> int:
        return self.port.flush()

    def statistics(self) -> Dict[str, int]:
        st = dict(self.port.statistics())
        st.update(self.pcap.counters)
        return st

    def close(self) -> None:
        try:
            self.port.close()
        finally:
            self.pcap.close()

    def hold_failed_sends(self) -> None:
        self.port.hold_failed_sends()

    async def retry_held(self, deadline: float) -> int:
        return await self.port.retry_held(deadline)


def interface_path(path: str, ifname: str) -> str:
    """FILE with the interface name inserted before its extension:
    /var/tmp/pep.pcapng -> /var/tmp/pep.eth0.pcapng (no extension: pep -> pep.eth0)."""
    head, name = os.path.split(path)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return os.path.join(head, f"{name}.{ifname}")
    return os.path.join(head, f"{stem}.{ifname}.{ext}")


def tap_ports(ports: Sequence[PacketPort], path: str, max_bytes: int = DEFAULT_MAX_BYTES,
              files: int = DEFAULT_FILES) -> List[PcapTap]:
    """Wrap every port, each with its own set of files (`interface_path`):
    one interface a file keeps tshark's TCP analysis right, since both legs of a
    split connection carry the same addresses and ports."""
    taps: List[PcapTap] = []
    try:
        for p in ports:
            pcap = RotatingPcap(interface_path(path, p.name),
                                [(p.name, f"stackpep {'client' if p.client_side else 'server'} side")],
                                max_bytes=max_bytes, files=files)
            taps.append(PcapTap(p, pcap, 0))
    except BaseException:
        for t in taps:
            t.pcap.close()
        raise
    return taps
