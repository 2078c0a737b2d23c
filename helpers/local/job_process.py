"""A job run's process, started before the run arrives: papermill with a kernel that has the project loaded.

``python -m helpers.local.job_process <kernel name>`` starts a kernel and, unless its run is already there,
imports :data:`PRELOAD` into it (what job notebooks import first, with mlflow, pandas and pyarrow behind it),
then waits for one line on stdin: a run's spec (JSON: ``input``, ``output``, ``parameters``, ``cwd``,
``kernel_name``, ``environment``, ``done``). It moves the kernel into the run's working directory
and environment, executes the notebook with papermill on that kernel, writes its exit code to the ``done``
file (the run is over for the server from then on), shuts the kernel down gracefully (its ``atexit``
handlers run) and exits with that code: 0 success, 1 the notebook raised or its kernel died (the reason is
the last line of its output). End of input instead of a spec (the pool closed, or the server died) shuts
the kernel down and exits.

:class:`JobProcesses` is the server's side: processes started ahead of demand, each taken by exactly one
run and replaced at once, so every run still executes in a fresh process tree of its own.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

KERNEL_DIED = (
    "Fatal error: the notebook's Python kernel died while running a cell (killed, out of memory or crashed)."
)
PRELOAD = "import helpers.platform\nimport helpers.local.notebook_io\n"
HISTORY = "--HistoryManager.hist_file=:memory:"  # what nbclient gives the kernels it starts
STARTUP_TIMEOUT = 60
READY = "ready for a run"  # in a waiting process's log once its kernel is up and the preload done
SIZE_ENV = "HELPERS_JOB_WARM_PROCESSES"
DEFAULT_SIZE = 1
FINISH_SECONDS = 10  # a finished run's process shuts its kernel down within jupyter_client's own bounds


def kill_tree(pid: int, created: float | None = None) -> bool:
    """Kill a process and all its descendants (the kernel runs in a session of its own).

    With ``created``, only when the process is the one that started then (pids are reused).
    """
    try:
        root = psutil.Process(pid)
        if created is not None and abs(root.create_time() - created) > 0.01:
            return False
        root.suspend()  # stopped, it starts no process while its tree is listed
        victims = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for victim in victims:
        with suppress(psutil.NoSuchProcess):
            victim.kill()
    psutil.wait_procs(victims, timeout=10)
    return True


# The server's side -----------------------------------------------------------------------------------------
@dataclass
class JobProcess:
    """A started job process waiting for its run; its output so far is in ``log``."""

    process: subprocess.Popen[bytes]
    log: Path

    def start(self, spec: dict[str, Any], log: Path) -> None:
        """Hand the process its run: its output (kernel start included) continues in ``log``.

        The spec travels through the pipe, not a file: its environment stays off the disk.
        """
        os.replace(self.log, log)  # the open file moves with its name: nothing written is lost
        self.log = log
        assert self.process.stdin is not None
        with suppress(BrokenPipeError):  # it died meanwhile: its exit code and log tell the run why
            self.process.stdin.write(json.dumps(spec).encode() + b"\n")
            self.process.stdin.close()


class JobProcesses:
    """Job processes started ahead of demand (``size`` of them waiting, ``HELPERS_JOB_WARM_PROCESSES``).

    :meth:`take` hands out a waiting process (or starts one, if none waits) and :meth:`fill` starts its
    replacement. ``environment()`` is the environment a process starts with; each run's own differences
    (its exit and parameters files) reach the kernel with the run's spec.
    """

    def __init__(
        self,
        directory: Path,
        environment: Callable[[], dict[str, str]],
        python: str = sys.executable,
        kernel_name: str = "python3",
        size: int | None = None,
    ) -> None:
        self.directory = directory
        self.environment = environment
        self.python = python
        self.kernel_name = kernel_name
        self.size = _size() if size is None else size
        self._waiting: list[JobProcess] = []
        self._finishing: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def waiting(self) -> list[JobProcess]:
        """The processes waiting for a run, the next one to be taken first."""
        with self._lock:
            return list(self._waiting)

    @property
    def runtime_dir(self) -> Path:
        """Where the waiting kernels' connection files are (``JUPYTER_RUNTIME_DIR``)."""
        return self.directory / "runtime"

    def fill(self) -> None:
        """Start processes until ``size`` wait (none once closed)."""
        with self._lock:
            self._waiting = [p for p in self._waiting if p.process.poll() is None or _discard(p)]
            while not self._closed and len(self._waiting) < self.size:
                self._waiting.append(self._spawn())

    def take(self) -> JobProcess:
        """A waiting process, the oldest first; one started now if none waits."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the job processes are closed")
            while self._waiting:
                taken = self._waiting.pop(0)
                if taken.process.poll() is None:
                    return taken
                _discard(taken)
            return self._spawn()

    def finishing(self, process: subprocess.Popen[bytes]) -> None:
        """``process`` ended its run and shuts its kernel down; reap it when it exits."""
        with self._lock:
            self._finishing = [p for p in self._finishing if p.poll() is None]
            self._finishing.append(process)

    def close(self) -> None:
        """Kill the waiting processes (they ran nothing); give finishing ones time to end, then kill them."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
            finishing, self._finishing = self._finishing, []
        for taken in waiting:
            kill_tree(taken.process.pid)
            _discard(taken)
        for process in finishing:
            try:
                process.wait(timeout=FINISH_SECONDS)
            except subprocess.TimeoutExpired:
                kill_tree(process.pid)
                process.wait()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)  # connection files of the killed kernels

    def _spawn(self) -> JobProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        log_path = self.directory / f"{uuid.uuid4().hex}.log"
        environment = {**self.environment(), "JUPYTER_RUNTIME_DIR": str(self.runtime_dir)}
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [self.python, "-m", "helpers.local.job_process", self.kernel_name],
                env=environment,
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a cancel kills its whole tree; the server's signals do not reach it
            )
        return JobProcess(process, log_path)


