"""AF_PACKET TPACKET_V3 receive ring and batched sendmmsg() emit (see capture.pyx)."""
from typing import Any, Dict, List, Optional, Tuple, Union

from stackpep._fast.scpshc import HcTable
from stackpep._fast.tcp import TcpConnection

class CaptureError(OSError): ...

#: the PACKET_FANOUT_CBPF program: (code, jt, jf, k) per instruction
FANOUT_PROGRAM: Tuple[Tuple[int, int, int, int], ...]

#: the flags value read_batch() gives an ICMP error (its key is the quoted flow's)
ICMP_ERROR: int
#: the flag read_batch() adds to a segment that arrived as an SCPS compressed header (expanded)
HC_EXPANDED: int

class FastFlows:
    """Flow key -> the engines of a split connection's opened legs: a ring read
    with it hands those flows' segments to the engine in C (capture.pyx)."""
    fast_packets: int
    def set_leg(self, key: bytes, conn: Any, client_side: bool, engine: TcpConnection) -> None: ...
    def discard(self, key: bytes, conn: Any = None) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def take(self) -> Tuple[int, List[Any], List[Tuple[Any, BaseException]]]:
        """(packets handed to engines, connections that took them, each once,
        (connection, exception) whose engine raised) since the last take()."""
    def filter(self, batch: List[Tuple[bytes, bytes, int]], client_side: bool,
               now: int) -> List[Tuple[bytes, bytes, int]]:
        """The same choice over a batch of tuples: the rest, in order."""

class PacketRing:
    ifindex: int
    ifname: str
    client_side: bool
    def __init__(self, ifname: str, client_side: bool = True, block_size: int = 262144,
                 block_nr: int = 64, retire_ms: int = 1, mark: int = 0,
                 tcp_filter: bool = True, gso: bool = False, icmp_errors: bool = True,
                 hc_table: Optional[HcTable] = None,
                 fanout_group: Union[None, int, str] = None) -> None:
        """fanout_group: None (no fanout), "new" (start a PACKET_FANOUT group; the
        kernel picks its id, read it from .fanout_group) or the id of a group to join."""
    gso: bool
    tx_calls: int
    fanout_group: int
    def resync(self) -> int: ...
    hc_table: Optional[HcTable]
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> "PacketRing": ...
    def __exit__(self, *exc: object) -> None: ...
    def pending(self) -> bool: ...
    def filling(self) -> bool: ...
    def read_batch(self, max_blocks: int = 16, fast: Optional[FastFlows] = None,
                   now: int = 0) -> List[Tuple[bytes, bytes, int]]: ...
    def send_batch(self, packets: List[bytes], macs: bytes) -> int: ...
    def kernel_statistics(self) -> Tuple[int, int, int]: ...
    def statistics(self) -> Dict[str, int]: ...

def flow_key(client_addr: bytes, client_port: int, server_addr: bytes, server_port: int) -> bytes: ...
def split_key(key: bytes) -> Tuple[bytes, int, bytes, int]: ...
def complete_checksum(packet: bytearray) -> None: ...
def icmp_error_key(packet: bytes, client_side: bool) -> Optional[bytes]:
    """The key read_batch() gives an ICMP error (None if the capture drops it)."""
