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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ingestion.bronze import IngestParams
from jobs.spark import SparkSettings

# The dataclasses that consume each section hold its defaults (and say what each key means).
DEFAULTS: dict[str, Any] = {
    "lakehouse": "./lakehouse",
    "spark": asdict(SparkSettings()),
    "ingest": asdict(IngestParams()),
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
