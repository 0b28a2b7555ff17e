"""One testbed invocation: scenarios x configurations -> table, JSON and plots."""
from __future__ import annotations

import datetime
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from stackpep.testbed.report import Progress, add_ratios, plot, table, write_json
from stackpep.testbed.scenarios import Cell, Configuration, Scenario, run_matrix


@dataclass
class RunOutput:
    cells: List[Cell]
    out_dir: Path
    json_path: Path
    table: str
    plots: List[Path] = field(default_factory=list)


def require_root() -> Optional[str]:
    if os.geteuid() != 0:
        return "the testbed builds network namespaces: run it as root"
    return None


def default_out_dir(kind: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / f"stackpep-{kind}-{stamp}"


class _Terminated(KeyboardInterrupt):
    pass


def terminate_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so that every `finally` tears down."""

    def handler(signum, frame):
        raise _Terminated()

    signal.signal(signal.SIGTERM, handler)


def execute(scenarios: Sequence[Scenario], configs: Sequence[Configuration], out_dir: Path,
            command: Sequence[str], stream=None, link_backend: str = "builtin") -> RunOutput:
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = stream or sys.stdout
    total = sum(len(s.workloads) for s in scenarios) * len(configs)
    progress = Progress(total, stream)
    cells = run_matrix(scenarios, configs, progress=progress, workdir=str(out_dir / "work"),
                       link_backend=link_backend)
    add_ratios(cells, scenarios)
    text = table(cells, scenarios)
    json_path = out_dir / "results.json"
    write_json(json_path, cells, scenarios, command, {"link_backend": link_backend})
    (out_dir / "table.txt").write_text(text + "\n")
    plots = plot(out_dir, cells, scenarios)
    return RunOutput(cells, out_dir, json_path, text, plots)
