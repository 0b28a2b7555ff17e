"""Named scenarios, the configurations compared in them, and the runner.

A scenario is a link (LinkSpec) and a list of workloads.  A configuration is
what sits between client and server: end-to-end kernel TCP with a given
congestion control, or stackpep in one or both PEP hosts.  `run_matrix()` runs
every workload of every scenario under every configuration in one topology, side
by side, restarting the link emulator (fresh counters, same seed) for each cell.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from stackpep.testbed.emulator import DirectionParams, Outage
from stackpep.testbed.topology import LinkSpec, Topology, log_tail, python_command, python_env
from stackpep.testbed.workloads import Workload, start_http_server

# Payload share of the bytes the emulator's rate counts (IP bytes): a 1500-byte
# IP packet carries 1448 bytes of TCP payload with timestamps (RFC 7323 §3:
# 20 IP + 20 TCP + 12 option bytes).
PAYLOAD_SHARE = 1448 / 1500
# ... and with IPv6's 40-byte header (RFC 8200 §3), 1428 of 1500.
PAYLOAD_SHARE_V6 = 1428 / 1500


# -- scenarios ---------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    description: str
    link: LinkSpec
    workloads: List[Workload]
    family: int = 4  # the address family the workloads use (4 or 6)

    def __post_init__(self):
        self.set_workloads(self.workloads)

    def set_workloads(self, workloads: Sequence[Workload]) -> None:
        """Use these workloads, over this scenario's address family."""
        self.workloads = [replace(w, family=self.family) for w in workloads]

    def capacity_bps(self, direction: str = "download") -> float:
        """rate x (1 - loss) x payload share (of the scenario's family): the most any
        TCP can deliver."""
        p = self.link.forward if direction == "download" else self.link.ret
        if not p.rate_bps:
            return 0.0
        return p.rate_bps * (1 - p.loss) * (PAYLOAD_SHARE_V6 if self.family == 6 else PAYLOAD_SHARE)

    def as_dict(self) -> Dict:
        return {
            "name": self.name, "description": self.description,
            "forward": self.link.forward.spec(), "return": self.link.ret.spec(),
            "outages": [o.spec() for o in self.link.outages], "seed": self.link.seed,
            "rtt_ms": self.link.rtt_ms(), "family": self.family, "workloads": [w.name for w in self.workloads],
            "capacity_download_bps": self.capacity_bps("download"),
            "capacity_upload_bps": self.capacity_bps("upload"),
        }


def _dir(delay_ms: float, rate_mbit: float, loss: float = 0.0, queue_ms: float = 250.0) -> DirectionParams:
    return DirectionParams(delay_ms=delay_ms, rate_bps=rate_mbit * 1e6, queue_ms=queue_ms, loss=loss)