def _size() -> int:
    raw = os.environ.get(SIZE_ENV, "").strip()
    if not raw:
        return DEFAULT_SIZE
    if not raw.isdigit():
        raise ValueError(f"{SIZE_ENV} must be a whole number of processes (0: none ahead), got {raw!r}")
    return int(raw)


def _discard(taken: JobProcess) -> bool:
    """Forget a waiting process that ended (or was killed): reap it, remove its log."""
    with suppress(OSError):
        taken.process.stdin.close()  # type: ignore[union-attr]
    taken.process.wait()
    taken.log.unlink(missing_ok=True)
    return False


# The process's side ----------------------------------------------------------------------------------------
@dataclass
class _Kernel:
    manager: Any  # jupyter_client's AsyncKernelManager, imported in the process only
    client: Any  # a ready AsyncKernelClient of it


def _start_kernel(kernel_name: str) -> _Kernel:
    """A running kernel with a ready client."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    manager = AsyncKernelManager(kernel_name=kernel_name)
    run_sync(manager.start_kernel)(extra_arguments=[HISTORY])
    client = manager.client()
    client.start_channels()
    run_sync(client.wait_for_ready)(timeout=STARTUP_TIMEOUT)
    return _Kernel(manager, client)


def _alive(kernel: _Kernel) -> bool:
    """Whether the kernel process still runs (a zombie, killed and not yet reaped, does not)."""
    from jupyter_core.utils import run_sync

    try:
        running = psutil.Process(kernel.manager.provisioner.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        running = False
    return running and run_sync(kernel.manager.is_alive)()


def _execute(kernel: _Kernel, code: str) -> None:
    """Run ``code`` in the kernel without a trace: no output, no history, no execution count."""
    from jupyter_core.utils import run_sync

    reply = run_sync(kernel.client.execute_interactive)(
        code, silent=True, store_history=False, timeout=STARTUP_TIMEOUT, output_hook=lambda _: None
    )
    if reply["content"]["status"] != "ok":
        log.warning("kernel setup failed: %s", reply["content"].get("evalue"))


def _enter(cwd: str, environment: dict[str, str]) -> str:
    """Code that moves the kernel into the run's directory and environment, as if started there.

    Only what differs from the environment this process started the kernel with changes: what the kernel
    set for itself (``MPLBACKEND``, ``JPY_PARENT_PID``, ...) stays, as in a kernel started for the run.
    """
    started = dict(os.environ)
    changed = {name: value for name, value in environment.items() if started.get(name) != value}
    removed = sorted(set(started) - set(environment))
    return (
        "import importlib as _importlib, json as _json, os as _os\n"
        f"_os.chdir({cwd!r})\n"
        f"_os.environ.update(_json.loads({json.dumps(changed)!r}))\n"
        f"[_os.environ.pop(name, None) for name in {removed!r}]\n"
        "_importlib.invalidate_caches()\n"
        "del _importlib, _json, _os\n"
    )


def _run(spec: dict[str, Any], kernel: _Kernel) -> int:
    """Execute the spec's notebook on ``kernel``; the process's exit code."""
    import papermill
    from nbclient.exceptions import DeadKernelError

    try:
        _execute(kernel, _enter(spec["cwd"], spec["environment"]))
        papermill.execute_notebook(
            spec["input"],
            spec["output"],
            parameters=spec["parameters"],
            cwd=spec["cwd"],
            kernel_name=spec["kernel_name"],
            progress_bar=False,
            log_output=True,
            km=kernel.manager,
        )
    except papermill.PapermillExecutionError as exc:
        print(f"{exc.ename}: {exc.evalue}", file=sys.stderr)
        return 1
    except DeadKernelError:  # the kernel process ended mid-cell: killed (SIGKILL, out of memory) or crashed
        print(KERNEL_DIED, file=sys.stderr)
        return 1
    return 0


def _report(done: str, code: int) -> None:
    staging = Path(f"{done}.tmp")
    staging.write_text(str(code))
    staging.replace(done)


def main(argv: list[str] | None = None) -> int:
    # jsonschema imports rfc3987_syntax, which builds ~35 Lark parsers at import (~2 s per run here,
    # python-jsonschema/jsonschema#1428); notebook schemas never use its IRI formats, so skip it.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import papermill  # noqa: F401 - loaded before the run arrives
    from jupyter_core.utils import run_sync

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    [kernel_name] = argv if argv is not None else sys.argv[1:]
    kernel = _start_kernel(kernel_name)
    run_waiting = select.select([sys.stdin], [], [], 0)[0]
    if not run_waiting:  # a run already here skips the preload (its notebook may not need it)
        _execute(kernel, PRELOAD)  # a failing import fails again, visibly, when the notebook runs it
    log.info("job process %s, kernel %s: %s", os.getpid(), kernel.manager.provisioner.pid, READY)
    line = sys.stdin.readline().strip()
    code = 0
    try:
        if line:
            if not _alive(kernel):  # it died while waiting (killed, out of memory): the run gets a new one
                kernel.client.stop_channels()
                run_sync(kernel.manager.cleanup_resources)()
                kernel = _start_kernel(kernel_name)
            spec = json.loads(line)
            code = _run(spec, kernel)
            _report(spec["done"], code)
    finally:
        kernel.client.stop_channels()
        if _alive(kernel):
            run_sync(kernel.manager.shutdown_kernel)(now=not line)
        run_sync(kernel.manager.cleanup_resources)()
    return code


if __name__ == "__main__":
    sys.exit(main())
