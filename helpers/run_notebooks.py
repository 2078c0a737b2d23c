"""Execute notebooks in order with papermill: ``python -m helpers.run_notebooks notebooks/0*.ipynb``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import papermill
from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum

from helpers.config import Settings, get_settings

# Notebooks about other use cases than the scored events (customer offers, shelf layouts): they need the demo
# tables, so they are skipped when the project brings its own source.
DEMO_DATA_ONLY = (
    "02_batch_predictions_serving",
    "05_async_1_demand_model",
    "05_async_2_job_and_endpoint",
    "05_async_3_client",
)


class IpcKernelManager(AsyncKernelManager):
    """A kernel talking over local IPC sockets instead of TCP: nothing listens on a port, and ipykernel has no
    reason to warn that a TCP kernel runs without encryption (a line per notebook in `make run`)."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)


def for_project(paths: list[Path], cfg: Settings) -> list[Path]:
    """``paths`` without the demo-only notebooks when ``cfg`` names its own source."""
    return [path for path in paths if cfg.uses_demo_data or path.stem not in DEMO_DATA_ONLY]


def run_notebooks(
    paths: list[Path], output_dir: Path, parameters: dict[str, Any] | None = None, cwd: Path | None = None
) -> list[tuple[Path, float]]:
    """Run each notebook (stopping at the first failure) and return the wall time of each."""
    output_dir.mkdir(parents=True, exist_ok=True)
    timings = []
    for path in paths:
        started = time.perf_counter()
        print(f"▶ {path.name}", flush=True)
        papermill.execute_notebook(
            str(path),
            str(output_dir / path.name),
            parameters=parameters or {},
            cwd=str(cwd or path.parent),
            progress_bar=False,
            kernel_name="python3",
            kernel_manager_class=IpcKernelManager,
        )
        elapsed = time.perf_counter() - started
        timings.append((path, elapsed))
        print(f"✔ {path.name} in {elapsed:.1f} s", flush=True)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--output-dir", type=Path, default=Path(".workspace/executed"))
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args(argv)
    parameters = {name: _literal(value) for name, value in args.parameter}
    cfg = get_settings(source=parameters.get("source"))
    notebooks = for_project(args.notebooks, cfg)
    for skipped in sorted(set(args.notebooks) - set(notebooks)):
        print(f"skipped {skipped.name}: it needs the demo data (source = {cfg.source!r})", flush=True)
    timings = run_notebooks(notebooks, args.output_dir, parameters)
    total = sum(t for _, t in timings)
    print(f"{len(timings)} notebooks executed in {total:.1f} s; outputs in {args.output_dir}")
    return 0


def _literal(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


if __name__ == "__main__":
    sys.exit(main())
