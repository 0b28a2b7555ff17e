"""capture.qdisc_bypass: parsed, refused when not a bool, not live on reload, and
applied to every sending socket of the box's ports (PACKET_QDISC_BYPASS, read back
from the kernel with getsockopt), by the one-process box (open_pep) and by the
workers' fanout ports alike."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import stackpep
from stackpep.pep.config import check_file, load
from stackpep.pep.reload import KEYS
from stackpep.testbed.netns import Network

ROOT = Path(stackpep.__file__).resolve().parents[1]

CONFIG = """
[pep]
role = "splitter"
[interfaces]
client = ["CLIENT_IF"]
server = ["SERVER_IF"]
[intercept]
prefixes = ["198.18.0.0/15"]
EXTRA
"""


def _write(tmp_path, extra, client_if="c0", server_if="s0"):
    p = tmp_path / "pep.toml"
    p.write_text(CONFIG.replace("CLIENT_IF", client_if).replace("SERVER_IF", server_if).replace("EXTRA", extra))
    return p


def test_default_is_off_and_true_is_read(tmp_path):
    assert load(_write(tmp_path, "")).qdisc_bypass is False
    assert load(_write(tmp_path, "[capture]\nqdisc_bypass = true\n")).qdisc_bypass is True
    assert load(_write(tmp_path, "[capture]\nqdisc_bypass = false\n")).qdisc_bypass is False


def test_not_a_bool_is_a_problem_with_its_line(tmp_path):
    cfg, problems = check_file(_write(tmp_path, "[capture]\nqdisc_bypass = \"yes\"\n"))
    assert cfg is None
    assert [(pr.line, pr.key) for pr in problems] == [(10, "capture.qdisc_bypass")]


def test_reload_refuses_to_change_it():
    key, live, why = KEYS["qdisc_bypass"]
    assert key == "capture.qdisc_bypass" and live is False and why


PROG = r"""
import sys, json, trio
sys.path.insert(0, ROOT)
from stackpep.pep.config import load
from stackpep.pep.api import open_pep
from stackpep.pep.workers import open_fanout_ports
cfg = load(CFG)
out = {}
async def main():
    async with open_pep(cfg, install_rules=False, control=False) as pep:
        out["open_pep"] = {p.name: p.ring.send_socket_options() for p in pep.dispatcher.ports}
trio.run(main)
rows = open_fanout_ports(cfg, 2)
try:
    out["workers"] = [{p.name: p.ring.send_socket_options() for p in row} for row in rows]
finally:
    for row in rows:
        for p in row:
            p.close()
print(json.dumps(out))
"""


@pytest.mark.netns
@pytest.mark.parametrize("bypass", [False, True])
def test_applied_to_every_sending_socket(tmp_path, bypass):
    with Network() as net:
        c = net.add_host("client")
        b = net.add_host("box", forwarding=True)
        s = net.add_host("server")
        _, bi = net.link(c, b, ["198.18.0.2/24"], ["198.18.0.1/24"])
        bo, _ = net.link(b, s, ["198.18.1.1/24"], ["198.18.1.2/24"])
        cfg = _write(tmp_path, f"[capture]\nqdisc_bypass = {'true' if bypass else 'false'}\n", bi, bo)
        prog = PROG.replace("ROOT", repr(str(ROOT))).replace("CFG", repr(str(cfg)))
        res = b.run([sys.executable, "-c", prog], check=False)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout.strip().splitlines()[-1])
    want = {"fd": {"qdisc_bypass": int(bypass), "vnet_hdr": 0}, "txfd": {"qdisc_bypass": int(bypass), "vnet_hdr": 1}}
    assert out["open_pep"] == {bi: want, bo: want}
    assert out["workers"] == [{bi: want, bo: want}, {bi: want, bo: want}]
