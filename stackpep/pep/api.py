"""The trio embedding API: `async with stackpep.open_pep(config) as pep:`.

Order matters for a box that must never be left half-configured:
1. the configuration is checked as a whole (file, line and key per problem);
2. the interfaces are checked to exist and be up;
3. the capture sockets are opened;
4. only then the netfilter rules go in -- and they come out again on every
   way out of the block (normal exit, exception, cancellation by SIGTERM).
`stackpep cleanup` removes them after a crash that skipped step 4's undo.

Stopping: new SYNs get RST (`drain()` first lets active connections finish,
up to `limits.drain_timeout`); every connection left is reset on both legs; the
resets are sent with retries until the device took them (a full queue must not
leave a peer hanging), then the box goes on answering stray segments of the
flows it reset (a peer whose window did not take our RST sends a challenge ACK,
RFC 5961 §3.2, and gets an exact RST back) for a moment before the rules go.
"""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Dict, List, Optional, Sequence, Union

import trio

from stackpep.io.rules import InstalledRules, InterceptSpec
from stackpep.pep import config as cfgmod
from stackpep.pep.config import ConfigError, PepConfig, Problem
from stackpep.pep.dispatcher import Dispatcher
from stackpep.pep.reload import ReloadResult, compare

log = logging.getLogger("stackpep.pep")

RESET_WAIT = 1.0  # s: connection tasks get this long to send their RSTs at stop
RESET_RETRY = 1.0  # s: ... and this long for RSTs a full device queue refused
RESET_LINGER = 0.2  # s: stray segments of reset flows are answered this long before the rules go


class Pep:
    """A running splitter (what open_pep yields)."""

    def __init__(self, config: PepConfig, dispatcher: Dispatcher, rules: Optional[InstalledRules]) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.rules = rules
        self.started_monotonic = time.monotonic()
        self.metrics_address: Optional[tuple] = None  # (host, port) once [metrics] listens
        self._nursery: Optional[trio.Nursery] = None
        self._metrics_scope: Optional[trio.CancelScope] = None
        from stackpep.pep.observe import ConnectionLog

        dispatcher.on_connection_end = ConnectionLog(self)

    @property
    def rules_backend(self) -> Optional[str]:
        return self.rules.backend.name if self.rules else None

    @property
    def rules_reason(self) -> Optional[str]:
        return self.rules.reason if self.rules else None

    def statistics(self) -> Dict[str, object]:
        """An immutable-by-copy snapshot of every counter."""
        return self.dispatcher.statistics()

    def connections(self) -> List[object]:
        return list(self.dispatcher.table.values())

    def snapshot(self, connections: bool = True) -> Dict[str, object]:
        """What `stackpep stats` shows (stackpep.pep.observe.stats_snapshot)."""
        from stackpep.pep.observe import stats_snapshot

        return stats_snapshot(self, connections)

    # -- metrics -----------------------------------------------------------------
    async def _start_metrics(self, listen: Optional[str]) -> None:
        """(Re)start the metrics endpoint; raises OSError if it cannot listen."""
        from stackpep.pep.metrics import serve_metrics

        assert self._nursery is not None
        old = self._metrics_scope
        self._metrics_scope, self.metrics_address = None, None
        if old is not None:
            old.cancel()
            await trio.sleep(0)  # let it close its socket (the new one may want the port)
        if not listen:
            return
        scope = trio.CancelScope()

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                await serve_metrics(self, listen, task_status=task_status)

        self.metrics_address = await self._nursery.start(run)
        self._metrics_scope = scope

    # -- reload and drain ----------------------------------------------------------
    async def reload(self, new: Union[PepConfig, str, Path, dict]) -> ReloadResult:
        """Apply a new configuration if everything that differs may change live
        (stackpep.pep.reload); else change nothing and log each refused key."""
        cfg = _as_config(new)
        res = compare(self.config, cfg)
        if not res.ok:
            for key, why in res.refused:
                log.error("reload refused: %s cannot change while running (%s); restart to change it. "
                          "Keeping the old configuration", key, why)
            return ReloadResult((), res.refused)
        if cfg.metrics_listen != self.config.metrics_listen and self._nursery is not None:
            try:
                await self._start_metrics(cfg.metrics_listen)
            except OSError as exc:
                log.error("reload refused: metrics.listen: cannot listen on %s: %s. Keeping the old "
                          "configuration", cfg.metrics_listen, exc)
                await self._start_metrics(self.config.metrics_listen)
                return ReloadResult((), (("metrics.listen", f"cannot listen: {exc}"),))
        self.config = cfg
        self.dispatcher.reconfigure(cfg)
        if "pep.log_level" in res.applied:
            logging.getLogger("stackpep").setLevel(getattr(logging, cfg.log_level.upper()))
        log.info("configuration reloaded from %s: %s", cfg.source,
                 ", ".join(res.applied) if res.applied else "nothing changed")
        return res

    async def drain(self, timeout: Optional[float] = None) -> int:
        """Take no new connections (SYNs get RST) and wait until the active ones
        have ended, at most `timeout` (default limits.drain_timeout); returns
        the number still active.  The caller then leaves open_pep, which resets them."""
        d = self.dispatcher
        d.draining = True
        timeout = self.config.drain_timeout if timeout is None else timeout
        log.info("draining: %d active connection(s), new SYNs get RST; up to %.1f s",
                 d.active_connections(), timeout)
        with trio.move_on_after(timeout):
            while d.active_connections():
                await trio.sleep(0.05)
        left = d.active_connections()
        log.info("drained: %d connection(s) still active%s", left, " (they are reset now)" if left else "")
        return left


