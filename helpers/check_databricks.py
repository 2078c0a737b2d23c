"""``make check-databricks``: what a workspace would refuse, found before deploying.

* every job of ``databricks.yml`` (for each target, its ``${var.x}`` resolved from the bundle's variables and
  ``helpers/project.yml``) loads through Databricks' typed bundle models (``databricks.bundles.jobs.Job``,
  PyPI ``databricks-bundles``), which reject an unknown or misspelt field, and so does the SDK job definition
  ``helpers.jobs.job_settings(...).as_dict()`` (notebook 05's lesson 2 writes the same out for
  ``w.jobs.create``; ``tests/test_course_async.py`` holds the two alike);
* every job cluster runs a Databricks Runtime ML at or above the online stores' minimum
  (``helpers/databricks_runtime.yml``), or the job runs on serverless environments;
* the SDK-created job's compute is the bundle's (``helpers.jobs.job_compute``);
* every notebook parameter can be set as a widget of the same name: ``platform.settings()`` (which applies
  widgets to the notebook's parameters on Databricks) runs before any other code reads them.

Prints one line per problem and exits 1 if there is any. Needs the dev extra (``databricks-bundles``).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from helpers.config import PROJECT_ROOT, get_settings

RUNTIME_FILE = Path(__file__).resolve().parent / "databricks_runtime.yml"
_VAR = re.compile(r"\$\{var\.(\w+)\}")


def bundle() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "databricks.yml").read_text())


def variables(config: dict[str, Any], target: str) -> dict[str, Any]:
    """The bundle's variables for ``target``: defaults (bundle and included files), then the target's."""
    specs = dict(config.get("variables") or {})
    for pattern in config.get("include") or []:
        for path in sorted(PROJECT_ROOT.glob(pattern)):
            specs.update((yaml.safe_load(path.read_text()) or {}).get("variables") or {})
    values = {name: spec.get("default") for name, spec in specs.items()}
    values.update((config["targets"][target] or {}).get("variables") or {})
    return values


def resolve(value: Any, values: dict[str, Any]) -> Any:
    """``value`` with every ``${var.x}`` replaced (a whole-string reference keeps the variable's type)."""
    if isinstance(value, dict):
        return {key: resolve(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, values) for item in value]
    if isinstance(value, str):
        whole = _VAR.fullmatch(value)
        if whole:
            return values[whole.group(1)]
        return _VAR.sub(lambda m: str(values[m.group(1)]), value)
    return value


def sdk_job() -> dict[str, Any]:
    """The SDK job definition of notebook 05's lesson 2 (``w.jobs.create``), with the bundle's parameters."""
    from helpers import jobs

    cfg = get_settings()
    (job,) = [job for job in bundle()["resources"]["jobs"].values() if job["name"] == "${var.job_name}"]
    parameters = {p["name"]: p["default"] for p in job["parameters"]}
    path = f"/Users/someone@example.com/serving-architectures/notebooks/jobs/{cfg.job_name}"
    return jobs.job_settings(cfg.job_name, path, parameters, compute=jobs.job_compute(cfg)).as_dict()


def _runtime_problems(where: str, job: dict[str, Any]) -> Iterator[str]:
    runtime = yaml.safe_load(RUNTIME_FILE.read_text())
    minimum = tuple(int(part) for part in str(runtime["minimum"]).split("."))
    clusters = [c["new_cluster"] for c in job.get("job_clusters") or []]
    clusters += [t["new_cluster"] for t in job.get("tasks") or [] if "new_cluster" in t]
    uses_cluster = all(t.get("job_cluster_key") or t.get("new_cluster") for t in job.get("tasks") or [])
    if not uses_cluster and not job.get("environments"):
        yield f"{where}: a task has no compute (no job cluster, no serverless environment)"
    for cluster in clusters:
        version = str(cluster.get("spark_version", ""))
        found = re.match(r"(\d+)\.(\d+)\.x-.*ml", version)
        if not found or tuple(map(int, found.groups())) < minimum:
            yield (
                f"{where}: spark_version {version!r} is not a Databricks Runtime ML >= {runtime['minimum']} "
                "(online stores need it)"
            )


def _job_problems(where: str, job: dict[str, Any]) -> Iterator[str]:
    from databricks.bundles.jobs import Job

    try:
        Job.from_dict(job)
    except (ValueError, TypeError) as error:
        yield f"{where}: {error}"
    yield from _runtime_problems(where, job)


def _parameters_cell(notebook: dict[str, Any]) -> tuple[int, list[str]]:
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code" and "parameters" in cell["metadata"].get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            names = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
            return index, [name for name in names if isinstance(name, str)]
    return -1, []


def widget_problems(path: Path) -> Iterator[str]:
    """Parameters of ``path`` a widget (a job's task parameter) could not set."""
    notebook = json.loads(path.read_text())
    index, names = _parameters_cell(notebook)
    if not names:
        return
    for cell in notebook["cells"][index + 1 :]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        if re.search(r"\bplatform\.(settings|job_parameters)\(", code):
            return
        used = {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}
        if used & set(names):
            yield (
                f"{path.relative_to(PROJECT_ROOT)}: parameters {sorted(used & set(names))} are read before "
                "platform.settings() applies the widgets"
            )
            return
    where = path.relative_to(PROJECT_ROOT)
    yield f"{where}: never calls platform.settings(), so no widget can set its parameters"


def problems() -> list[str]:
    from helpers import jobs

    config = bundle()
    found: list[str] = []
    bundle_clusters = []
    for target in config["targets"]:
        values = variables(config, target)
        for name, job in config["resources"]["jobs"].items():
            resolved = resolve(job, values)
            found += _job_problems(f"databricks.yml [{target}] jobs.{name}", resolved)
            bundle_clusters += [(target, name, c) for c in resolved.get("job_clusters") or []]
    sdk = sdk_job()
    found += _job_problems("helpers.jobs.job_settings (notebook 05's w.jobs.create)", sdk)
    compute = jobs.job_compute(get_settings()).as_dict()
    for target, name, cluster in bundle_clusters:
        if target == "dev" and cluster != compute:
            found.append(f"databricks.yml [dev] jobs.{name}: {cluster} is not job_compute() {compute}")
    for path in sorted((PROJECT_ROOT / "notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" not in path.parts:
            found += widget_problems(path)
    return found


def main() -> int:
    found = problems()
    for problem in found:
        print(problem)
    print(f"check-databricks: {len(found)} problem(s)" if found else "check-databricks: ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
