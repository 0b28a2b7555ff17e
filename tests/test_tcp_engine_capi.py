"""The engine's C-level API (stackpep/_fast/tcp.pxd) from another Cython module.

Also the congestion-control plug-in point: a CongestionControl subclass
defined outside the engine (pacing_rate / on_rtt_sample) is installed with
``set_congestion_control`` and drives when packets leave.

A small module is compiled at test time: it cimports ``TcpConnection`` and the
wire layer and moves packets between two engines with ``output_into`` (into a
C buffer) and ``receive_seg`` (a segment parsed by ``parse_ip_tcp``), with no
Python object per packet.  This is how the splitter's fast path uses it.
"""
from __future__ import annotations

import importlib.util
import os
import sysconfig
from pathlib import Path

import pytest

import stackpep._fast.tcp as tcpmod
from stackpep.tcp.config import TcpConfig

PYX = r'''
# cython: language_level=3
from libc.stdint cimport uint8_t, uint64_t
from stackpep._fast.tcp cimport TcpConnection, NewReno
from stackpep._fast.wire cimport tcp_seg_t, parse_ip_tcp

cdef class Paced(NewReno):
    """A rate-based controller in another module: paces at a fixed rate and
    counts the RTT samples it is given (the hooks a Vegas needs)."""
    cdef uint64_t rate
    cdef public int samples

    def __init__(self, rate):
        self.rate = rate
        self.samples = 0

    cdef uint64_t pacing_rate(self):
        return self.rate

    cdef void on_rtt_sample(self, uint64_t now, uint64_t rtt_us):
        self.samples += 1

def pump(TcpConnection src, TcpConnection dst, uint64_t now):
    cdef uint8_t buf[65600]
    cdef tcp_seg_t seg
    cdef Py_ssize_t n
    cdef int moved = 0
    while True:
        n = src.output_into(buf, sizeof(buf), now)
        if n <= 0:
            return moved
        if parse_ip_tcp(buf, n, &seg, 1) == 0:
            dst.receive_seg(&seg, buf, now)
            moved += 1
'''


def _build(tmp_path: Path):
    root = Path(tcpmod.__file__).resolve().parent.parent.parent
    # the wheel ships tcp.pxd for cimport (a missing one is a packaging bug)
    assert (root / "stackpep" / "_fast" / "tcp.pxd").exists(), root
    import Cython.Build as Cython  # the [test] extra
    from setuptools import Distribution, Extension

    src = tmp_path / "capi_pump.pyx"
    src.write_text(PYX)
    ext = Extension("capi_pump", [str(src)])
    dist = Distribution({"ext_modules": Cython.cythonize([ext], include_path=[str(root)], quiet=True,
                                                          build_dir=str(tmp_path))})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(tmp_path)
    cmd.build_temp = str(tmp_path / "build")
    cmd.ensure_finalized()
    cmd.run()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    spec = importlib.util.spec_from_file_location("capi_pump", tmp_path / f"capi_pump{suffix}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_c_level_api_moves_a_transfer(tmp_path):
    capi = _build(tmp_path)
    A, B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
    a = tcpmod.TcpConnection(TcpConfig(), A, 40000, B, 80, 1)
    b = tcpmod.TcpConnection(TcpConfig(), B, 80, A, 40000, 2)
    b.listen()
    a.connect(0)
    assert capi.pump(a, b, 0) == 1 and capi.pump(b, a, 0) == 1 and capi.pump(a, b, 0) == 1
    assert a.state == b.state == "ESTABLISHED"
    data = os.urandom(3_000_000)
    sent, got, now = 0, bytearray(), 0
    while len(got) < len(data):
        sent += a.send(data[sent:sent + (1 << 20)])
        capi.pump(a, b, now)
        got += b.recv(1 << 22)
        capi.pump(b, a, now)
        now += 1000
        if b.get_timer() is not None and b.get_timer() <= now:
            b.handle_timer(now)
        if a.get_timer() is not None and a.get_timer() <= now:
            a.handle_timer(now)
    assert bytes(got) == data
    st = b.statistics()
    assert st.bytes_received == len(data) and st.drops == {}


def test_congestion_control_plugin_paces_and_samples(tmp_path):
    capi = _build(tmp_path)
    A, B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
    cfg = TcpConfig(timestamps=False, nagle=False)
    a = tcpmod.TcpConnection(cfg, A, 40000, B, 80, 1)
    b = tcpmod.TcpConnection(cfg, B, 80, A, 40000, 2)
    b.listen()
    a.connect(0)
    capi.pump(a, b, 0)
    capi.pump(b, a, 10_000)
    capi.pump(a, b, 10_000)
    paced = capi.Paced(1_460_000)              # 1460 bytes per ms
    a.set_congestion_control(paced)
    a.send(b"p" * 1460 * 5)
    times = []
    now = 10_000
    while len(times) < 5:
        n = capi.pump(a, b, now)
        times += [now] * n
        now = a.get_timer()
        a.handle_timer(now)
    assert times == [10_000, 11_000, 12_000, 13_000, 14_000]
    capi.pump(b, a, 20_000)
    assert paced.samples >= 1 and a.statistics().bytes_acked > 0
