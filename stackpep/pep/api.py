"""The trio embedding API: `async with stackpep.open_pep(config) as pep:`.

Order matters for a box that must never be left half-configured:
1. the configuration is checked as a whole (file, line and key per problem);
2. the interfaces are checked to exist and be up;
3. the capture sockets are opened;
4. only then the netfilter rules go in -- and they come out again on every
   way out of the block (normal exit, exception, cancellation by SIGTERM).
`stackpep cleanup` removes them after a crash that skipped step 4's undo.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Dict, List, Optional, Sequence, Union

import trio

from stackpep.io.rules import InstalledRules, InterceptSpec
from stackpep.pep import config as cfgmod
from stackpep.pep.config import ConfigError, PepConfig, Problem
from stackpep.pep.dispatcher import Dispatcher

log = logging.getLogger("stackpep.pep")


class Pep:
    """A running splitter (what open_pep yields)."""

    def __init__(self, config: PepConfig, dispatcher: Dispatcher, rules: Optional[InstalledRules]) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.rules = rules

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


def intercept_spec(config: PepConfig) -> InterceptSpec:
    return InterceptSpec(
        client_interfaces=config.client_interfaces, server_interfaces=config.server_interfaces,
        prefixes=config.prefixes, ports=config.ports, exclude_local=config.exclude_local,
        mark=config.mark, instance=config.instance,
    )


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
                   router=None, install_rules: Optional[bool] = None) -> AsyncIterator[Pep]:
    """Run a splitter for the block's duration.

    `ports`/`router` replace the AF_PACKET ports and kernel router (tests run
    the splitter over memory ports); `install_rules=False` skips netfilter.
    """
    cfg = _as_config(config)
    own_ports = ports is None
    if install_rules is None:
        install_rules = cfg.install_rules and own_ports
    if own_ports:
        problems = check_environment(cfg)
        if problems:
            raise ConfigError(problems)
        from stackpep.io.ports import AfPacketPort, KernelRouter

        opened = []
        try:
            for side, names in ((True, cfg.client_interfaces), (False, cfg.server_interfaces)):
                for name in names:
                    opened.append(AfPacketPort(name, client_side=side, block_size=cfg.block_size,
                                               block_count=cfg.block_count, retire_ms=cfg.retire_ms,
                                               mark=cfg.mark, gso=cfg.gso))
            router = KernelRouter(opened)
        except BaseException:
            for p in opened:
                p.close()
            raise
        ports = opened
    assert router is not None and ports is not None
    spec = intercept_spec(cfg)
    rules = InstalledRules(spec, cfg.rules_backend) if install_rules else None
    dispatcher = Dispatcher(cfg, ports, router, spec, local_addresses=_local_addresses if own_ports else None)
    try:
        if rules is not None:
            rules.__enter__()
            log.info("netfilter rules installed with %s", rules.reason)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(dispatcher.run)
                pep = Pep(cfg, dispatcher, rules)
                try:
                    yield pep
                finally:
                    dispatcher.shutdown_all()
                    with trio.move_on_after(1) as cs:
                        cs.shield = True
                        # let the connection tasks send their RSTs and finish
                        while dispatcher.table:
                            await trio.sleep(0.01)
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
