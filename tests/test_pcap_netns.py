"""`stackpep run --pcap FILE` on a one-box splitter in namespaces: the pcapng
tshark reads holds both legs of each connection -- SYN, SYN-ACK, data and FIN,
in and out of the client-side and the server-side interface, with the real
client and server addresses -- and the per-interface counters agree with the
file.  With a tiny `capture.pcap_max_bytes`, the files rotate: a fixed number of
them, each bounded and complete, the oldest gone."""
import json
import os
import shutil
import signal
import subprocess

import pytest

from stackpep.testbed.splitbox import CLIENT4, CLIENT6, SERVER4, SERVER6, SplitterTopology, pep_toml

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300),
              pytest.mark.skipif(shutil.which("tshark") is None or shutil.which("curl") is None,
                                 reason="needs tshark and curl")]

FIELDS = ["frame.interface_name", "frame.packet_flags_direction", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
          "tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.len", "tcp.seq_raw"]
IN, OUT = "0x00000001", "0x00000002"
SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04


def tshark_rows(path):
    """One dict per frame; tshark must read the file without a word on stderr."""
    res = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=|",
                          *[a for f in FIELDS for a in ("-e", f)]], capture_output=True, text=True, timeout=120)
    stderr = [line for line in res.stderr.splitlines() if not line.startswith("Running as user")]
    assert res.returncode == 0 and stderr == [], res.stderr
    rows = []
    for line in res.stdout.splitlines():
        r = dict(zip(FIELDS, line.split("|")))
        rows.append({"if": r["frame.interface_name"], "dir": r["frame.packet_flags_direction"],
                     "src": r["ip.src"] or r["ipv6.src"], "dst": r["ip.dst"] or r["ipv6.dst"],
                     "sport": int(r["tcp.srcport"]), "dport": int(r["tcp.dstport"]),
                     "flags": int(r["tcp.flags"], 16), "len": int(r["tcp.len"]), "seq": int(r["tcp.seq_raw"])})
    return rows


