"""`millpond submit JOB --master URL -- ARGS`: a thin wrapper over `spark-submit`.

It ships the project as a zip (`--py-files`), asks for the Delta packages and the Ivy cache
the local runs use, and runs `jobs/<JOB>.py` on the cluster with the given arguments.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pyspark

from jobs.config import Config, cache_dir
from jobs.spark import SparkSettings, prepare_environment, spark_conf
from lineage.errors import MillpondError

PACKAGES = ("ingestion", "curation", "lineage", "trainers", "evals", "jobs")
JOBS_DIR = Path(__file__).resolve().parent


# Jobs spark-submit can run, and their files under `jobs/` (each a spark-submit application). A
# job file never takes the name of a top-level package: spark-submit puts `jobs/` first on the
# path, so `jobs/lineage.py` would hide the `lineage` package.
JOB_FILES = {
    "ingest": "ingest",
    "curate": "curate",
    "snapshot": "snapshot",
    "lineage": "subject_requests",
    "stream-interactions": "stream_interactions",
    "preferences": "preferences",
}
JOBS = tuple(JOB_FILES)


class UnknownJobError(MillpondError, ValueError):
    """`millpond submit` was asked for a job that does not exist."""


def build_py_files(destination: Path) -> Path:
    """A zip of millpond's packages, named by its content so an unchanged project is not rebuilt."""
    root = JOBS_DIR.parent
    files = sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    target = destination / f"millpond-{digest.hexdigest()[:16]}.zip"
    if not target.exists():
        destination.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, path.relative_to(root).as_posix())
        partial.replace(target)
    return target


def spark_home() -> Path:
    return Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent)


def submit_command_line(
    job: str,
    settings: SparkSettings,
    job_args: list[str],
    *,
    deploy_mode: str = "client",
    python: str | None = None,
    extra_conf: dict[str, str] | None = None,
) -> list[str]:
    """The full spark-submit command for a job (also handy to print with --dry-run)."""
    if job not in JOBS:
        raise UnknownJobError(f"unknown job {job!r}; jobs: {', '.join(JOBS)}")
    cache = cache_dir()
    conf = spark_conf(settings, cache)
    conf.pop("spark.master")
    conf.pop("spark.driver.memory", None)
    interpreter = python or os.environ.get("PYSPARK_PYTHON") or sys.executable
    conf["spark.pyspark.python"] = interpreter
    conf.setdefault("spark.log.level", "WARN")
    if deploy_mode == "client":
        conf["spark.pyspark.driver.python"] = sys.executable
    conf.update(extra_conf or {})
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        "--master",
        settings.master,
        "--deploy-mode",
        deploy_mode,
        "--name",
        f"millpond-{job}",
        "--driver-memory",
        settings.driver_memory,
        "--py-files",
        str(build_py_files(cache / "submit")),
    ]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command.append(str(JOBS_DIR / f"{JOB_FILES[job]}.py"))
    return command + job_args


def job_arguments(config: Config, job_args: list[str]) -> list[str]:
    """The job gets this lakehouse and config file unless its own arguments name others."""
    args = list(job_args)
    if "--lakehouse" not in args:
        args = ["--lakehouse", str(config.lakehouse), *args]
    if config.file is not None and "--config" not in args:
        args = ["--config", str(config.file), *args]
    return args


def run_submit(
    job: str,
    config: Config,
    settings: SparkSettings,
    job_args: list[str],
    *,
    deploy_mode: str = "client",
    python: str | None = None,
    extra_conf: dict[str, str] | None = None,
) -> int:
    """Run spark-submit and return its exit status."""
    command = submit_command_line(
        job, settings, job_arguments(config, job_args), deploy_mode=deploy_mode, python=python, extra_conf=extra_conf
    )
    prepare_environment()
    env = {**os.environ, "SPARK_HOME": str(spark_home())}
    return subprocess.call(command, env=env)
