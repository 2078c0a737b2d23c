"""Faults, each with a real process killed by SIGKILL: a writer mid-publish, a writer mid-merge, the workspace
server mid-run, a job's kernel; plus an endpoint whose model cannot load.

No test races a timer: a writer is stopped at a named fail point (``HELPERS_FAIL_POINT``, see
:mod:`helpers.local.fail_points`) and killed there, or killed once it shows progress (a marker file, a data
file on disk). The tests then assert what must hold whatever the moment: nothing torn, nothing lost, the
failure recorded with a reason, and the next operation works.
"""

from __future__ import annotations

import fcntl
import inspect
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import fresh_state
import mlflow
import pandas as pd
import pytest
from databricks.feature_engineering import FeatureLookup
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest, OperationFailed
from databricks.sdk.service import jobs
from databricks.sdk.service.serving import (
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    ServedEntityInput,
    ServedModelStateDeployment,
)
from jobs_server import FIXTURE_NOTEBOOKS
from polling import process_gone, wait_for
from sklearn.linear_model import LogisticRegression
from workspace import Workspace as LocalWorkspace

from helpers import serving
from helpers.local.fail_points import FAIL_POINT_ENV, FAIL_POINT_FILE_ENV
from helpers.local.feature_client import LocalFeatureEngineeringClient
from helpers.local.frames import to_arrow
from helpers.local.job_runner import KERNEL_DIED
from helpers.local.online_store import OnlineStore
from helpers.local.server.jobs_api import NOTEBOOKS_ROOT_ENV
from helpers.local.server.process import ensure_server, stop_server
from helpers.local.tables import TableMeta

TABLE = "main.faults.customers"
ONLINE = "main.faults.customers_online"
MODEL = "main.faults.tiny_model"
STORE = "fault-store"
CDF_ON = {"delta.enableChangeDataFeed": "true"}
WAIT = timedelta(minutes=3)
# Rows enough, and wide enough (~4 MB), that a publish's uncommitted rows overflow SQLite's 2 MB page cache
# into the write-ahead log, which a kill then leaves with frames of no commit.
ROWS = 50_000
NOTE = "x" * 60


def _rows(generation: int, n: int = ROWS) -> pd.DataFrame:
    """Every row of one generation carries ``spend = generation * id``: a reader can tell which it saw."""
    ids = pd.Series(range(n), dtype="int64")
    return pd.DataFrame({"customer_id": ids, "spend": ids * float(generation), "note": f"{generation}{NOTE}"})


def _generations(frame: pd.DataFrame) -> set[float]:
    """The generations a frame's rows come from (row 0 has spend 0 whatever the generation, so skip it)."""
    rest = frame[frame["customer_id"] > 0]
    return set((rest["spend"] / rest["customer_id"]).round(6))


Child = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def child(state_dir: Path) -> Iterator[Child]:
    """Starts another Python process running ``code`` with ``fe`` (a client on ``state_dir``) and ``_rows``;
    with ``fail_point``, it stops there (see :func:`_stopped_at`). Whatever is left is killed at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(code: str, fail_point: str | None = None) -> subprocess.Popen[str]:
        prelude = (
            "from pathlib import Path\n"
            "import pandas as pd\n"
            "from helpers.local.feature_client import LocalFeatureEngineeringClient\n"
            f"fe = LocalFeatureEngineeringClient(Path({str(state_dir)!r}))\n"
            f"ROWS, NOTE = {ROWS}, {NOTE!r}\n" + inspect.getsource(_rows)
        )
        env = {**os.environ}
        if fail_point:
            env |= {FAIL_POINT_ENV: fail_point, FAIL_POINT_FILE_ENV: str(_marker(state_dir))}
        process = subprocess.Popen(
            [sys.executable, "-c", prelude + code], stdout=subprocess.PIPE, text=True, env=env
        )
        started.append(process)
        return process

    yield start
    for process in started:  # a test that failed before its kill leaves a process standing at its point
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _marker(state_dir: Path) -> Path:
    return state_dir.parent / "fail-point.pid"


def _stopped_at(process: subprocess.Popen[str], state_dir: Path) -> None:
    """Wait until ``process`` stands at its fail point (it wrote its pid there); it must not end first."""
    marker = _marker(state_dir)
    wait_for(lambda: marker.exists() or process.poll() is not None, "the process to reach its fail point")
    assert marker.exists(), f"the process ended (exit code {process.returncode}) before its fail point"
    assert int(marker.read_text()) == process.pid


def _kill(process: subprocess.Popen[str]) -> bool:
    """SIGKILL ``process``; whether it died of that signal (not of its own accord before)."""
    process.send_signal(signal.SIGKILL)
    return process.wait(timeout=60) == -signal.SIGKILL


def _lock_held(path: Path) -> bool:
    """Whether another process holds the ``flock`` on ``path`` (taken and released at once if free)."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _online_rows(state_dir: Path) -> pd.DataFrame:
    with sqlite3.connect(state_dir / "online.db") as conn:
        return pd.read_sql(f'SELECT customer_id, spend FROM "{ONLINE}"', conn)


