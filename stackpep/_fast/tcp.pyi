"""Stub for stackpep._fast.tcp: the sans-IO TCP engine (RFC 9293 and friends).

Cython code can use the C-level API declared in tcp.pxd instead:
``receive_seg(&seg, pkt, now)`` with a segment parsed by the wire layer and
``output_into(buf, cap, now)`` writing the next packet into a caller buffer.

Times are integer microseconds passed in by the caller; the engine never reads
a clock, opens a socket or draws random numbers (the ISN comes in).
"""
from typing import Optional, Union

from stackpep.tcp.config import TcpConfig
from stackpep.tcp.events import TcpEvent
from stackpep.tcp.states import TcpState
from stackpep.tcp.statistics import TcpStatistics

Buffer = Union[bytes, bytearray, memoryview]

#: RFC 9293 §3.3.2 state names, as the RFC spells them
STATES: tuple[str, ...]
#: names of the drop counters, in counter order (the same object as
#: stackpep.tcp.statistics.DROP_REASONS)
DROP_NAMES: tuple[str, ...]

def set_strict_transitions(on: bool) -> None:
    """Raise AssertionError on a state change not in stackpep.tcp.states.TRANSITIONS
    (default: refuse and count it; STACKPEP_TCP_STRICT=1 turns it on at import)."""
def transitions_seen() -> frozenset[tuple[TcpState, TcpState]]:
    """Every (from, to) pair some connection of this process went through."""
def reset_transitions_seen() -> None: ...
def siphash_2_4(key: bytes, msg: bytes) -> bytes:
    """SipHash-2-4 of msg under a 16-byte key: the reference's 8 output bytes."""
def fast_open_cookie(key: bytes, client_addr: bytes, server_addr: bytes) -> bytes:
    """The 8-byte TCP Fast Open cookie (RFC 7413) the engine sends / accepts for these
    addresses under TcpConfig.tfo_key: SipHash-2-4 of client_addr || server_addr."""

class CongestionControl:
    """Base of the congestion controllers (hooks are C-level, see tcp.pxd / cc.pxi)."""

class NewReno(CongestionControl):
    """RFC 5681 / RFC 6582."""

class Cubic(CongestionControl):
    """RFC 9438."""

class RateBased(CongestionControl):
    """SCPS-TP rate control (CCSDS 714.0-B-2, notes "Congestion control modes (reference gateway)",
    reference gateway mode 0): paced at a configured rate counted on IP bytes; cwnd never limits."""

class Vegas(CongestionControl):
    """TCP Vegas (Brakmo & Peterson 1995; CCSDS 714.0-B-2, notes "Congestion control modes (reference gateway)"):
    delay-based, keeps alpha..beta segments queued in the path."""

class SharedRate:
    """One rate divided between the active connections whose TcpConfig.rate_share
    is this object; owned by whoever creates the engines (the PEP dispatcher)."""
    def __init__(self, rate_bps: int) -> None: ...
    @property
    def rate_bps(self) -> int: ...
    @property
    def now(self) -> int: ...
    @property
    def n_active(self) -> int: ...
    #: active members in the box's other worker processes (stackpep.pep.workers)
    others_active: int
    @property
    def members_count(self) -> int: ...

RateShare = SharedRate

def buffer_statistics() -> dict[str, int]:
    """Send/receive buffer storage of every engine of the process: bytes and chunks
    held, chunk_size, pool_chunks (free, kept for reuse), chunks_allocated and
    chunks_freed (taken from / given back to malloc so far)."""
def release_memory() -> int:
    """Free the pooled chunks and return free heap pages to the kernel
    (malloc_trim); returns the bytes of chunks freed."""

def rate_share(name: str, rate_bps: int) -> SharedRate:
    """The SharedRate for (name, rate_bps) in a weak registry: created on first use,
    forgotten when no connection holds it (TcpConfig.rate_share given as a name)."""
def named_shares_count() -> int: ...

class _IntervalSet:
    """Test-only face of the engine's interval set (ivset.pxi)."""
    CAPACITY: int  # intervals a set holds (IVSET_MAX)
    def add(self, l: int, r: int) -> bool: ...
    def merge_front(self, edge: int) -> tuple[bool, int]: ...
    def trim_below(self, edge: int) -> int: ...
    def total(self) -> int: ...
    def covered(self, a: int, b: int) -> int: ...
    def skip(self, off: int) -> int: ...
    def next_start(self, off: int) -> int: ...
    def items(self) -> list[tuple[int, int]]: ...
    def ages(self) -> list[int]: ...
    def __len__(self) -> int: ...

