"""`millpond serve`: the model MLflow holds, behind an OpenAI-compatible API, landing every event."""

from __future__ import annotations

import click

from jobs.config import ConfigError, cache_dir, params_from
from jobs.context import effective_config, lakehouse_options, progress
from jobs.tracking import tracking_uri
from lineage.locations import landing_folder
from serving.settings import LOOPBACK, ServeSettings


@click.command("serve")
@click.option("--model", default=None, metavar="NAME[@ALIAS|/VERSION]", help="A registered model (latest version).")
@click.option("--run", "run_id", default=None, metavar="RUN_ID", help="The model of an MLflow run instead.")
@click.option("--host", default=None, help="Address to bind (default: [serve] host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: [serve] port, 8000).")
@click.option("--replica", default=None, help="This replica's name in landing file names (default: host-pid-random).")
@lakehouse_options
def serve_command(
    model: str | None,
    run_id: str | None,
    host: str | None,
    port: int | None,
    replica: str | None,
    lakehouse: str | None,
    config_file: str | None,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API; requests, answers and feedback land durably
    under <lakehouse>/_landing/interactions for `millpond stream interactions`."""
    config = effective_config(lakehouse, config_file)
    values = dict(config.section("serve"))
    values |= {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = params_from(ServeSettings, values)
    if (model is None) == (run_id is None):
        raise ConfigError("name the model to serve: --model NAME[@ALIAS|/VERSION] or --run RUN_ID (one of them)")
    if settings.host not in LOOPBACK and not settings.api_keys_file:
        raise ConfigError(
            f"--host {settings.host} serves beyond this machine: set [serve] api_keys_file (one key per line) "
            "so that only clients with a key are answered"
        )
    from trainers.loop import runtime_environment

    runtime_environment(cache_dir())
    import uvicorn

    from serving.app import create_app
    from serving.landing import LandingSettings, LandingWriter
    from serving.model import ModelSlot

    slot = ModelSlot(tracking_uri(config), model, run_id, cache_dir(), settings.model_refresh_seconds)
    served = slot.current.served
    landing = LandingWriter(
        landing_folder(config.lakehouse),
        LandingSettings(roll_bytes=settings.roll_bytes, roll_seconds=settings.roll_seconds, fsync=settings.durable),
        replica,
    )
    if landing.recovered:
        progress(f"closed {len(landing.recovered)} landing file(s) a stopped replica left open")
    app = create_app(settings, slot, landing)
    progress(
        f"serving {served.label} (run {served.run_id}) on http://{settings.host}:{settings.port}/v1, "
        f"landing into {landing.folder} as replica {landing.replica}"
    )
    if slot.follows:
        progress(f"following {model}: a new version it points at is served within {settings.model_refresh_seconds:g} s")
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    finally:
        slot.close()
        landing.close()