def _published_version(state_dir: Path) -> int:
    [info] = OnlineStore(state_dir).list_published()
    return info.delta_version


def _assert_online_store_whole(state_dir: Path, fe: LocalFeatureEngineeringClient) -> int:
    """The online table holds one generation, all rows, matching its recorded Delta version; returns it."""
    with sqlite3.connect(state_dir / "online.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert not [t for t in tables if t.endswith("__staging")], tables  # no half-built snapshot left
    version = _published_version(state_dir)
    online = _online_rows(state_dir)
    offline = fe._tables.read(TABLE, version=version).to_pandas()
    assert len(online) == len(offline) == ROWS
    assert _generations(online) == _generations(offline) and len(_generations(online)) == 1
    return version


# Publish and merge, killed mid-way ------------------------------------------------------------------------
@pytest.fixture
def fe(state_dir: Path) -> LocalFeatureEngineeringClient:
    client = LocalFeatureEngineeringClient(state_dir)
    # Created with the change data feed on (CREATE TABLE ... TBLPROPERTIES): TRIGGERED publishes need it,
    # and version k of the table stays generation k + 1.
    client._tables.create(TableMeta(TABLE, ["customer_id"]), to_arrow(_rows(1)), None, CDF_ON)
    return client


@pytest.mark.parametrize("publish_mode", ["TRIGGERED", "SNAPSHOT"])
def test_a_publish_killed_before_its_commit_leaves_the_online_table_whole_and_the_next_one_works(
    state_dir: Path, fe: LocalFeatureEngineeringClient, child: Child, publish_mode: str
) -> None:
    store = fe.create_online_store(name=STORE, capacity="CU_1")
    fe.publish_table(online_store=store, source_table_name=TABLE, online_table_name=ONLINE)
    fe.write_table(name=TABLE, df=_rows(2))  # every row changes: the next publish rewrites them all
    with closing(sqlite3.connect(state_dir / "online.db")) as conn:
        conn.execute(
            "PRAGMA wal_checkpoint(TRUNCATE)"
        )  # an empty write-ahead log: what follows is the publish's
    wal = state_dir / "online.db-wal"

    publisher = child(
        f"store = fe.get_online_store(name={STORE!r})\n"
        f"fe.publish_table(online_store=store, source_table_name={TABLE!r}, online_table_name={ONLINE!r},"
        f" publish_mode={publish_mode!r})\n",
        fail_point="online_store.publish.before_commit",
    )
    _stopped_at(publisher, state_dir)
    assert wal.stat().st_size > 2**20  # the rows are in the write-ahead log, not yet committed
    assert _kill(publisher)

    assert _assert_online_store_whole(state_dir, fe) == 0  # wholly the old version: nothing torn
    assert _generations(_online_rows(state_dir)) == {1.0}
    fe.publish_table(
        online_store=store, source_table_name=TABLE, online_table_name=ONLINE, publish_mode=publish_mode
    )
    assert _assert_online_store_whole(state_dir, fe) == 1
    assert _generations(_online_rows(state_dir)) == {2.0}


def _data_files(state_dir: Path) -> int:
    return len(list(LocalFeatureEngineeringClient(state_dir)._tables.path(TABLE).glob("*.parquet")))


@pytest.mark.parametrize(
    "kill_at", ["tables.merge.locked", "writing its data files", "tables.merge.committed"]
)
def test_a_merge_killed_mid_way_loses_no_row_leaves_no_lock_and_the_next_one_works(
    state_dir: Path, fe: LocalFeatureEngineeringClient, child: Child, kill_at: str
) -> None:
    lock = fe._tables.path(TABLE).with_suffix(".lock")
    merges = (
        f"fe.write_table(name={TABLE!r}, df=_rows(2))\n"  # version 1, then the merge that is killed
        "for generation in range(3, 100):\n"
        f"    fe.write_table(name={TABLE!r}, df=_rows(generation))\n"
        "    print(flush=True)\n"
    )
    if kill_at.startswith("tables."):  # at a fail point, before the merge wrote anything or once it committed
        writer = child(merges, fail_point=kill_at)
        _stopped_at(writer, state_dir)
        assert _lock_held(lock)
    else:  # inside deltalake's own merge, once it wrote a data file (it may have committed since)
        writer = child(merges)
        assert writer.stdout is not None
        writer.stdout.readline()  # a merge done: the next is under way
        files = _data_files(state_dir)
        wait_for(lambda: writer.poll() is not None or _data_files(state_dir) > files, "a new data file")
    assert _kill(writer)

    assert not _lock_held(lock)  # the lock died with its holder: the next writer is not blocked
    version = fe._tables.version(TABLE)
    if kill_at == "tables.merge.locked":
        assert version == 0
    elif kill_at == "tables.merge.committed":
        assert version == 1
    table = fe.read_table(name=TABLE)
    assert len(table) == ROWS and table["customer_id"].is_unique  # no row lost, none doubled
    assert _generations(table) == {float(version + 1)}  # wholly the last committed merge, version k = k+1
    for old in range(version):  # and every earlier version still reads whole
        assert _generations(fe._tables.read(TABLE, version=old).to_pandas()) == {float(old + 1)}

    fe.write_table(name=TABLE, df=_rows(500))
    assert fe._tables.version(TABLE) == version + 1
    assert _generations(fe.read_table(name=TABLE)) == {500.0}


# The workspace server, its job runs and its endpoints -----------------------------------------------------
ORDERS = "main.faults.orders"
ORDERS_ONLINE = "main.faults.orders_online"
ORDER_SPEC = "main.faults.order_spend"
ORDER_IDS = list(range(1, 2001))


@dataclass(frozen=True)
class Workspace(LocalWorkspace):
    """A real server process (``python -m helpers.local.server serve``) on its own state directory."""

    @property
    def pid(self) -> int:
        return self.server.pid


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    state_dir = fresh_state.seed(tmp_path_factory.mktemp("faults"))
    uri = f"sqlite:///{state_dir / 'mlflow.db'}"
    patch = pytest.MonkeyPatch()
    patch.setenv("HELPERS_STATE_DIR", str(state_dir))
    patch.setenv(NOTEBOOKS_ROOT_ENV, str(FIXTURE_NOTEBOOKS))  # the server runs the fixture job notebooks
    mlflow.set_tracking_uri(uri)  # also exported, so the server process uses the same registry
    mlflow.set_registry_uri(uri)
    try:
        ensure_server(state_dir)
        yield Workspace(state_dir)
    finally:
        stop_server(state_dir)
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        patch.undo()


def _kill_server(workspace: Workspace) -> None:
    pid = workspace.pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process_gone(pid), "the server to die")


