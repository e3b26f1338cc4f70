"""The Spark session: Delta configured, Ivy cache inside the project, a clear error when jars are missing.

Locally the driver JVM is launched here with its output sent to a log file: Ivy's resolution
report and Spark's log lines stay out of the terminal, and when the JVM cannot start (the
Delta jars cannot be resolved on an offline machine) the user gets one clear message with
the fix instead of a Java stack trace. Under `spark-submit` the session already exists and is
only picked up.

A local driver remembers the jars Ivy resolved (next to Ivy's cache, keyed by the packages and
every `spark.jars.*` setting) and the next local driver starts with them: Ivy's resolution of
Delta's 33 jars costs 2-7 s on every start even when all of them are cached. A remembered jar
that is gone sends the start back to Ivy. `millpond submit` always asks for the packages: a
driver in cluster mode cannot read this machine's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import STDOUT

import py4j.java_gateway
from delta import configure_spark_with_delta_pip
from pyspark import SparkConf, SparkContext
from pyspark.errors import PySparkRuntimeError
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

from lineage.catalog import PLAIN_ENCODED_COLUMNS
from lineage.errors import MillpondError

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


class SparkStartError(MillpondError, RuntimeError):
    """Spark could not start; the message says why and what to do."""


@dataclass(frozen=True)
class SparkSettings:
    """The `[spark]` section of the config."""

    # Any Spark master: local[*], spark://host:7077, yarn, k8s://...
    master: str = "local[*]"
    app_name: str = "millpond"
    # Also the task count Delta uses to rebuild a table's state.
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    # The most documents one partition of a curate batch holds: a large batch gets more
    # partitions, and its stages more shuffle partitions than `shuffle_partitions`, so that a task's
    # share of a million documents stays a few tens of MB instead of 8 shares of 300 MB.
    partition_rows: int = 20_000
    ui: bool = False
    # Where Ivy caches the Delta jars; empty: <project>/.cache/ivy.
    ivy_dir: str = ""
    # Offline machines: a folder of jars (Delta and its dependencies) used instead of Maven.
    jars_dir: str = ""
    # Where the driver JVM's own output goes; empty: <project>/.cache/logs.
    log_dir: str = ""
    # Quicker JVM start (C1 only, serial GC): good for tests and small jobs.
    fast_jvm_start: bool = False
    # Any other Spark setting, e.g. "spark.jars.repositories" = "https://my.mirror/maven2".
    conf: Mapping[str, str] = field(default_factory=dict)


def delta_packages() -> str:
    """The Maven coordinates of the Delta jars matching the installed delta-spark and pyspark."""
    builder = configure_spark_with_delta_pip(SparkSession.Builder())
    return builder._options["spark.jars.packages"]  # type: ignore[attr-defined]


# Delta's POM pulls in older copies of jars Spark ships itself (Hadoop's client, Parquet, Jackson,
# Log4j, the compression codecs: 75 of the 89 MB Ivy fetched for delta-spark 4.4). Spark's own
# classes load first, so those copies were never used; not resolving them saves the download on a
# new machine (19.8 s against 10.5 s for the first start) and each cluster executor's fetch.
SHIPPED_WITH_SPARK = (
    "org.apache.hadoop:hadoop-client-runtime",
    "org.apache.hadoop:hadoop-client-api",
    "org.apache.parquet:parquet-hadoop",
    "org.apache.parquet:parquet-column",
    "org.apache.parquet:parquet-common",
    "org.apache.parquet:parquet-encoding",
    "org.apache.parquet:parquet-format-structures",
    "org.apache.parquet:parquet-jackson",
    "com.fasterxml.jackson.core:jackson-core",
    "com.fasterxml.jackson.core:jackson-databind",
    "com.fasterxml.jackson.core:jackson-annotations",
    "org.apache.logging.log4j:log4j-api",
    "org.apache.logging.log4j:log4j-core",
    "org.apache.logging.log4j:log4j-slf4j2-impl",
    "org.slf4j:slf4j-api",
    "com.github.luben:zstd-jni",
    "org.xerial.snappy:snappy-java",
    "io.airlift:aircompressor",
    "org.locationtech.jts:jts-core",
    "com.google.code.findbugs:jsr305",
)


def _jar_confs(settings: SparkSettings, cache: Path) -> dict[str, str]:
    if settings.jars_dir:
        folder = Path(settings.jars_dir).expanduser().resolve()
        jars = sorted(str(p) for p in folder.glob("*.jar"))
        if not jars:
            raise SparkStartError(f"spark.jars_dir {folder} holds no .jar files")
        return {"spark.jars": ",".join(jars)}
    ivy = Path(settings.ivy_dir).expanduser().resolve() if settings.ivy_dir else cache / "ivy"
    return {
        "spark.jars.packages": delta_packages(),
        "spark.jars.excludes": ",".join(SHIPPED_WITH_SPARK),
        "spark.jars.ivy": str(ivy),
    }


def _resolved_record(conf: Mapping[str, str]) -> Path | None:
    """Where the jars Ivy resolves for these settings are remembered; None without packages."""
    if "spark.jars.packages" not in conf:
        return None
    key = json.dumps({k: v for k, v in conf.items() if k.startswith("spark.jars")}, sort_keys=True)
    return Path(conf["spark.jars.ivy"]) / f"millpond-resolved-{hashlib.sha256(key.encode()).hexdigest()[:16]}.txt"


def remembered_jars(conf: dict[str, str]) -> dict[str, str]:
    """`conf` with the packages replaced by the jars Ivy resolved for them last time, when every
    one of them is still there."""
    record = _resolved_record(conf)
    if record is None or not record.is_file():
        return conf
    jars = record.read_text(encoding="utf-8").split()
    if not jars or not all(Path(j).is_file() for j in jars):
        return conf
    return {k: v for k, v in conf.items() if k != "spark.jars.packages"} | {"spark.jars": ",".join(jars)}


def remember_jars(conf: Mapping[str, str], spark: SparkSession) -> None:
    """Write down the jars Ivy resolved for `conf`'s packages (atomically: a rename)."""
    record = _resolved_record(conf)
    resolved = spark.sparkContext.getConf().get("spark.jars", "")
    jars = [j.removeprefix("file://") for j in resolved.split(",") if j]
    if record is None or not jars or not all(Path(j).is_file() for j in jars):
        return
    partial = record.with_suffix(f".{os.getpid()}.part")
    partial.write_text("\n".join(jars) + "\n", encoding="utf-8")
    partial.replace(record)


