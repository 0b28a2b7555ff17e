"""Each veth's receive work in a kernel thread of its own (testbed CPU attribution).

On a veth pair without NAPI, a transmit runs the receiving host's whole receive
path in the sender's context (veth_xmit -> netif_rx -> the CPU's backlog, run as
a softirq when the sender's syscall re-enables bottom halves): when a box sends
an ACK to the server, the box's process is charged for the server's TCP taking
that ACK, for the server's answer (its next data segments) and for the box's
own capture of that answer.  Process CPU is then a mix of every host's work.

veth uses NAPI on its receiving side when an XDP program is attached to it
(drivers/net/veth.c, veth_enable_xdp), and NAPI can run in a kernel thread of
its own (`/sys/class/net/DEV/threaded`, "napi/DEV-ID").  With both, every
host's receive path runs in the thread of the interface that receives, readable
in /proc like a process: a box's CPU is its process plus its own interfaces'
threads, and what its peers do with what it sent is theirs.

The program is XDP_PASS (`r0 = 2; exit`): every frame goes on as before.  GRO
stays off (dev_gro_receive is bypassed while an XDP program is attached:
netif_elide_gro), so frames stay the wire's MTU-sized frames.  Nothing outlives
the namespaces: the program and the threads go with the interfaces.
"""
from __future__ import annotations

import ctypes
import os
import struct
from typing import Dict, List, Sequence, Set, Tuple

from stackpep.testbed.netns import Host

_SYS_BPF = 321  # x86_64 (asm/unistd_64.h)
_BPF_PROG_LOAD = 5
_BPF_PROG_TYPE_XDP = 6
_XDP_PASS = 2
_XDP_FLAGS_DRV_MODE = 1 << 2  # native XDP: the mode that turns on veth's NAPI (generic XDP does not)
_ATTR_SIZE = 128


def _load_xdp_pass() -> int:
    """A loaded XDP_PASS program's fd (bpf(2) BPF_PROG_LOAD)."""
    if os.uname().machine != "x86_64":
        raise OSError("rx threads: bpf(2) syscall number known for x86_64 only")
    # struct bpf_insn {u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm}
    insns = ctypes.create_string_buffer(struct.pack("<BBhi", 0xB7, 0, 0, _XDP_PASS)  # BPF_ALU64|BPF_MOV|BPF_K r0
                                        + struct.pack("<BBhi", 0x95, 0, 0, 0))  # BPF_JMP|BPF_EXIT
    license_ = ctypes.create_string_buffer(b"GPL")
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level,
    # log_size, log_buf, kern_version, prog_flags, prog_name[16]
    attr = ctypes.create_string_buffer(struct.pack(
        "<IIQQIIQII16s", _BPF_PROG_TYPE_XDP, 2, ctypes.addressof(insns), ctypes.addressof(license_),
        0, 0, 0, 0, 0, b"stackpep_pass"), _ATTR_SIZE)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(_SYS_BPF, _BPF_PROG_LOAD, attr, _ATTR_SIZE)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"rx threads: loading an XDP program failed: {os.strerror(err)}")
    return fd


def napi_threads() -> Dict[int, str]:
    """Every "napi/..." kernel thread: pid -> name."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    name = f.read().strip()
            except OSError:
                continue
            if name.startswith("napi/"):
                out[int(entry)] = name
    return out


def thread_receive(host: Host, ifname: str) -> List[int]:
    """`ifname` in `host` receives in NAPI threads of its own; returns their pids."""
    from pyroute2 import NetNS

    before: Set[int] = set(napi_threads())
    fd = _load_xdp_pass()
    try:
        ns = NetNS(host.name)
        try:
            index = ns.link_lookup(ifname=ifname)
            if not index:
                raise OSError(f"rx threads: no interface {ifname} in {host.name}")
            ns.link("set", index=index[0],
                    xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", _XDP_FLAGS_DRV_MODE)]})
        finally:
            ns.close()
    finally:
        os.close(fd)  # (the interface holds the program)
    host.run(["sh", "-c", f"echo 1 > /sys/class/net/{ifname}/threaded"])
    prefix = f"napi/{ifname}-"[:15]
    pids = sorted(p for p, name in napi_threads().items() if p not in before and name.startswith(prefix))
    if not pids:
        raise OSError(f"rx threads: no NAPI thread appeared for {ifname} in {host.name}")
    return pids


def thread_all(ifaces: Sequence[Tuple[Host, str]]) -> Dict[str, List[int]]:
    """thread_receive for each (host, ifname), one after the other (so that each
    new thread is known to be that interface's); returns host role -> pids."""
    out: Dict[str, List[int]] = {}
    for host, ifname in ifaces:
        out.setdefault(host.short, []).extend(thread_receive(host, ifname))
    return out