def _writer_job(w: WorkspaceClient, fe: LocalFeatureEngineeringClient) -> int:
    """Orders (generation 1) published, served by a Feature Serving endpoint; a job that writes them."""
    ids = pd.Series(ORDER_IDS, dtype="int64")
    orders = pd.DataFrame({"order_id": ids, "spend": ids * 1.0, "generation": 1})
    fe._tables.create(TableMeta(ORDERS, ["order_id"]), to_arrow(orders), None, CDF_ON)
    store = fe.create_online_store(name=STORE, capacity="CU_1")
    fe.publish_table(online_store=store, source_table_name=ORDERS, online_table_name=ORDERS_ONLINE)
    fe.create_feature_spec(
        name=ORDER_SPEC, features=[FeatureLookup(table_name=ORDERS, lookup_key="order_id")]
    )
    entity = ServedEntityInput(entity_name=ORDER_SPEC, workload_size="Small", scale_to_zero_enabled=True)
    w.serving_endpoints.create_and_wait(
        name="order-spend", config=EndpointCoreConfigInput(name="order-spend", served_entities=[entity])
    )
    parameters = {
        "table": ORDERS,
        "online_table": ORDERS_ONLINE,
        "online_store": STORE,
        "rounds": "1",
        "marker": "",
    }
    return w.jobs.create(
        name="writer",
        parameters=[jobs.JobParameterDefinition(name=k, default=v) for k, v in parameters.items()],
        tasks=[
            jobs.Task(
                task_key="write", notebook_task=jobs.NotebookTask(notebook_path="notebooks/jobs/writer")
            )
        ],
    ).job_id