def spark_conf(settings: SparkSettings, cache: Path) -> dict[str, str]:
    """Every Spark setting millpond starts a session with (also handed to spark-submit)."""
    conf: dict[str, str] = {
        "spark.app.name": settings.app_name,
        "spark.master": settings.master,
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        # Delta rebuilds a table's state with 50 tasks by default: pure overhead for the
        # transaction logs of a lakehouse on a few cores.
        "spark.databricks.delta.snapshotPartitions": str(settings.shuffle_partitions),
        "spark.ui.enabled": str(settings.ui).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        **{f"spark.hadoop.parquet.enable.dictionary#{c}": "false" for c in PLAIN_ENCODED_COLUMNS},
        **DELTA_SQL_CONF,
        **_jar_confs(settings, cache),
    }
    if settings.fast_jvm_start:
        opts = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
        conf["spark.driver.extraJavaOptions"] = opts
        conf["spark.executor.extraJavaOptions"] = opts
    conf.update({str(k): str(v) for k, v in settings.conf.items()})
    return conf


def prepare_environment() -> None:
    """Bind local servers to loopback and run Python workers with this interpreter."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def _explain_failed_start(log_path: Path, conf: Mapping[str, str]) -> str:
    output = log_path.read_text(errors="replace") if log_path.exists() else ""
    if "unresolved dependency" in output or "UNRESOLVED DEPENDENCIES" in output:
        missing = [
            line.strip(" :\t") for line in output.splitlines() if line.strip().startswith(":: ") and "not found" in line
        ]
        return (
            "Spark could not resolve the Delta Lake jars "
            f"({', '.join(missing) or conf.get('spark.jars.packages', 'io.delta')}).\n"
            "This machine cannot download them from Maven Central (offline, or behind a proxy).\n"
            "Fix it in millpond.toml with one of:\n"
            '  [spark.conf]\n  "spark.jars.repositories" = "https://your.maven.mirror/maven2"\n'
            "or, with the jars copied to a folder (e.g. `mvn dependency:copy-dependencies`):\n"
            '  [spark]\n  jars_dir = "/path/to/delta-jars"\n'
            f"Ivy's full report: {log_path}"
        )
    tail = "\n".join(output.strip().splitlines()[-15:])
    return f"the Spark driver JVM exited while starting. Its output ({log_path}) ends with:\n{tail}"


def _delta_loaded(spark: SparkSession) -> bool:
    try:
        cls = spark._jvm.io.delta.tables.DeltaTable  # type: ignore[union-attr]
    except Exception:
        return False
    return isinstance(cls, py4j.java_gateway.JavaClass)


def get_spark(settings: SparkSettings, cache: Path) -> SparkSession:
    """The Spark session for a job: the one already running (spark-submit, tests) or a new local driver."""
    prepare_environment()
    active = SparkSession.getActiveSession()
    if active is None and SparkContext._active_spark_context is not None:
        active = SparkSession.builder.getOrCreate()
    if active is None and "PYSPARK_GATEWAY_PORT" in os.environ:
        # Under spark-submit: the JVM and its jars exist; only the SQL extensions are ours to set.
        active = SparkSession.builder.config(map=DELTA_SQL_CONF).getOrCreate()
    if active is None:
        conf = spark_conf(settings, cache)
        started = remembered_jars(conf)
        active = _start_local_driver(started, settings, cache)
        if started is conf:
            remember_jars(conf, active)
    if not _delta_loaded(active):
        raise SparkStartError(
            "Delta Lake is not on this Spark session's classpath. Submit jobs with "
            f"`millpond submit`, or pass `--packages {delta_packages()}` "
            "(or `--jars` with the Delta jars) to spark-submit."
        )
    return active


def _start_local_driver(conf: dict[str, str], settings: SparkSettings, cache: Path) -> SparkSession:
    """Launch the driver JVM with its output in a log file, then build the session on it."""
    log_dir = Path(settings.log_dir).expanduser() if settings.log_dir else cache / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"spark-driver-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    spark_conf_obj = SparkConf(loadDefaults=False)
    for key, value in conf.items():
        spark_conf_obj.set(key, value)
    with open(log_path, "ab") as log:
        try:
            gateway = launch_gateway(spark_conf_obj, popen_kwargs={"stdout": log, "stderr": STDOUT})
        except PySparkRuntimeError:
            raise SparkStartError(_explain_failed_start(log_path, conf)) from None
    SparkContext._ensure_initialized(gateway=gateway, conf=spark_conf_obj)
    return SparkSession.builder.config(map=conf).getOrCreate()