def intercept_spec(config: PepConfig) -> InterceptSpec:
    return InterceptSpec(
        client_interfaces=config.client_interfaces, server_interfaces=config.server_interfaces,
        prefixes=config.prefixes, ports=config.ports, exclude_local=config.exclude_local,
        mark=config.mark, instance=config.instance,
        scps_compressed=bool(config.wan_scps and config.wan_scps.get("compression")),
    )


def new_hc_table(config: PepConfig):
    """The receive contexts of SCPS header compression (stackpep._fast.scpshc), when the
    long leg offers it; None otherwise."""
    if not (config.wan_scps and config.wan_scps.get("compression")):
        return None
    from stackpep._fast.scpshc import HcTable

    return HcTable(capacity=max(256, 2 * config.max_connections))


def _as_config(config: Union[PepConfig, str, Path, dict]) -> PepConfig:
    if isinstance(config, PepConfig):
        return config
    if isinstance(config, dict):
        return cfgmod.from_dict(config)
    return cfgmod.load(config)


def check_environment(config: PepConfig) -> List[Problem]:
    """Problems only the running system can show (interfaces missing or down)."""
    from stackpep.io.routes import RouteError, Rtnl

    problems = []
    with Rtnl() as rtnl:
        for side, names in (("client", config.client_interfaces), ("server", config.server_interfaces)):
            for i, name in enumerate(names):
                key = f"interfaces.{side}[{i}]"
                try:
                    link = rtnl.link(name)
                except RouteError:
                    problems.append(Problem(config.source, config.line_of(f"interfaces.{side}"), key,
                                            f"no interface {name!r} on this host"))
                    continue
                if not link.up:
                    problems.append(Problem(config.source, config.line_of(f"interfaces.{side}"), key,
                                            f"interface {name!r} is down or has no carrier"))
    return problems


def _local_addresses() -> set:
    import ipaddress

    from stackpep.io.routes import Rtnl

    with Rtnl() as rtnl:
        return {ipaddress.ip_address(a.split("%")[0]).packed for a in rtnl.local_addresses() if a}


