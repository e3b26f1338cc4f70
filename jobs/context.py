"""What every command shares: the global options, the effective config and the Spark session."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import click
from pyspark.sql import SparkSession
from tqdm import tqdm

from jobs.config import Config, cache_dir, load_config
from jobs.spark import SparkSettings, get_spark


def lakehouse_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--lakehouse` and `--config` on a command as well as on the group, so that job files
    run under spark-submit take the same arguments as `millpond <job>`."""
    command = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Config file (env MILLPOND_CONFIG; default ./millpond.toml if present).",
    )(command)
    return click.option(
        "--lakehouse",
        default=None,
        help="Lakehouse root folder (env MILLPOND_LAKEHOUSE; default ./lakehouse).",
    )(command)


def spark_options(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--master", default=None, help="Spark master for this run (default: [spark] master, local[*])."
    )(command)


def effective_config(lakehouse: str | None, config_file: str | None) -> Config:
    """The config from this command's flags, falling back to the group's flags."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    root = root if isinstance(root, dict) else {}
    return load_config(config_file or root.get("config_file"), lakehouse or root.get("lakehouse"))


def spark_settings(config: Config, master: str | None = None, app_name: str | None = None) -> SparkSettings:
    settings = SparkSettings(**config.section("spark"))
    if master:
        settings = replace(settings, master=master)
    if app_name:
        settings = replace(settings, app_name=app_name)
    return settings


def open_spark(config: Config, master: str | None = None, app_name: str | None = None) -> SparkSession:
    """The job's Spark session; the start-up phase is announced because it takes seconds."""
    settings = spark_settings(config, master, app_name)
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # under spark-submit: its master, not the config's
        progress("joining the Spark session spark-submit started")
        spark = get_spark(settings, cache_dir())
        progress(f"Spark master: {spark.sparkContext.master}")
        return spark
    progress(f"starting Spark ({settings.master})")
    return get_spark(settings, cache_dir())


@contextmanager
def spark_progress(spark: SparkSession, description: str) -> Iterator[None]:
    """A progress bar of Spark tasks done while the block runs (only on a terminal)."""
    if not sys.stderr.isatty():
        yield
        return
    tracker = spark.sparkContext.statusTracker()
    done = threading.Event()

    def poll() -> None:
        with tqdm(desc=f"millpond: {description}", unit="task", leave=False, file=sys.stderr) as bar:
            while not done.wait(0.5):
                total = finished = 0
                for stage_id in tracker.getActiveStageIds():
                    info = tracker.getStageInfo(stage_id)
                    if info is not None:
                        total += info.numTasks
                        finished += info.numCompletedTasks
                bar.total = max(total, 1)
                bar.n = finished
                bar.refresh()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=2)


def progress(message: str) -> None:
    """A phase line on stderr, so stdout stays clean for --json."""
    click.echo(f"millpond: {message}", err=True)
    sys.stderr.flush()