def tshark_warnings(path):
    """Expert items of severity warning or error in tshark's analysis of the file."""
    res = subprocess.run(["tshark", "-n", "-r", str(path), "-q", "-z", "expert,warn"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines()
            if line.strip() and not line.startswith("=") and "Frequency" not in line
            and not line.startswith(("Warns", "Errors"))]


def _closed(st):
    """Every leg the box holds is closed or in TIME-WAIT (nothing left to reset)."""
    return all(n == 0 or state.endswith(("TIME-WAIT", "CLOSED")) for state, n in st["leg_states"].items())


def _stop(t):
    # The clients are done; wait until the box has seen every close through
    # (on a loaded machine the last FIN/ACK may still be on its way), so that
    # stopping it resets nothing.
    t.wait_stats(_closed, timeout=60)
    rc = t.stop_pep(signal.SIGTERM)
    assert rc == 0, t.pep_log.read_text()
    return json.loads(t.stats_file.read_text())  # written at exit


def test_pcap_holds_both_legs_of_each_connection():
    with SplitterTopology() as t:
        t.start_nginx(80)
        body = os.urandom(200_000)
        (t.tmp / "nginx" / "html" / "blob").write_bytes(body)
        pcap = t.tmp / "cap" / "pep.pcapng"
        pcap.parent.mkdir()
        t.start_pep(pep_toml(), args=("--pcap", str(pcap)))
        ports = {}
        for client, server, url in ((CLIENT4, SERVER4, f"http://{SERVER4}/blob"),
                                    (CLIENT6, SERVER6, f"http://[{SERVER6}]/blob")):
            res = t.client.run(["curl", "-sS", "--max-time", "20", "-o", str(t.tmp / "got"), "-w",
                                "%{http_code} %{local_port}", url])
            code, port = res.stdout.split()
            assert code == "200" and (t.tmp / "got").read_bytes() == body
            ports[client] = (int(port), server)
        st = _stop(t)
        # one file per interface, the interface name inserted
        assert sorted(os.listdir(pcap.parent)) == ["pep.box1.pcapng", "pep.box2.pcapng"]
        files = {ifname: pcap.parent / f"pep.{ifname}.pcapng" for ifname in ("box1", "box2")}
        by_if = {ifname: tshark_rows(f) for ifname, f in files.items()}
        # one leg a file: tshark's TCP analysis finds nothing to warn about
        assert {ifname: tshark_warnings(f) for ifname, f in files.items()} == {"box1": [], "box2": []}
        rows = by_if["box1"] + by_if["box2"]
        files_size = {ifname: f.stat().st_size for ifname, f in files.items()}
        assert {r["if"] for r in by_if["box1"]} == {"box1"} and {r["if"] for r in by_if["box2"]} == {"box2"}

    # Every frame carries one of the two connections' real addresses and ports.
    for client, (cport, server) in ports.items():
        conn = [r for r in rows if {(r["src"], r["sport"]), (r["dst"], r["dport"])} == {(client, cport),
                                                                                         (server, 80)}]
        # Towards the server: in on box1 (client side), out on box2; back: in on box2, out on box1.
        legs = {("box1", IN): (client, server), ("box2", OUT): (client, server),
                ("box2", IN): (server, client), ("box1", OUT): (server, client)}
        for (ifname, d), (src, dst) in legs.items():
            seen = [r for r in conn if (r["if"], r["dir"]) == (ifname, d)]
            assert seen and all((r["src"], r["dst"]) == (src, dst) for r in seen), (ifname, d)
            flags = [r["flags"] for r in seen]
            opener = SYN if src == client else SYN | ACK  # the client's SYN, the server's SYN-ACK
            # one (a retransmission on a loaded machine repeats its sequence number)
            assert len({r["seq"] for r in seen if r["flags"] == opener}) == 1, (ifname, d, flags)
            assert any(f & FIN for f in flags), (ifname, d, flags)
            assert not any(f & RST for f in flags), (ifname, d, flags)
            sent = sum(r["len"] for r in seen)
            if src == server:
                assert sent >= len(body), (ifname, d, sent)  # the response: headers + body
            else:
                assert 0 < sent < 1000, (ifname, d, sent)  # the request
        # Each way, the stream (SYN to FIN in sequence space) that came in on one side
        # is the one that left on the other (RFC 9293 §3.4: SYN and FIN take one each).
        def length(ifname, d):
            seen = [r for r in conn if (r["if"], r["dir"]) == (ifname, d)]
            [syn] = {r["seq"] for r in seen if r["flags"] & SYN}
            [fin] = {r["seq"] + r["len"] for r in seen if r["flags"] & FIN}
            return (fin - syn - 1) % 2 ** 32
        assert length("box1", IN) == length("box2", OUT) == sum(r["len"] for r in conn
                                                                if (r["if"], r["dir"]) == ("box1", IN))
        assert length("box2", IN) == length("box1", OUT) >= len(body)
    assert len(rows) == sum(len([r for r in rows
                                 if {(r["src"], r["sport"]), (r["dst"], r["dport"])} ==
                                 {(c, p), (s, 80)}]) for c, (p, s) in ports.items())
    # The counters agree with the files.
    for ifname in ("box1", "box2"):
        pst = st["ports"][ifname]
        assert (pst["pcap_packets"], pst["pcap_rotations"], pst["pcap_write_errors"], pst["pcap_lost"]) == \
            (len(by_if[ifname]), 0, 0, 0)
        assert pst["pcap_bytes"] == files_size[ifname]


def test_pcap_rotates_within_bounds():
    with SplitterTopology() as t:
        t.start_nginx(80)
        body = os.urandom(1_000_000)
        (t.tmp / "nginx" / "html" / "blob").write_bytes(body)
        d = t.tmp / "cap"
        d.mkdir()
        max_bytes = 65536
        t.start_pep(pep_toml(extra=f'[capture]\npcap = "{d}/pep.pcapng"\npcap_max_bytes = {max_bytes}\n'
                                   f'pcap_files = 3\n'))
        res = t.client.run(["curl", "-sS", "--max-time", "20", "-o", str(t.tmp / "got"), "-w", "%{http_code}",
                            f"http://{SERVER4}/blob"])
        assert res.stdout == "200" and (t.tmp / "got").read_bytes() == body
        st = _stop(t)
        names = sorted(os.listdir(d))
        assert names == [f"pep.{i}.pcapng{n}" for i in ("box1", "box2") for n in ("", ".1", ".2")]
        rows = {n: tshark_rows(d / n) for n in names}
        sizes = {n: (d / n).stat().st_size for n in names}
    # 1 MB crossed each interface, 64 KiB a file: many rotations, 3 files left of each.
    for ifname in ("box1", "box2"):
        pst = st["ports"][ifname]
        assert pst["pcap_rotations"] >= 10 and pst["pcap_write_errors"] == 0
        mine = [n for n in names if f".{ifname}." in n]
        kept = [r for n in mine for r in rows[n]]
        assert {r["if"] for r in kept} == {ifname}
        assert pst["pcap_packets"] > len(kept) > 0
        # The oldest files, with the handshake, are gone; the newest has the end.
        assert not any(r["flags"] & SYN for r in kept)
        assert any(r["flags"] & FIN for r in rows[f"pep.{ifname}.pcapng"])
    assert all(0 < s <= max_bytes for s in sizes.values()), sizes
    assert all(rows[n] for n in names)