@asynccontextmanager
async def open_pep(config: Union[PepConfig, str, Path, dict], *, ports: Optional[Sequence] = None,
                   router=None, install_rules: Optional[bool] = None,
                   control: Optional[bool] = None,
                   capture_ports: Optional[Sequence] = None) -> AsyncIterator[Pep]:
    """Run a splitter for the block's duration.

    `ports`/`router` replace the AF_PACKET ports and kernel router (tests run
    the splitter over memory ports); `install_rules=False` skips netfilter;
    `control` serves the control socket and the metrics endpoint (default: with
    the AF_PACKET ports only, so tests over memory ports open nothing unasked).
    `capture.pcap` taps the AF_PACKET ports only (given ports are used as they are).
    `capture_ports`: AF_PACKET ports the caller opened (a worker of
    stackpep.pep.workers: its rings in the fanout groups), used as the box's own
    (router, control, pcap) but without rules unless asked; closed at exit.
    """
    cfg = _as_config(config)
    own_ports = ports is None
    if control is None:
        control = own_ports
    if install_rules is None:
        install_rules = cfg.install_rules and own_ports and capture_ports is None
    if own_ports:
        problems = check_environment(cfg)
        if problems:
            raise ConfigError(problems)
        from stackpep.io.ports import AfPacketPort, KernelRouter

        # SCPS header compression on the long leg: its ports expand protocol 105 through one
        # table (not with workers: pep.config refuses wan.scps_compression there)
        hc_table = new_hc_table(cfg) if capture_ports is None else None
        wan_client_side = cfg.wan_leg == "client"
        opened = list(capture_ports or ())
        try:
            for side, names in ((True, cfg.client_interfaces), (False, cfg.server_interfaces)):
                for name in names if capture_ports is None else ():
                    opened.append(AfPacketPort(name, client_side=side, block_size=cfg.block_size,
                                               block_count=cfg.block_count, retire_ms=cfg.retire_ms,
                                               mark=cfg.mark, gso=cfg.gso,
                                               hc_table=hc_table if side == wan_client_side else None))
            if cfg.pcap:
                # Only when on: the splitter then talks to the taps (the router
                # hands them out too), so nothing is checked per packet when off.
                from stackpep.io.pcap import interface_path, tap_ports

                try:
                    opened = tap_ports(opened, cfg.pcap, cfg.pcap_max_bytes, cfg.pcap_files)
                except OSError as exc:
                    raise ConfigError([Problem(cfg.source, cfg.line_of("capture.pcap"), "capture.pcap",
                                               f"cannot write {exc.filename or cfg.pcap}: {exc.strerror or exc}")])
                log.info("capturing every packet of each interface to pcapng: %s (%d file(s) of at most %d "
                         "bytes each)", ", ".join(interface_path(cfg.pcap, p.name) for p in opened),
                         cfg.pcap_files, cfg.pcap_max_bytes)
            router = KernelRouter(opened)
        except BaseException:
            for p in opened:
                p.close()
            raise
        ports = opened
    assert router is not None and ports is not None
    spec = intercept_spec(cfg)
    rules = InstalledRules(spec, cfg.rules_backend) if install_rules else None
    if not own_ports:
        hc_table = next((p.hc_table for p in ports if getattr(p, "hc_table", None) is not None), None)
    dispatcher = Dispatcher(cfg, ports, router, spec, local_addresses=_local_addresses if own_ports else None,
                            hc_table=hc_table)
    try:
        if rules is not None:
            rules.__enter__()
            log.info("netfilter rules installed with %s", rules.reason)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(dispatcher.run)
                pep = Pep(cfg, dispatcher, rules)
                pep._nursery = nursery
                if control:
                    if cfg.control_socket:
                        await _start_control(nursery, pep, cfg)
                    await pep._start_metrics(cfg.metrics_listen)
                try:
                    yield pep
                finally:
                    await _stop(dispatcher, ports)
                    nursery.cancel_scope.cancel()
        finally:
            if rules is not None:
                rules.__exit__(None, None, None)
                log.info("netfilter rules removed")
    finally:
        if own_ports:
            for p in ports:
                p.close()
            close = getattr(router, "close", None)
            if close:
                close()


async def _start_control(nursery: trio.Nursery, pep: Pep, cfg: PepConfig) -> None:
    from stackpep.pep.config import default_control_socket
    from stackpep.pep.control import ControlError, serve_control

    try:
        await nursery.start(serve_control, pep, cfg.control_socket)
    except (ControlError, OSError) as exc:
        if cfg.control_socket != default_control_socket(cfg.instance):
            raise ConfigError([Problem(cfg.source, cfg.line_of("control.socket"), "control.socket", str(exc))])
        # The default place is taken (another instance) or not writable: run
        # without; a configured socket that cannot be served stops the start.
        log.warning("no control socket (`stackpep stats` cannot reach this instance): %s; "
                    "set [control] socket to a path of its own", exc)


async def _stop(dispatcher: Dispatcher, ports: Sequence) -> None:
    """Reset every connection and make sure each RST left the box (module doc)."""
    with trio.CancelScope(shield=True):
        dispatcher.draining = True
        for p in ports:
            p.hold_failed_sends()
        reset_before = dispatcher.counters["ended_shutdown"]
        dispatcher.shutdown_all()
        with trio.move_on_after(RESET_WAIT):
            # let the connection tasks send their RSTs and finish
            while dispatcher.table:
                await trio.sleep(0.01)
        deadline = trio.current_time() + RESET_RETRY
        unsent = 0
        for p in ports:
            unsent += await p.retry_held(deadline)
        if unsent:
            log.warning("%d packet(s) (resets) could not be sent before stopping: the device queue stayed full",
                        unsent)
        if dispatcher.counters["ended_shutdown"] > reset_before:
            linger = trio.current_time() + RESET_LINGER
            while trio.current_time() < linger:
                await trio.sleep(0.02)
                for p in ports:
                    await p.retry_held(linger)
