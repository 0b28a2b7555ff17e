"""The C contract (stackpep/_fast/wire.pxd) as another compiled module sees it:
a small Cython module cimports parse_ip_tcp / emit_ip_tcp / seg_init /
tcp_opts_len / parse_icmp_ptb / parse_eth / wire_count and calls them nogil,
the way the TCP engine, the capture path and the splitter do."""
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "vectors" / "wire"

USER = textwrap.dedent('''
    # cython: language_level=3
    from libc.stdint cimport uint8_t, uint32_t, uint16_t, int32_t
    from stackpep._fast.wire cimport (tcp_seg_t, parse_ip_tcp, emit_ip_tcp, seg_init, tcp_opts_len,
                                      parse_icmp_ptb, parse_eth, WIRE_OK, TH_SYN, TH_ACK, CSUM_GOOD,
                                      icmp_ptb_t, parse_icmp_ptb_ex, plateau_mtu, seg_final_dst, TH_AE)

    def reflect(bytes pkt):
        """Parse, swap the ends, re-emit: what an engine does to answer a segment."""
        cdef tcp_seg_t seg
        cdef uint8_t out[1600]
        cdef const uint8_t* p = pkt
        cdef Py_ssize_t n = len(pkt), m
        cdef int rc
        cdef uint16_t port
        cdef uint8_t tmp[16]
        with nogil:
            rc = parse_ip_tcp(p, n, &seg, 1)
        if rc != WIRE_OK:
            return rc
        assert seg.csum_status == CSUM_GOOD
        port = seg.sport; seg.sport = seg.dport; seg.dport = port
        tmp[:] = seg.src; seg.src = seg.dst; seg.dst = tmp
        with nogil:
            m = emit_ip_tcp(out, sizeof(out), &seg, p + seg.payload_off, seg.payload_len)
        return out[:m]

    def build_syn(int version):
        cdef tcp_seg_t seg
        cdef uint8_t out[100]
        cdef Py_ssize_t m
        seg_init(&seg)
        assert seg.opts.wscale == -1
        seg.ip_version = version
        seg.ttl = 64
        seg.src[0] = 198 if version == 4 else 0xfd
        seg.src[3] = 1
        seg.dst[0] = 198 if version == 4 else 0xfd
        seg.dst[3] = 2
        seg.sport = 40000
        seg.dport = 80
        seg.seq = 1
        seg.flags = TH_SYN
        seg.window = 65535
        seg.opts.mss = 1460
        seg.opts.sack_perm = 1
        seg.opts.has_ts = 1
        seg.opts.ts_val = 7
        seg.opts.wscale = 7
        seg.opts.has_scps = 1
        seg.opts.scps_bits = 0x80
        olen = tcp_opts_len(&seg.opts)
        with nogil:
            m = emit_ip_tcp(out, 10, &seg, NULL, 0)      # too small
        assert m == -1
        with nogil:
            m = emit_ip_tcp(out, sizeof(out), &seg, NULL, 0)
        return olen, out[:m]

    def ptb(bytes pkt):
        cdef tcp_seg_t q
        cdef uint32_t mtu
        cdef const uint8_t* p = pkt
        cdef Py_ssize_t n = len(pkt)
        cdef int rc
        with nogil:
            rc = parse_icmp_ptb(p, n, &mtu, &q, 1)
        return rc, mtu, q.sport, q.dport, q.seq

    def ptb_ex(bytes pkt):
        """What the PEP's ICMP path does: the MTU to use, and whether it was estimated."""
        cdef tcp_seg_t q
        cdef icmp_ptb_t info
        cdef const uint8_t* p = pkt
        cdef Py_ssize_t n = len(pkt)
        cdef int rc
        with nogil:
            rc = parse_icmp_ptb_ex(p, n, &info, &q, 1)
        return rc, info.mtu, info.mtu_field, info.mtu_estimated, info.quoted_total_len

    def plateau(uint32_t total):
        cdef uint32_t r
        with nogil:
            r = plateau_mtu(total)
        return r

    def seg_extras(bytes pkt):
        """The fields appended in issue 8: final destination, SNACK holes, AE."""
        cdef tcp_seg_t seg
        cdef const uint8_t* p = pkt
        cdef Py_ssize_t n = len(pkt)
        cdef int rc
        cdef const uint8_t* fd
        with nogil:
            rc = parse_ip_tcp(p, n, &seg, 1)
        if rc != WIRE_OK:
            return rc
        fd = seg_final_dst(&seg)
        return (fd[:16] if seg.ip_version == 6 else fd[:4], seg.has_final_dst,
                [(seg.opts.snack_hole_offset[i], seg.opts.snack_hole_size[i]) for i in range(seg.opts.n_snack)],
                (seg.opts.snack_offset, seg.opts.snack_size), bool(seg.flags_hi & TH_AE))

    def eth(bytes frame):
        cdef uint16_t et
        cdef int32_t tci
        cdef int hl = parse_eth(frame, len(frame), &et, &tci)
        return hl, et, tci
''')


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    d = tmp_path_factory.mktemp("cimport")
    (d / "wire_user.pyx").write_text(USER)
    setup = textwrap.dedent(f'''
        from setuptools import setup, Extension
        from Cython.Build import cythonize
        setup(ext_modules=cythonize([Extension("wire_user", ["wire_user.pyx"])],
                                    include_path=[{str(ROOT)!r}], quiet=True))
    ''')
    (d / "setup.py").write_text(setup)
    res = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=d,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    so = next(d.glob("wire_user*.so"))
    spec = importlib.util.spec_from_file_location("wire_user", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _vec(name):
    from stackpep.wire import vectors
    return vectors.load(VECTORS / f"{name}.toml", VECTORS)


def test_reflect_a_real_segment(user):
    from stackpep._fast import wire as w
    v = _vec("captured/v4-request-psh")
    out = user.reflect(v.data)
    s = w.parse_packet(out)               # checksums right after the rewrite
    assert (s.sport, s.dport) == (v.expect["dport"], v.expect["sport"])
    assert s.payload == w.parse_packet(v.data).payload and s.ts == tuple(v.expect["ts"])
    assert user.reflect(_vec("options/len-0").data) == w.CODES["tcp_opt_len"]


@pytest.mark.parametrize("version", [4, 6])
def test_build_a_syn(user, version):
    from stackpep._fast import wire as w
    olen, pkt = user.build_syn(version)
    assert olen == 4 + 12 + 4 + 4
    s = w.parse_packet(pkt)
    assert (s.mss, s.sack_perm, s.ts, s.wscale, s.scps) == (1460, True, (7, 0), 7, (0x80, 0, b""))
    assert s.ip_version == version and s.flags == 0x02


def test_ptb_and_eth(user):
    from stackpep._fast import wire as w
    assert user.ptb(_vec("icmp/v4-frag-needed-min-quote").data) == (0, 1400, 40000, 443, 123456789)
    assert user.ptb(_vec("icmp/v6-ptb-mtu-below-1280").data)[0] == w.CODES["icmp_mtu"]
    assert user.eth(_vec("link/eth-vlan").data) == (18, 0x0800, 0x2064)
    assert user.eth(_vec("truncated/eth-13").data)[0] == w.CODES["eth_truncated"]


def test_appended_contract(user):
    """parse_icmp_ptb_ex / plateau_mtu / seg_final_dst / the SNACK arrays / TH_AE, nogil."""
    import ipaddress
    from stackpep._fast import wire as w
    assert user.ptb_ex(_vec("icmp/v4-frag-needed-mtu-0").data) == (0, 1006, 0, 1, 1452)
    assert user.ptb(_vec("icmp/v4-frag-needed-mtu-0").data)[:2] == (0, 1006)   # the old call gets the estimate
    assert user.ptb_ex(_vec("icmp/v4-frag-needed-min-quote").data)[:4] == (0, 1400, 1400, 0)
    assert [user.plateau(t) for t in (70000, 65535, 1500, 1492, 1493, 576, 296, 297, 68, 0)] == [
        65535, 32000, 1492, 1006, 1492, 508, 68, 296, 68, 68]
    assert user.plateau(1500) == w.plateau_mtu(1500)
    fd, has, holes, first, ae = user.seg_extras(_vec("ipv6-ext/v6-routing-srh-segments-left").data)
    assert (fd, has) == (ipaddress.ip_address("fd00:3::9").packed, 1)
    fd, has, holes, first, ae = user.seg_extras(_vec("scps/v4-ack-two-snacks").data)
    assert (has, holes, first, ae) == (0, [(3, 2), (9, 4)], (3, 2), False)
    assert fd == ipaddress.ip_address("198.18.0.2").packed
    assert user.seg_extras(_vec("tcp/v4-syn-accecn-ae").data)[4] is True
