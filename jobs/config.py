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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from curation.preferences import PreferenceParams
from curation.registry import stages
from evals.settings import EvalSettings, FlywheelSettings
from ingestion.bronze import IngestParams
from jobs.spark import SparkSettings
from lineage.errors import MillpondError
from lineage.subjects import ErasurePolicy
from serving.settings import ServeSettings, StreamSettings
from trainers.dpo import DpoSettings
from trainers.loop import TrainSettings
from trainers.sft import SftSettings
from trainers.shards import ShardSettings
from trainers.tokenizer import TokenizerSettings

Params = TypeVar("Params")


def section_defaults(params: Any) -> dict[str, Any]:
    """A dataclass of settings as a config section (tuples become TOML arrays)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(asdict(params))


def params_from(cls: type[Params], values: dict[str, Any]) -> Params:
    """The frozen dataclass of a config section (arrays become tuples where the field is one)."""
    kinds = {f.name: f.default for f in fields(cls)}  # type: ignore[arg-type]
    converted = {k: tuple(v) if isinstance(kinds.get(k), tuple) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except ValueError as err:
        raise ConfigError(str(err)) from None


@dataclass(frozen=True)
class MlflowSettings:
    """The `[mlflow]` section."""

    # Empty: MLFLOW_TRACKING_URI if set, else a SQLite store inside the lakehouse (`_mlflow/`).
    tracking_uri: str = ""
    experiment_prefix: str = "millpond"
    # Ingest, curate, snapshot and preference builds each log an MLflow run (experiment `<prefix>-data`).
    log_data_jobs: bool = True


def defaults() -> dict[str, Any]:
    """The built-in settings: the dataclasses that consume each section hold its defaults (and say
    what each key means); `[curate.<stage>]` for every stage registered now."""
    return {
        "lakehouse": "./lakehouse",
        "spark": section_defaults(SparkSettings()),
        "ingest": section_defaults(IngestParams()),
        "curate": {spec.name: section_defaults(spec.params()) for spec in stages()},
        "mlflow": section_defaults(MlflowSettings()),
        "tokenizer": section_defaults(TokenizerSettings()),
        "shards": section_defaults(ShardSettings()),
        "train": section_defaults(TrainSettings()),
        "sft": section_defaults(SftSettings()),
        "dpo": section_defaults(DpoSettings()),
        "eval": section_defaults(EvalSettings()),
        "flywheel": section_defaults(FlywheelSettings()),
        "lineage": section_defaults(ErasurePolicy()),
        "preferences": section_defaults(PreferenceParams()),
        "serve": section_defaults(ServeSettings()),
        "stream": section_defaults(StreamSettings()),
    }


DEFAULTS: dict[str, Any] = defaults()

# Sections whose keys are free-form (no validation against the defaults).
FREE_FORM = {("spark", "conf")}
# Tables that may gain keys (a rule set for a new domain, a new purpose); their dataclass checks them.
OPEN_TABLES = {("curate", "quality", "rules"), ("curate", "license", "purposes")}


class ConfigError(MillpondError, ValueError):
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
        if key not in base and path in OPEN_TABLES:
            if not isinstance(value, dict | list):
                raise ConfigError(f"{origin}: {'.'.join(where)!r} must be a table or an array")
            base[key] = copy.deepcopy(value)
            continue
        if key not in base:
            raise ConfigError(f"{origin}: unknown setting {'.'.join(where)!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: {'.'.join(where)!r} must be a table")
            _merge(base[key], value, origin, where)
        else:
            expected = type(base[key])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
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
    values = defaults()
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
