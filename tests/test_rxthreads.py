"""stackpep.testbed.rxthreads: a veth that receives in a kernel thread of its own
(benchmarks/cpu.py --rx-threads), with the frames unchanged."""
from __future__ import annotations

import hashlib
import json
import sys
import textwrap

import pytest

from stackpep.testbed.netns import Network
from stackpep.testbed.rxthreads import napi_threads, thread_all
from stackpep.testbed.topology import set_offloads

pytestmark = pytest.mark.netns

# On the receiver: a TCP server taking N bytes while a packet socket on the
# interface notes the longest frame; prints both and the bytes' sha256.
RECEIVER = textwrap.dedent("""
    import hashlib, socket, sys
    ifname, n = sys.argv[1], int(sys.argv[2])
    tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); tap.bind((ifname, 0))
    tap.setblocking(False)
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("198.18.7.2", 9000)); srv.listen(1)
    print("LISTEN", flush=True)
    c, _ = srv.accept()
    h, got, longest = hashlib.sha256(), 0, 0
    while got < n:
        b = c.recv(1 << 16)
        if not b:
            break
        h.update(b); got += len(b)
        while True:
            try:
                longest = max(longest, len(tap.recv(1 << 17)))
            except BlockingIOError:
                break
    print(got, longest, h.hexdigest(), flush=True)
""")
SENDER = textwrap.dedent("""
    import socket, sys
    data = bytes(range(256)) * (int(sys.argv[1]) // 256)
    s = socket.create_connection(("198.18.7.2", 9000)); s.sendall(data); s.close()
""")
SIZE = 4 << 20


def _run_time_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def test_a_threaded_veth_receives_in_its_own_thread_with_frames_unchanged():
    with Network() as net:
        a, b = net.add_host("snd"), net.add_host("rcv")
        a_if, b_if = net.link(a, b, ["198.18.7.1/24"], ["198.18.7.2/24"], a_ifname="tx0", b_ifname="rx0")
        for host, ifname in ((a, a_if), (b, b_if)):
            set_offloads(host, ifname, on=False)
        threads = thread_all([(b, b_if)])
        assert list(threads) == ["rcv"] and len(threads["rcv"]) == 1
        pid = threads["rcv"][0]
        assert napi_threads()[pid].startswith("napi/rx0-")
        assert b.run(["cat", f"/sys/class/net/{b_if}/threaded"]).stdout.strip() == "1"
        link = json.loads(b.run(["ip", "-j", "-d", "link", "show", b_if]).stdout)[0]
        assert link["xdp"]["mode"] == 1  # XDP_ATTACHED_DRV: veth's NAPI is on
        # the sender's side is untouched
        assert "xdp" not in json.loads(a.run(["ip", "-j", "-d", "link", "show", a_if]).stdout)[0]
        before = _run_time_ns(pid)
        rcv = b.popen([sys.executable, "-c", RECEIVER, b_if, str(SIZE)], stdout=-1, text=True)
        assert rcv.stdout.readline().strip() == "LISTEN"
        a.run([sys.executable, "-c", SENDER, str(SIZE)], timeout=60)
        got, longest, digest = rcv.stdout.readline().split()
        rcv.wait(timeout=30)
        data = bytes(range(256)) * (SIZE // 256)
        assert int(got) == SIZE and digest == hashlib.sha256(data).hexdigest()
        assert 0 < int(longest) <= 1514  # GRO stays off: the wire's frames, one by one
        assert _run_time_ns(pid) > before  # the receive path ran in the interface's thread
