"""The effective configuration: built-in defaults, then `millpond.toml`, then environment, then flags.

Defaults serve with no file at all. A key the defaults do not know is an error naming the
key and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

DEFAULTS: dict[str, Any] = {
    "lakehouse": "./lakehouse",
    "spark": {
        # Any Spark master: local[*], spark://host:7077, yarn, k8s://...
        "master": "local[*]",
        "app_name": "millpond",
        "shuffle_partitions": 8,
        "driver_memory": "4g",
        "ui": False,
        # Where Ivy caches the Delta jars; empty: <project>/.cache/ivy.
        "ivy_dir": "",
        # Offline machines: a folder of jars (Delta and its dependencies) used instead of Maven.
        "jars_dir": "",
        # Where the driver JVM's own output goes; empty: <project>/.cache/logs.
        "log_dir": "",
        # Quicker JVM start (C1 only, serial GC): good for tests and small jobs.
        "fast_jvm_start": False,
        # Any other Spark setting, e.g. "spark.jars.repositories" = "https://my.mirror/maven2".
        "conf": {},
    },
    "ingest": {
        # A record (JSONL line, file, Parquet text value) larger than this is quarantined.
        "max_record_bytes": 8 * 1024 * 1024,
        # Rows per Arrow batch handed from the Python readers to Spark.
        "batch_rows": 4096,
        # Aim for about this many bytes of input per Spark task.
        "task_bytes": 128 * 1024 * 1024,
    },
}

# Sections whose keys are free-form (no validation against the defaults).
FREE_FORM = {("spark", "conf")}


class ConfigError(ValueError):
    """The config file or a setting is wrong; the message says which and where."""


def project_root() -> Path | None:
    """The source checkout this package runs from, if any (an editable install)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def cache_dir() -> Path:
    """Where jar caches, driver logs and build artefacts go: ignored by git, never in the lakehouse."""
    env = os.environ.get("MILLPOND_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    root = project_root()
    return root / ".cache" if root else Path.home() / ".cache" / "millpond"


def _merge(base: dict[str, Any], override: dict[str, Any], origin: str, path: tuple[str, ...] = ()) -> None:
    for key, value in override.items():
        where = path + (key,)
        if where in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: {'.'.join(where)!r} must be a table")
            base[key] = {**base[key], **{str(k): str(v) for k, v in value.items()}}
            continue
        if key not in base:
            raise ConfigError(f"{origin}: unknown setting {'.'.join(where)!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: {'.'.join(where)!r} must be a table")
            _merge(base[key], value, origin, where)
        else:
            expected = type(base[key])
            if expected is int and isinstance(value, bool) or not isinstance(value, expected):
                raise ConfigError(f"{origin}: {'.'.join(where)!r} must be {expected.__name__}, got {value!r}")
            base[key] = value


@dataclass(frozen=True)
class Config:
    """The effective settings and where they came from."""

    values: dict[str, Any]
    file: Path | None

    @property
    def lakehouse(self) -> Path:
        return Path(self.values["lakehouse"]).expanduser().resolve()

    def section(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.values[name])

    def digest(self) -> str:
        """A stable digest of the effective settings, recorded with every run."""
        canonical = json.dumps(self.values, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_toml(self) -> str:
        return tomli_w.dumps(self.values)


def load_config(config_file: str | Path | None = None, lakehouse: str | Path | None = None) -> Config:
    """Defaults, then the config file (flag, MILLPOND_CONFIG, or ./millpond.toml), then env and flags."""
    values = copy.deepcopy(DEFAULTS)
    chosen = config_file or os.environ.get("MILLPOND_CONFIG")
    path: Path | None = None
    if chosen:
        path = Path(chosen).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
    elif Path("millpond.toml").is_file():
        path = Path("millpond.toml").resolve()
    if path is not None:
        try:
            parsed = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        _merge(values, parsed, str(path))
    env_lakehouse = os.environ.get("MILLPOND_LAKEHOUSE")
    if env_lakehouse:
        values["lakehouse"] = env_lakehouse
    if lakehouse:
        values["lakehouse"] = str(lakehouse)
    values["lakehouse"] = str(Path(values["lakehouse"]).expanduser().resolve())
    return Config(values=values, file=path)