def _orders_whole(fe: LocalFeatureEngineeringClient, w: WorkspaceClient) -> int:
    """Offline, online and the endpoint each hold one whole generation; returns the online one."""
    version = fe._tables.version(ORDERS)
    offline = fe.read_table(name=ORDERS)
    assert len(offline) == len(ORDER_IDS) and set(offline["generation"]) == {version + 1}
    assert (offline["spend"] == offline["order_id"] * (version + 1.0)).all()
    [info] = [i for i in OnlineStore(fe._state_dir).list_published() if i.source_table_name == ORDERS]
    with sqlite3.connect(fe._state_dir / "online.db") as conn:
        online = pd.read_sql(f'SELECT order_id, spend, generation FROM "{ORDERS_ONLINE}"', conn)
    generation = info.delta_version + 1  # the online table is the offline one at its recorded version
    assert len(online) == len(ORDER_IDS) and set(online["generation"]) == {generation}
    assert (online["spend"] == online["order_id"] * float(generation)).all()
    answer = w.serving_endpoints.query("order-spend", dataframe_records=[{"order_id": 7}, {"order_id": 2000}])
    assert [row["spend"] for row in answer.outputs] == [7.0 * generation, 2000.0 * generation]
    return generation


def test_a_server_killed_during_a_writing_run_fails_it_and_the_next_run_works(
    workspace: Workspace, tmp_path: Path
) -> None:
    w = workspace.client()
    fe = LocalFeatureEngineeringClient(workspace.state_dir)
    job_id = _writer_job(w, fe)
    marker = tmp_path / "kernel.pid"
    run_id = w.jobs.run_now(job_id, job_parameters={"rounds": "10000", "marker": str(marker)}).run_id
    wait_for(marker.exists, "the run to write a first round")
    kernel = int(marker.read_text())

    _kill_server(workspace)
    assert not process_gone(kernel)  # the notebook outlives the server (its own session) and keeps writing
    ensure_server(workspace.state_dir)  # the new server kills the orphan, mid-round, and closes the run

    w = workspace.client()
    run = w.jobs.get_run(run_id)
    assert run.state.life_cycle_state == jobs.RunLifeCycleState.INTERNAL_ERROR
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert "server stopped while the run was active" in run.state.state_message
    assert run.tasks[0].state.result_state == jobs.RunResultState.FAILED
    assert process_gone(kernel)
    generation = _orders_whole(fe, w)
    assert generation >= 2  # the killed run had published at least one round

    rerun = w.jobs.run_now(job_id).result(timeout=WAIT)
    assert rerun.state.result_state == jobs.RunResultState.SUCCESS, rerun.state.state_message
    done = int(w.jobs.get_run_output(rerun.tasks[0].run_id).notebook_output.result)
    assert done == fe._tables.version(ORDERS) + 1 and _orders_whole(fe, w) == done


