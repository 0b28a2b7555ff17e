"""The engine's tables, each with one source: the state transitions
(stackpep.tcp.states, checked by TcpConnection._set_state and rendered into
docs/tcp-engine.md), the drop reasons (tcp.pxd D_* codes = statistics.DROP_REASONS),
and the bounded event queue."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from stackpep._fast import tcp as fast
from stackpep._fast.tcp import STATES, TcpConnection
from stackpep._fast.wire import Segment
from stackpep.tcp import TcpState
from stackpep.tcp.config import TcpConfig
from stackpep.tcp.script import load_script, run_script
from stackpep.tcp.states import TRANSITIONS, legal_transitions, transition_table_markdown
from stackpep.tcp.statistics import DROP_REASONS

ROOT = Path(__file__).resolve().parent.parent
L4, R4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
S = TcpState


@pytest.fixture(autouse=True)
def _lenient():
    # these tests choose the mode themselves (STACKPEP_TCP_STRICT may be set outside)
    fast.set_strict_transitions(False)
    yield
    fast.set_strict_transitions(os.environ.get("STACKPEP_TCP_STRICT", "") not in ("", "0"))


def _conn():
    return TcpConnection(TcpConfig(), L4, 8080, R4, 40000, 1000)


# -- states --------------------------------------------------------------------------------

def test_state_enum_matches_the_engine_codes_and_names():
    assert [s.rfc_name for s in TcpState] == list(STATES)
    assert [int(s) for s in TcpState] == list(range(11))
    c = _conn()
    assert c.tcp_state is S.CLOSED and c.state == "CLOSED"
    c.listen()
    assert c.tcp_state is S.LISTEN and c.state == "LISTEN" and str(c.tcp_state) == "LISTEN"
    assert S.SYN_RECEIVED.rfc_name == "SYN-RECEIVED"


@pytest.mark.parametrize("frm", list(TcpState))
def test_every_illegal_transition_is_refused_and_counted(frm):
    legal = legal_transitions()[frm]
    for to in TcpState:
        if to in legal:
            continue
        c = _conn()
        # reach `frm` only through legal transitions, then ask for the illegal one
        path = _path_to(frm)
        for s in path:
            assert c._try_set_state(s), (path, s)
        assert c.tcp_state is frm
        assert c._try_set_state(to) is False
        assert c.tcp_state is frm
        assert c.statistics().illegal_transitions == 1


def test_legal_transitions_are_taken():
    for frm, to, _, _ in TRANSITIONS:
        c = _conn()
        for s in _path_to(frm):
            c._try_set_state(s)
        assert c._try_set_state(to) is True and c.tcp_state is to
        assert c.statistics().illegal_transitions == 0


def test_strict_mode_raises_on_an_illegal_transition():
    c = _conn()
    fast.set_strict_transitions(True)
    try:
        with pytest.raises(AssertionError, match="CLOSED -> ESTABLISHED"):
            c._try_set_state(S.ESTABLISHED)
    finally:
        fast.set_strict_transitions(False)
    assert c.tcp_state is S.CLOSED


def _path_to(target):
    # breadth-first from CLOSED over the legal table
    table = legal_transitions()
    prev = {S.CLOSED: None}
    todo = [S.CLOSED]
    while todo:
        s = todo.pop(0)
        for t in sorted(table[s]):
            if t not in prev:
                prev[t] = s
                todo.append(t)
    out = []
    while target is not S.CLOSED:
        out.append(target)
        target = prev[target]
    return out[::-1]


# transitions no .pkt script drives (reached by the engine/link tests instead)
NOT_IN_SCRIPTS = {
    (S.FIN_WAIT_1, S.CLOSED),
    (S.FIN_WAIT_1, S.TIME_WAIT),
    (S.CLOSING, S.CLOSED),
}


def test_pkt_scripts_take_only_legal_transitions_and_cover_the_table():
    scripts = sorted((ROOT / "vectors" / "tcp").glob("*/*.pkt"))
    assert scripts
    fast.reset_transitions_seen()
    fast.set_strict_transitions(True)
    try:
        for p in scripts:
            script = load_script(p)
            if script.xfail:
                continue
            run_script(script)
    finally:
        fast.set_strict_transitions(False)
    seen = fast.transitions_seen()
    legal = {(f, t) for f, t, _, _ in TRANSITIONS}
    assert seen <= legal
    assert legal - seen == NOT_IN_SCRIPTS


def test_predicates_follow_the_state():
    c = _conn()
    assert not c.may_send() and not c.may_recv()
    c.connect(0)
    assert c.may_send() and not c.may_recv()          # queued until open (SYN-SENT)
    c.abort()
    assert not c.may_send() and not c.may_recv()
    c = _conn()
    c.listen()
    assert not c.may_send()
    for s, send, recv in [(S.SYN_RECEIVED, True, False), (S.ESTABLISHED, True, True),
                          (S.CLOSE_WAIT, True, False), (S.LAST_ACK, False, False)]:
        assert c._try_set_state(s)
        assert (c.may_send(), c.may_recv()) == (send, recv), s
    c = _conn()
    for s in _path_to(S.FIN_WAIT_2):
        c._try_set_state(s)
    assert (c.may_send(), c.may_recv()) == (False, True)


# -- the doc's table is the code's --------------------------------------------------------

def test_doc_state_table_is_generated_from_the_code():
    doc = (ROOT / "docs" / "tcp-engine.md").read_text()
    m = re.search(r"<!-- transitions: begin.*?-->\n(.*?)<!-- transitions: end -->", doc, re.S)
    assert m, "docs/tcp-engine.md lacks the generated transition table"
    assert m.group(1) == transition_table_markdown(), \
        "regenerate with: python -m stackpep.tcp.states"


# -- drop reasons: one list ------------------------------------------------------------------

def test_drop_codes_in_pxd_follow_drop_reasons():
    pxd = (ROOT / "stackpep" / "_fast" / "tcp.pxd").read_text()
    block = re.search(r"cdef enum:\n    D_MALFORMED = 0\n(.*?)\n    D_COUNT\n", pxd, re.S)
    assert block
    names = ["malformed"] + [ln.strip()[2:].lower() for ln in block.group(1).splitlines()]
    assert tuple(names) == DROP_REASONS
    assert fast.DROP_NAMES is DROP_REASONS


# -- bounded event queue -------------------------------------------------------------------

def _pkt(flags, seq, ack, payload=b""):
    s = Segment()
    s.src, s.dst, s.sport, s.dport = R4, L4, 40000, 8080
    s.seq, s.ack, s.flags, s.window = seq % (1 << 32), ack % (1 << 32), flags, 65535
    return s.to_bytes(payload)


def test_event_queue_overflow_is_counted():
    SYN, ACK = 2, 16
    c = TcpConnection(TcpConfig(timestamps=False, sack=False), L4, 8080, R4, 40000, 1000)
    c.listen()
    c.receive_packet(_pkt(SYN, 5000, 0), 0)
    c.packets_to_send(0)
    c.receive_packet(_pkt(ACK, 5001, 1001), 0)           # Connected (1 event)
    for i in range(20):
        # each read re-arms DataReadable; nobody calls next_event()
        c.receive_packet(_pkt(ACK, 5001 + 10 * i, 1001, b"x" * 10), 0)
        assert c.recv(100) == b"x" * 10
    st = c.statistics()
    assert st.events_lost == 1 + 20 - 16
    n = 0
    while c.next_event() is not None:
        n += 1
    assert n == 16
