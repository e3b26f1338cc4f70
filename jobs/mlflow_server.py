"""`millpond mlflow`: the MLflow UI on the lakehouse's tracking store, bound to 127.0.0.1.

The backend store is the one every millpond run logs to (`[mlflow] tracking_uri`, else the
SQLite store under `<lakehouse>/_mlflow`), so the UI shows the runs to compare; artifacts are
served from `<lakehouse>/_mlflow/artifacts`. MLflow's job runner is off (it starts extra
workers and takes gigabytes). It prints a link to each experiment that opens its runs table.
"""

from __future__ import annotations

import os
import subprocess
import sys

import click

from jobs.context import effective_config, lakehouse_options
from jobs.tracking import tracking_uri
from lineage.locations import mlflow_folder
from trainers.tracking import experiment_pages


def server_command(config_lakehouse: object, store: str, host: str, port: int) -> list[str]:
    artifacts = str(mlflow_folder(config_lakehouse) / "artifacts")
    return [
        sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
        "--backend-store-uri", store, "--artifacts-destination", artifacts,
    ]  # fmt: skip


@click.command("mlflow")
@click.option("--port", type=int, default=5000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (keep it local).")
@lakehouse_options
def mlflow_command(port: int, host: str, lakehouse: str | None, config_file: str | None) -> None:
    """Start the MLflow tracking server and UI on the lakehouse's store (Ctrl-C stops it)."""
    config = effective_config(lakehouse, config_file)
    store = tracking_uri(config)
    if store.startswith("http"):
        raise click.ClickException(f"[mlflow] tracking_uri is a server already ({store}): open it")
    command = server_command(config.lakehouse, store, host, port)
    url = f"http://{host}:{port}"
    click.echo(f"MLflow UI on {url}  (store {store})", err=True)
    for name, page in experiment_pages(store, url):  # each on its runs table, not the GenAI overview
        click.echo(f"  {name:<22} {page}", err=True)
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        raise SystemExit(subprocess.call(command, env=env))
    except KeyboardInterrupt:
        raise SystemExit(0) from None