def test_a_job_whose_kernel_dies_fails_with_a_message(workspace: Workspace) -> None:
    w = workspace.client()
    task = jobs.Task(task_key="crash", notebook_task=jobs.NotebookTask(notebook_path="notebooks/jobs/crash"))
    job_id = w.jobs.create(name="crash", tasks=[task]).job_id

    run = w.jobs.run_now(job_id).result(timeout=WAIT)  # ends: it neither hangs nor stays RUNNING

    assert run.state.life_cycle_state == jobs.RunLifeCycleState.TERMINATED
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert (
        run.state.state_message
        == "Task crash failed with message: Workload failed, see run output for details"
    )
    assert w.jobs.get_run_output(run.tasks[0].run_id).error == KERNEL_DIED


def _register_models(state_dir: Path) -> None:
    """Version 1 of a tiny model, and version 2 whose serialized model is corrupt: it cannot load."""
    experiment = mlflow.create_experiment("faults", artifact_location=(state_dir / "mlruns").as_uri())
    x, y = pd.DataFrame({"x1": [0.0, 1.0, 2.0, 3.0]}), [0, 0, 1, 1]
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment):
            signature = mlflow.models.infer_signature(x, y)
            model = LogisticRegression().fit(x, y)
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                registered_model_name=MODEL,
                pip_requirements=["scikit-learn"],  # skips inferring them (a subprocess per model)
            )
    artifacts = Path(urlparse(mlflow.get_logged_model(info.model_id).artifact_location).path)
    (artifacts / info.flavors["sklearn"]["pickled_model"]).write_bytes(b"not a model")


def _served(name: str, version: str) -> EndpointCoreConfigInput:
    entity = ServedEntityInput(
        entity_name=MODEL, entity_version=version, workload_size="Small", scale_to_zero_enabled=True
    )
    return EndpointCoreConfigInput(name=name, served_entities=[entity])


def test_a_model_that_cannot_load_is_reported_and_the_other_endpoints_keep_serving(
    workspace: Workspace,
) -> None:
    _register_models(workspace.state_dir)
    w = workspace.client()
    server = workspace.pid
    w.serving_endpoints.create_and_wait(name="healthy", config=_served("healthy", "1"))

    with pytest.raises(OperationFailed):
        w.serving_endpoints.create_and_wait(name="corrupt", config=_served("corrupt", "2"))
    corrupt = w.serving_endpoints.get("corrupt")
    assert corrupt.state.ready == EndpointStateReady.NOT_READY
    assert corrupt.state.config_update == EndpointStateConfigUpdate.UPDATE_FAILED
    [entity] = corrupt.pending_config.served_entities
    assert entity.state.deployment == ServedModelStateDeployment.DEPLOYMENT_FAILED
    assert entity.state.deployment_state_message  # why it failed (here: the corrupt file)
    with pytest.raises(BadRequest, match="no served entity ready"):
        w.serving_endpoints.query("corrupt", dataframe_records=[{"x1": 3.0}])
    with pytest.raises(OperationFailed, match="UPDATE_FAILED"):  # the notebooks' waiter says so too
        serving.wait_until_updated(w, "corrupt")

    # An update to the corrupt version fails too; the endpoint keeps serving the version it had.
    with pytest.raises(OperationFailed):
        w.serving_endpoints.update_config_and_wait(
            name="healthy", served_entities=_served("healthy", "2").served_entities
        )
    healthy = w.serving_endpoints.get("healthy")
    assert healthy.state.ready == EndpointStateReady.READY
    assert healthy.state.config_update == EndpointStateConfigUpdate.UPDATE_FAILED
    assert healthy.config.served_entities[0].entity_version == "1"
    answer = w.serving_endpoints.query("healthy", dataframe_records=[{"x1": 3.0}])
    assert answer.predictions == [1] and answer.served_model_name == "tiny_model-1"
    assert workspace.pid == server  # the same process throughout: nothing crashed