def default_workloads(bulk_s: float = 30.0, fetches: int = 5) -> List[Workload]:
    return [Workload("bulk-download", seconds=bulk_s), Workload("fetch", size=100_000, count=fetches),
            Workload("fetch", size=1_000_000, count=max(1, fetches // 2))]


def all_workloads(bulk_s: float = 30.0, fetches: int = 5) -> List[Workload]:
    return default_workloads(bulk_s, fetches) + [
        Workload("bulk-upload", seconds=bulk_s), Workload("parallel", count=100, size=100_000),
        Workload("web-mix", count=max(1, fetches // 2))]


def geo(rate_mbit: float = 20, loss: float = 0.0, return_mbit: Optional[float] = None, family: int = 4) -> Scenario:
    """The GEO link; IPv6 scenarios are named with a `-v6` suffix."""
    ret = return_mbit if return_mbit is not None else rate_mbit
    name = f"geo-{rate_mbit:g}M-loss{loss * 100:g}%" + ("-v6" if family == 6 else "")
    return Scenario(name, f"GEO: 600 ms RTT, {rate_mbit:g}/{ret:g} Mbit/s, {loss * 100:g} % loss each way, "
                    f"250 ms drop-tail queue, IPv{family}",
                    LinkSpec(_dir(300, rate_mbit, loss), _dir(300, ret, loss)), default_workloads(), family=family)


def geo_matrix(families: Sequence[int] = (4,)) -> List[Scenario]:
    """20 and 50 Mbit/s x loss 0, 0.1 %, 1 %; each cell in every family, side by side."""
    return [geo(r, l, family=f) for r in (20, 50) for l in (0.0, 0.001, 0.01) for f in families]


def scenario_registry() -> Dict[str, Callable[[], List[Scenario]]]:
    return {
        "geo": lambda: [Scenario("geo", "GEO: 600 ms RTT, 20 Mbit/s forward / 5 Mbit/s return, no loss, "
                                 "250 ms queue", LinkSpec(_dir(300, 20), _dir(300, 5)), default_workloads())],
        "meo": lambda: [Scenario("meo", "MEO: 150 ms RTT, 50 Mbit/s forward / 10 Mbit/s return, no loss, "
                                 "100 ms queue", LinkSpec(_dir(75, 50, queue_ms=100), _dir(75, 10, queue_ms=100)),
                                 default_workloads())],
        "leo": lambda: [Scenario("leo", "LEO-like: 40 ms RTT, 100/20 Mbit/s, 50 ms queue, 0.1 % loss, "
                                 "a 300 ms handover outage every 15 s",
                                 LinkSpec(_dir(20, 100, 0.001, 50), _dir(20, 20, 0.001, 50),
                                          outages=[Outage(5.0, 0.3, 15.0)]), default_workloads())],
        "geo-matrix": lambda: geo_matrix((4,)),
        "geo-matrix-v6": lambda: geo_matrix((6,)),
        "geo-matrix-46": lambda: geo_matrix((4, 6)),
        "demo": lambda: [demo_scenario()],
    }


def demo_scenario(bulk_s: float = 20.0) -> Scenario:
    sc = geo(20, 0.01)
    sc.name = "demo-geo-20M-loss1%"
    sc.set_workloads([Workload("fetch", size=100_000, count=3), Workload("bulk-download", seconds=bulk_s)])
    return sc


def resolve_scenarios(names: Sequence[str]) -> List[Scenario]:
    """Registry names, or one cell of the GEO matrix by its own name (`geo-20M-loss0%-v6`)."""
    reg = scenario_registry()
    cells = {sc.name: sc for sc in geo_matrix((4, 6))}
    out: List[Scenario] = []
    for n in names:
        if n in reg:
            out.extend(reg[n]())
        elif n in cells:
            out.append(cells[n])
        else:
            raise SystemExit(f"unknown scenario {n!r}; known: {', '.join(sorted(reg))}, or one cell of "
                             f"geo-matrix-46 ({', '.join(cells)})")
    return out


# -- configurations ------------------------------------------------------------------
class Configuration:
    """What carries the traffic between client and server in one cell."""

    name = "?"
    baseline = False

    def availability(self, topo: Optional[Topology] = None) -> Optional[str]:
        """None if it can run here, else the reason it cannot."""
        return None

    def start(self, topo: Topology) -> None:
        pass

    def stop(self, topo: Topology) -> Dict:
        return {}

    def logs(self, topo: Topology) -> List[Path]:
        """Log files of the processes this configuration started (for failure reports)."""
        return []


class KernelTcp(Configuration):
    """End-to-end kernel TCP; the PEP hosts only forward.  Congestion control is set
    on the end hosts' routes (`ip route ... congctl`)."""

    baseline = True

    def __init__(self, algo: str):
        self.algo = algo
        self.name = f"e2e-{algo}"

    def availability(self, topo=None) -> Optional[str]:
        try:
            avail = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
        except OSError:
            return None
        if self.algo not in avail:
            # Try loading the module; it may be built but not loaded.
            subprocess.run(["modprobe", f"tcp_{self.algo}"], capture_output=True)
            avail = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
            if self.algo not in avail:
                return f"kernel has no {self.algo} congestion control"
        return None

    def start(self, topo: Topology) -> None:
        topo.set_congestion(self.algo)

    def stop(self, topo: Topology) -> Dict:
        topo.set_congestion(None)
        return {}


# The TOML handed to `stackpep run -c` in a PEP host (format: stackpep/pep/config.py).
# {client_if}/{server_if} are the host's client- and server-facing interfaces,
# {host} its role name, {boxes} 1 or 2; --pep-config gives another template.
DEFAULT_PEP_CONFIG = """\
# stackpep testbed: {boxes} box(es), this is {host}
[pep]
role = "splitter"

[interfaces]
client = ["{client_if}"]
server = ["{server_if}"]

[intercept]
prefixes = ["198.18.0.0/15", "fd00:5e::/32"]
{wan}"""

# The long-leg block ({wan} above): rate control at the emulated link's rate in the
# direction this host sends into (pep-a sends on the return link, pep-b on the
# forward link), buffers from the link's RTT.  Empty when that rate is unlimited.
WAN_BLOCK = """
[wan]
interface = "wan0"
rate = {rate_bps}
rtt = {rtt_s}
"""


# Zero-RTT on both boxes (docs/configuration.md "Zero-RTT"): appended to the [wan] table
# with one key the two boxes of a configuration share, and the first 128 KiB of every
# long-leg connection sent twice (docs/scps.md "First-flight redundancy"; the default
# with zero_rtt, written out so that the configuration shows it).
ZERO_RTT_KEYS = """zero_rtt = true
tfo_key = "{key}"
first_flight_redundancy = 131072
"""

# The long leg's congestion control when it is not the default rate control
# (docs/configuration.md `wan.congestion`; Vegas with its default alpha/beta/gamma).
CONGESTION_KEY = """congestion = "{mode}"
"""


def wan_block(host: str, link: Optional[LinkSpec]) -> str:
    """The [wan] table for a PEP host's config, or "" when the link has no rate limit."""
    if link is None:
        return ""
    direction = link.ret if host == "pep-a" else link.forward
    if not direction.rate_bps:
        return ""
    rtt_s = max(link.rtt_ms(), 1.0) / 1000.0
    return WAN_BLOCK.format(rate_bps=int(direction.rate_bps), rtt_s=round(rtt_s, 4))


# the link `availability()` writes its trial configs for (any rate-limited link will do)
_CHECK_LINK = LinkSpec(DirectionParams(delay_ms=300, rate_bps=20e6), DirectionParams(delay_ms=300, rate_bps=20e6))


class StackpepPep(Configuration):
    """stackpep in pep-a (one box) or in pep-a and pep-b (two boxes).

    Offered only if `stackpep.pep` imports and `stackpep check-config` accepts the
    configuration the testbed writes; otherwise reported as not available."""

    def __init__(self, boxes: int = 1, template: Optional[str] = None, zero_rtt: bool = False, workers: int = 1,
                 congestion: str = "rate"):
        self.boxes = boxes
        self.zero_rtt = zero_rtt
        self.congestion = congestion  # the long leg's [wan] congestion (rate | vegas | tcp)
        # worker processes per box (`stackpep run --workers N`); 1 by default: the GEO
        # figures measure the protocol, not the fanout (benchmarks/cpu.py compares 1 and 2)
        self.workers = workers
        self.python: Optional[str] = None  # another interpreter (another build) for the boxes: benchmarks/cpu.py
        self.tfo_key = os.urandom(16).hex()  # shared by this configuration's boxes
        self.name = f"stackpep-{'one' if boxes == 1 else 'two'}-box{'es' if boxes > 1 else ''}" + \
            ("-0rtt" if zero_rtt else "") + ("" if congestion == "rate" else f"-{congestion}") + \
            (f"-{workers}workers" if workers != 1 else "")
        self.template = template or os.environ.get("STACKPEP_TESTBED_PEP_CONFIG")
        self.procs: List[subprocess.Popen] = []
        self._reason: Optional[str] = None
        self._checked = False

    def _config_text(self, host: str, link: Optional[LinkSpec] = None) -> str:
        tpl = Path(self.template).read_text() if self.template else DEFAULT_PEP_CONFIG
        # pep-a: lan0 faces the client, wan0 the link; pep-b the other way round.
        client_if, server_if = ("lan0", "wan0") if host == "pep-a" else ("wan0", "lan0")
        wan = wan_block(host, link)
        if wan and self.congestion != "rate":
            wan += CONGESTION_KEY.format(mode=self.congestion)
        if wan and self.zero_rtt:
            wan += ZERO_RTT_KEYS.format(key=self.tfo_key)
        return tpl.format(client_if=client_if, server_if=server_if, host=host, boxes=self.boxes, wan=wan)

    def _write_config(self, host: str, workdir: Path, link: Optional[LinkSpec] = None) -> Path:
        path = workdir / f"{self.name}-{host}.toml"
        path.write_text(self._config_text(host, link))
        return path

    def availability(self, topo=None) -> Optional[str]:
        if self._checked:
            return self._reason
        self._checked = True
        try:
            importlib.import_module("stackpep.pep")
            importlib.import_module("stackpep.pep.cli")
        except Exception as exc:  # noqa: BLE001 - anything means "not usable"
            self._reason = f"stackpep.pep is not importable ({type(exc).__name__}: {exc})"
            return self._reason
        with tempfile.TemporaryDirectory(prefix="sp-pepcfg-") as tmp:
            for host in ("pep-a", "pep-b")[: self.boxes]:
                cfg = self._write_config(host, Path(tmp), _CHECK_LINK)
                res = subprocess.run(python_command("stackpep", "check-config", str(cfg)), cwd=tmp,
                                     capture_output=True, text=True, env=python_env(), timeout=60)
                if res.returncode != 0:
                    msg = [l for l in (res.stderr or res.stdout).strip().splitlines() if "problem(s)" not in l]
                    self._reason = (f"`stackpep check-config` rejects the testbed's config: "
                                    f"{msg[0].split(': ', 1)[-1] if msg else res.returncode}")
                    return self._reason
        return None

    def _log(self, topo: Topology, host: str) -> Path:
        return topo.workdir / f"{self.name}-{host}.log"

    def logs(self, topo: Topology) -> List[Path]:
        return [self._log(topo, host) for host in ("pep-a", "pep-b")[: self.boxes]]

    def start(self, topo: Topology, timeout: float = 30.0) -> None:
        """Start `stackpep run` in the PEP host(s); returns once each printed READY
        (its rules are in and capture is on)."""
        # The end hosts keep the common Linux default (cubic) on their short legs.
        topo.set_congestion("cubic")
        hosts = [topo.pep_a, topo.pep_b][: self.boxes]
        started = []
        for host in hosts:
            cfg = self._write_config(host.short, topo.workdir, topo.link_spec)
            path = self._log(topo, host.short)
            start = path.stat().st_size if path.exists() else 0
            with open(path, "ab") as log:
                argv = python_command("stackpep", "run", "-c", str(cfg), "--workers", str(self.workers))
                if self.python:
                    argv[0] = self.python
                p = host.popen(argv,
                               env=python_env(),
                               stdout=log, stderr=log, cwd=str(topo.workdir))
            self.procs.append(p)
            started.append((host.short, p, path, start))
        deadline = time.monotonic() + timeout
        for host, p, path, start in started:
            while not _printed_ready(path, start):
                if p.poll() is not None:
                    raise RuntimeError(f"{self.name}: `stackpep run` in {host} exited with {p.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: `stackpep run` in {host} not READY after {timeout:g} s")
                time.sleep(0.05)

    def stop(self, topo: Topology) -> Dict:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        topo.set_congestion(None)
        return {}


def _printed_ready(log: Path, offset: int) -> bool:
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            return b"READY\n" in f.read()
    except OSError:
        return False


def configuration_registry() -> Dict[str, Callable[[], Configuration]]:
    return {
        "e2e-cubic": lambda: KernelTcp("cubic"),
        "e2e-bbr": lambda: KernelTcp("bbr"),
        "stackpep-one-box": lambda: StackpepPep(1),
        "stackpep-two-boxes": lambda: StackpepPep(2),
        "stackpep-two-boxes-0rtt": lambda: StackpepPep(2, zero_rtt=True),
        "stackpep-two-boxes-2workers": lambda: StackpepPep(2, workers=2),
        "stackpep-two-boxes-vegas": lambda: StackpepPep(2, congestion="vegas"),
    }


DEFAULT_CONFIGS = ("e2e-cubic", "e2e-bbr", "stackpep-one-box", "stackpep-two-boxes", "stackpep-two-boxes-0rtt")


def resolve_configs(names: Sequence[str], pep_template: Optional[str] = None,
                    workers: Optional[int] = None) -> List[Configuration]:
    """The named configurations; `workers` (testbed run --pep-workers) sets the
    worker processes of every stackpep box (else each configuration's own, 1)."""
    reg = configuration_registry()
    out = []
    for n in names:
        if n not in reg:
            raise SystemExit(f"unknown configuration {n!r}; known: {', '.join(reg)}")
        cfg = reg[n]()
        if isinstance(cfg, StackpepPep) and pep_template:
            cfg.template = pep_template
        if isinstance(cfg, StackpepPep) and workers:
            cfg.workers = workers
        out.append(cfg)
    return out


# -- the runner --------------------------------------------------------------------
@dataclass
class Cell:
    scenario: str
    configuration: str
    available: bool
    reason: Optional[str] = None
    results: List[Dict] = field(default_factory=list)
    link: Optional[Dict] = None
    error: Optional[str] = None
    baseline: bool = False  # an end-to-end kernel configuration (may be unavailable here)
    log_tails: Dict[str, List[str]] = field(default_factory=dict)  # log file -> its last lines, on failure

    def as_dict(self) -> Dict:
        return dict(self.__dict__)

    @property
    def failed(self) -> bool:
        """An error, a workload that errored, or stackpep itself not available."""
        if not self.available:
            return not self.baseline
        return bool(self.error) or any(r.get("error") for r in self.results)


def run_matrix(scenarios: Sequence[Scenario], configs: Sequence[Configuration], progress=None,
               topo: Optional[Topology] = None, workdir: Optional[str] = None,
               link_backend: str = "builtin") -> List[Cell]:
    """Every workload of every scenario under every configuration; returns the cells."""
    from stackpep.testbed.progress import Progress

    progress = progress or Progress(total=sum(len(s.workloads) for s in scenarios) * len(configs))
    cells: List[Cell] = []
    own = topo is None
    if own:
        topo = Topology(workdir=workdir, link_backend=link_backend)
        topo.__enter__()
    try:
        progress.note(f"testbed {topo.prefix}: namespaces {topo.prefix}-{{client,pep-a,link,pep-b,server}}, "
                      f"work files in {topo.workdir}")
        start_http_server(topo)
        for sc in scenarios:
            for cfg in configs:
                reason = cfg.availability(topo)
                if reason:
                    cells.append(Cell(sc.name, cfg.name, False, reason, baseline=cfg.baseline))
                    progress.skip(sc, cfg, reason, len(sc.workloads))
                    continue
                cell = Cell(sc.name, cfg.name, True, baseline=cfg.baseline)
                cells.append(cell)
                try:
                    topo.start_link(sc.link)
                    cfg.start(topo)
                    topo.warm_up()
                    for k, wl in enumerate(sc.workloads):
                        with progress.step(sc, cfg, wl) as step:
                            res = wl.run(topo)
                            step.done(res)
                        cell.results.append(res)
                        if not cfg.baseline and (res.get("error") or res.get("complete") == 0):
                            # A PEP that does not carry traffic: say so once, do not
                            # wait out every remaining workload's timeout.
                            cell.error = f"{wl.name} failed: {res.get('error') or res.get('errors')}"
                            progress.note(f"! {sc.name} / {cfg.name}: {cell.error}; skipping its other workloads")
                            progress.i += len(sc.workloads) - k - 1
                            break
                except Exception as exc:  # one broken cell must not lose the others
                    cell.error = f"{type(exc).__name__}: {exc}"
                    progress.note(f"! {sc.name} / {cfg.name}: {cell.error}")
                finally:
                    try:
                        cfg.stop(topo)
                    finally:
                        cell.link = topo.stop_link()
                if cell.failed:
                    # the cause, for the report: the last lines of what the cell started
                    emulator = [topo.workdir / "emulator.log"] if "emulator" in (cell.error or "") else []
                    for path in [*cfg.logs(topo), *emulator]:
                        tail = log_tail(path)
                        if tail:
                            cell.log_tails[str(path)] = tail
    finally:
        if own:
            topo.close()
    return cells