class TcpConnection:
    def __init__(self, config: TcpConfig, local_addr: bytes, local_port: int,
                 remote_addr: bytes, remote_port: int, iss: int, ts_offset: int = 0) -> None:
        """One connection.  Addresses are 4 (IPv4) or 16 (IPv6) bytes; ``iss`` is
        the initial send sequence number; ``ts_offset`` is added to our RFC 7323
        timestamp clock (1 ms ticks of ``now``)."""
    # -- opening / closing ---------------------------------------------------
    def connect(self, now: int, scps_offer: bool = True, fast_open: bool = True) -> None:
        """Active open: CLOSED -> SYN-SENT (the SYN leaves on packets_to_send).  With
        TcpConfig.tfo_client (and fast_open) the SYN carries the Fast Open cookie and
        the data sent so far (RFC 7413 §4.2)."""
    def listen(self) -> None:
        """Passive open: CLOSED -> LISTEN; then feed the peer's SYN."""
    def send_eof(self) -> None:
        """Half-close: FIN after all queued data (RFC 9293 §3.10.4)."""
    def abort(self) -> None:
        """RST now (in synchronized states) and go to CLOSED (RFC 9293 §3.10.5)."""
    # -- SCPS-TP (CCSDS 714.0-B-2, docs/scps.md) ----------------------------
    def report_corruption(self) -> bool:
        """Next ACK carries corruption-experienced (kind 23) if negotiated and configured."""
    @property
    def scps_peer(self) -> bool:
        """The peer answered option 20."""
    @property
    def scps_features(self) -> int:
        """Capability bits both ends offered (0 without an SCPS peer)."""
    @property
    def scps_peer_conn_id(self) -> Optional[int]: ...
    # -- inputs ----------------------------------------------------------------
    def receive_packet(self, packet: Buffer, now: int, checked: bool = False) -> None:
        """An IP packet (v4/v6, checksums verified here unless `checked`: the caller
        or the kernel verified them) carrying TCP for this connection."""
    def handle_timer(self, now: int) -> None:
        """Process every timer due at ``now`` (call at/after get_timer())."""
    def icmp_packet_too_big(self, mtu: int, now: int, quoted_seq: Optional[int] = None) -> bool:
        """RFC 1191 / RFC 8201 path-MTU reduction; with ``quoted_seq`` (the SEQ in the
        ICMP quote) the report is used only if it lies in flight (RFC 5927 §4.1).
        Returns whether the path MTU was lowered."""
    def icmp_quote_acceptable(self, quoted_seq: int) -> bool:
        """RFC 5927 §4.1: the SEQ quoted by an ICMP error lies in SND.UNA..SND.NXT."""
    # -- application data ------------------------------------------------------------
    def send(self, data: Buffer) -> int:
        """Copy up to len(data) bytes into the bounded send buffer; returns how many
        (0 after send_eof; ConnectionError once the connection reached CLOSED)."""
    def send_space(self) -> int:
        """Free bytes in the send buffer (0 after send_eof/abort or when closed)."""
    def recv(self, max_bytes: int) -> bytes:
        """Up to max_bytes readable bytes (b'' when none; see recv_available/at_eof)."""
    def relay_to(self, dst: "TcpConnection", chunk: int) -> int:
        """Move readable bytes straight into dst's send buffer (as many as it takes, pieces of <= chunk)."""
    def recv_into(self, buffer: Union[bytearray, memoryview]) -> int:
        """Like recv(), into a caller buffer; returns bytes copied."""
    def recv_available(self) -> int:
        """Bytes recv() would return now."""
    def at_eof(self) -> bool:
        """The peer's FIN arrived and every byte before it was read."""
    # -- outputs --------------------------------------------------------------------------
    def packets_to_send(self, now: int) -> list[bytes]:
        """IP packets to transmit now (checksums filled), in order."""
    def next_event(self) -> Optional[TcpEvent]: ...
    def next_event_not_flow(self) -> Optional[TcpEvent]:
        """next_event() passing over DataReadable and SendSpace."""
    def get_timer(self) -> Optional[int]:
        """Next deadline in µs, or None."""
    def statistics(self) -> TcpStatistics: ...
    # -- policy hooks -----------------------------------------------------------------
    def set_congestion_control(self, cc: CongestionControl) -> None:
        """Replace the controller; the new one starts from the current cwnd/ssthresh."""
    def set_loss_response(self, policy: str) -> None:
        """'congestion' (RFC 5681) or 'corruption' (retransmit, keep cwnd: SCPS-TP)."""
    # -- read-only attributes -------------------------------------------------------------
    @property
    def state(self) -> str:
        """RFC 9293 spelling: 'LISTEN', 'SYN-SENT', 'SYN-RECEIVED', 'ESTABLISHED', ..."""
    @property
    def tcp_state(self) -> TcpState:
        """The state as an IntEnum (stackpep.tcp.states.TcpState)."""
    def may_send(self) -> bool:
        """send() takes data that will be sent: SYN-SENT, SYN-RECEIVED, ESTABLISHED,
        CLOSE-WAIT, before send_eof()."""
    def may_recv(self) -> bool:
        """The peer may still send data: ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2."""
    def _try_set_state(self, new: TcpState) -> bool:
        """Test hook: a state change through the checked writer; whether it was taken."""
    @property
    def config(self) -> TcpConfig: ...
    @property
    def local_addr(self) -> bytes: ...
    @property
    def local_port(self) -> int: ...
    @property
    def remote_addr(self) -> bytes: ...
    @property
    def remote_port(self) -> int: ...
    @property
    def iss(self) -> int: ...
    @property
    def irs(self) -> Optional[int]:
        """The peer's initial sequence number once known."""
    @property
    def send_buffered(self) -> int:
        """Bytes in the send buffer (unacknowledged + unsent)."""
    @property
    def buffer_bytes(self) -> int:
        """Buffer storage held now: whole chunks of the send and receive buffers
        (and their chunk tables) while data is queued or unread; 0 when both are empty."""

#: split_turn's outcomes
TURN_DONE: int  # the whole turn ran
TURN_AFTER_TIMERS: int  # only the timers ran: an event or a state change for the caller's own path
TURN_AFTER_OUTPUT: int  # relay and output ran; events came up after the output

def split_turn(client: TcpConnection, server: TcpConnection, now: int, last_activity: int, idle_us: int,
               slack: int, chunk: int,
               grid: int) -> Optional[tuple[int, Optional[list[bytes]], Optional[list[bytes]], int, int, Optional[int]]]:
    """One turn of a split connection whose legs are both ESTABLISHED, in one call
    (stackpep.pep.splitter.SplitConnection.turn): timers, relay both ways, each leg's
    packets and the next wake-up rounded up to grid; None when not the plain case
    (nothing done).  Returns (outcome, client packets, server packets, bytes moved
    client -> server, server -> client, wake-up)."""
