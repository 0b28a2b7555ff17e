"""Issue 3 test 1: every packetdrill-style script in vectors/tcp/ against the engine,
plus tests of the script runner itself (it must catch every kind of mismatch)."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from stackpep.tcp import script as S
from stackpep.tcp.script import (
    ScriptError, ScriptSyntaxError, Segment, build_segment, load_script, parse_script, parse_segment,
    payload_pattern, run_script,
)

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "vectors" / "tcp"
SCRIPTS = sorted(VECTORS.rglob("*.pkt"))


import stackpep._fast.tcp  # noqa: E402,F401  (a missing build is a failure, not a skip)


def test_enough_scripts_in_every_behaviour():
    assert len(SCRIPTS) >= 80
    folders = {p.parent.name for p in SCRIPTS}
    for behaviour in ("handshake", "close", "rst", "rfc5961", "seq", "window", "sws", "nagle", "zwp",
                      "keepalive", "urgent", "mss", "pmtu", "ws", "ts", "paws", "sack", "recovery", "rto",
                      "iw", "delack", "ecn", "cc", "buffers"):
        assert behaviour in folders, f"no scripts for {behaviour}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[str(p.relative_to(VECTORS)) for p in SCRIPTS])
def test_script_parses_and_says_what_it_proves(path):
    script = load_script(path)
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("//"), "a script starts with a // comment saying what it proves"
    assert len(script.comment) >= 40
    assert script.steps


@pytest.mark.parametrize("path", SCRIPTS, ids=[str(p.relative_to(VECTORS)) for p in SCRIPTS])
def test_script(path):
    script = load_script(path)
    if script.xfail:
        with pytest.raises(ScriptError):
            run_script(script)
        pytest.xfail(script.xfail)
    run_script(script)


# -- the codec the runner uses: checked against the wire layer ------------------------
def _seg(**kw):
    base = dict(version=4, src=S.REMOTE4, dst=S.LOCAL4, sport=40000, dport=8080, seq=123456789,
                ack=987654321, flags=S.TH_ACK | S.TH_PSH, window=4321, urg=0,
                options=[("nop",), ("nop",), ("TS", 7, 9), ("nop",), ("nop",), ("sack", [(10, 20), (30, 40)])],
                payload=b"hello world", ecn=2)
    base.update(kw)
    return Segment(**base)


@pytest.mark.parametrize("version", [4, 6])
def test_codec_agrees_with_wire_layer(version):
    from stackpep._fast import wire
    src, dst = (S.REMOTE4, S.LOCAL4) if version == 4 else (S.REMOTE6, S.LOCAL6)
    pkt = build_segment(_seg(version=version, src=src, dst=dst))
    w = wire.parse_packet(pkt, 1)
    assert (w.seq, w.ack, w.flags, w.window, w.sport, w.dport) == (123456789, 987654321, 0x18, 4321, 40000, 8080)
    assert w.ts == (7, 9) and tuple(w.sack) == ((10, 20), (30, 40))
    assert w.payload == b"hello world" and w.ecn == 2
    back = parse_segment(pkt)
    assert back.payload == b"hello world" and back.options[2] == ("TS", 7, 9)


def test_codec_rejects_bad_checksums_and_lengths():
    pkt = bytearray(build_segment(_seg()))
    with pytest.raises(ValueError, match="TCP checksum"):
        parse_segment(build_segment(_seg(), bad_checksum=True))
    bad_ip = bytearray(pkt)
    bad_ip[8] ^= 1  # TTL changes, header checksum no longer matches
    with pytest.raises(ValueError, match="IPv4 header checksum"):
        parse_segment(bytes(bad_ip))
    with pytest.raises(ValueError, match="total length"):
        parse_segment(bytes(pkt) + b"\0")


def test_payload_pattern_is_position_dependent():
    assert payload_pattern("out", 0, 600)[251:502] == payload_pattern("out", 251, 251)
    assert payload_pattern("out", 5, 10) == payload_pattern("out", 0, 15)[5:]
    assert payload_pattern("in", 0, 10) != payload_pattern("out", 0, 10)


# -- the runner must fail when the engine misbehaves -----------------------------------
class FakeEngine:
    """Answers a SYN with a programmable list of packets (for runner self-tests)."""

    def __init__(self, script, local, remote, reply):
        self.s, self.local, self.remote, self.reply = script, local, remote, reply
        self.pending, self.timer, self.state = [], None, "CLOSED"

    def listen(self):
        self.state = "LISTEN"

    def receive_packet(self, pkt, now):
        seg = parse_segment(pkt)
        if seg.flags & S.TH_SYN:
            self.state = "SYN-RECEIVED"
            for delay, pkt_or_fn in self.reply:
                if delay == 0:
                    self.pending.append(pkt_or_fn(self))
                else:
                    self.timer = (now + delay, pkt_or_fn)

    def synack(self, flags=S.TH_SYN | S.TH_ACK, seq_off=0, ack_off=1, win=1000, options=(("mss", 1460),)):
        return build_segment(Segment(4, self.local, self.remote, self.s.local_port, self.s.remote_port,
                                     self.s.iss + seq_off, self.s.peer_iss + ack_off, flags, win, 0,
                                     list(options)))

    def packets_to_send(self, now):
        out, self.pending = self.pending, []
        return out

    def next_event(self):
        return None

    def get_timer(self):
        return self.timer[0] if self.timer else None

    def handle_timer(self, now):
        _, fn = self.timer
        self.timer = None
        self.pending.append(fn(self))

    def statistics(self):
        return {"retransmits": 0}


HANDSHAKE = """// runner self-test
0 app listen
+0 < S 0:0(0) win 65535 <mss 1460>
"""


def _run_fake(text, reply):
    sc = parse_script(HANDSHAKE + text)
    return run_script(sc, lambda script, local, remote: FakeEngine(script, local, remote, reply))


def test_runner_accepts_matching_engine():
    _run_fake("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>\n+0 state SYN-RECEIVED\n",
              [(0, lambda e: e.synack())])


@pytest.mark.parametrize("line, reply, message", [
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>", [(0, lambda e: e.synack(flags=S.TH_SYN))], "flags"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>", [(0, lambda e: e.synack(seq_off=5))], "seq 5 != 0"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>", [(0, lambda e: e.synack(ack_off=2))], "ack 2 != 1"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>", [(0, lambda e: e.synack(win=999))], "win 999"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>", [(0, lambda e: e.synack(options=[("mss", 1400)]))], "mss"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>",
     [(0, lambda e: e.synack(options=[("mss", 1460), ("sackOK",)]))], "unexpected option"),
    ("+0 > S. 0:0(0) ack 1 win 1000", [(0, lambda e: e.synack())], "unexpected option"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>", [(100_000, lambda e: e.synack())],
     "none was sent \\(next timer: t=0.100\\)"),
    ("+0.2 > S. 0:0(0) ack 1 win 1000 <mss 1460>", [(100_000, lambda e: e.synack())], "sent at t=0.100"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>", [], "none was sent"),
    ("+0 state SYN-RECEIVED", [(0, lambda e: e.synack())], "unexpected outbound packet"),
    ("+1 > none", [(500_000, lambda e: e.synack())], "unexpected outbound packet"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>",
     [(0, lambda e: e.synack()[:-1] + bytes([e.synack()[-1] ^ 1]))], "checksum"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>\n+0 state ESTABLISHED", [(0, lambda e: e.synack())], "state is"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>\n+0 event Connected", [(0, lambda e: e.synack())], "no event"),
    ("+0 > S. 0:0(0) ack 1 win 1000 <mss 1460>\n+0 stat retransmits == 1", [(0, lambda e: e.synack())],
     "retransmits is 0"),
])
def test_runner_catches_mismatch(line, reply, message):
    with pytest.raises(ScriptError, match=message):
        _run_fake(line + "\n", reply)


def test_runner_tolerance_only_where_written():
    _run_fake("+0.1~0.01 > S. 0:0(0) ack 1 win 1000 <mss 1460>\n", [(105_000, lambda e: e.synack())])
    with pytest.raises(ScriptError, match="none was sent"):
        _run_fake("+0.1~0.001 > S. 0:0(0) ack 1 win 1000 <mss 1460>\n", [(105_000, lambda e: e.synack())])


def test_runner_wildcards():
    _run_fake("+0 > S. ...:...(0) ack ... win ... <...>\n", [(0, lambda e: e.synack(seq_off=7, win=3))])
    _run_fake("+0 > S. 0:0(0) ack 1 win 1000 <mss ...>\n", [(0, lambda e: e.synack())])


@pytest.mark.parametrize("bad", [
    "+0 < S 0:5(0) win 1",              # end != seq + len
    "+0 < S 0:0(0)",                    # inbound needs win
    "+0 > . 1:1(0) win 1",              # outbound ACK needs ack
    "+0 < S 0:0(0) win 1 <bogus 1>",    # unknown option
    "+0 app jump",
    "+0 stat x ~= 1",
    "sometime < S 0:0(0) win 1",
    "+0 < S 0:0(0) win 1 <mss 1,mss 1,mss 1,mss 1,mss 1,mss 1,mss 1,mss 1,mss 1,mss 1,mss 1>",
])
def test_parser_rejects_malformed_lines(bad):
    with pytest.raises(ScriptSyntaxError):
        sc = parse_script(bad + "\n")
        # option overflow is only found when the packet is built
        S.encode_options(sc.steps[0].args.options)


def test_inbound_packets_are_well_formed():
    sc = parse_script("0 < SEW 0:0(0) win 100 <mss 1460,sackOK,TS val 5 ecr 0,nop,wscale 7>\n"
                      "ipv6\n")
    runner = S.ScriptRunner.__new__(S.ScriptRunner)
    captured = []

    class Capture:
        def receive_packet(self, pkt, now):
            captured.append(pkt)

        def packets_to_send(self, now):
            return []

        def next_event(self):
            return None

        def get_timer(self):
            return None

    S.ScriptRunner.__init__(runner, sc, lambda *a: Capture())
    runner.run()
    seg = parse_segment(captured[0])
    assert seg.version == 6 and seg.src == S.REMOTE6 and seg.dst == S.LOCAL6
    assert seg.flags == S.TH_SYN | S.TH_ECE | S.TH_CWR and seg.seq == sc.peer_iss
    assert ("wscale", 7) in seg.options and ("TS", 5, 0) in seg.options
    assert struct.unpack("!H", captured[0][4:6])[0] == len(captured[0]) - 40


def test_grammar_doc_example_runs():
    """The example at the top of docs/tcp-scripts.md is a working script."""
    doc = (ROOT / "docs" / "tcp-scripts.md").read_text()
    blocks = doc.split("```")
    example = next(b for b in blocks[1::2] if b.lstrip().startswith("//"))
    run_script(parse_script(example, "docs/tcp-scripts.md"))


def test_runner_any_time_and_silence():
    # "*" matches a packet whenever it comes; the next line's time continues from it
    _run_fake("* > S. 0:0(0) ack 1 win 1000 <mss 1460>\n+0.5 > none\n", [(250_000, lambda e: e.synack())])
    # "> none" passes when nothing is due, and the timer assertion sees the deadline
    _run_fake("+0 timer +0.25\n+0.2 > none\n+0.05 > S. 0:0(0) ack 1 win 1000 <mss 1460>\n+0 timer none\n",
              [(250_000, lambda e: e.synack())])
    with pytest.raises(ScriptError, match="timer is"):
        _run_fake("+0 timer +0.2\n", [(250_000, lambda e: e.synack())])


def test_runner_checks_payload_bytes():
    # a data segment whose bytes are not what the application gave the engine
    def bad_data(e):
        return build_segment(Segment(4, e.local, e.remote, e.s.local_port, e.s.remote_port, e.s.iss + 1,
                                     e.s.peer_iss + 1, S.TH_ACK | S.TH_PSH, 1000, 0, [], b"x" * 10))
    sc = parse_script("// payload check\n0 app listen\n+0 < S 0:0(0) win 65535 <mss 1460>\n"
                      "+0 > P. 1:11(10) ack 1 win 1000\n")
    with pytest.raises(ScriptError, match="never sent by the application"):
        run_script(sc, lambda script, local, remote: FakeEngine(script, local, remote, [(0, bad_data)]))
