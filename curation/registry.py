"""Every curation stage, declared once: its name, parameters, what it needs besides its rows, and
its place in the default order.

The config (`[curate.<name>]` sections and their defaults), the pipeline and the curate job all
read this list. A new stage is its function, its frozen dataclass of parameters and one entry
here (or one `register` call):

    StageSpec("shout", ShoutParams, shout)                  # shout(frame, params) -> frame

The order is the default pipeline's: cheap filters first, so that the costly stages (dedup,
decontamination, PII) see fewer documents; licenses before dedup, whose keep rule prefers
permissive copies; the batch checks (the quality gate) last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from curation.classifier import ClassifierParams, classifier, model_file
from curation.decontaminate import DecontaminateParams, decontaminate
from curation.exact_dedup import ExactDedupParams, exact_dedup
from curation.fuzzy_dedup import FuzzyDedupParams, fuzzy_dedup
from curation.gate import GateParams, gate
from curation.language import LanguageParams, language, model_path
from curation.licensing import LicenseParams, license_stage
from curation.normalize import NormalizeParams, normalize
from curation.pii import PiiParams, check_ready, pii
from curation.quality import QualityParams, quality

# What a stage may need besides its rows and parameters; the job that runs the stages binds each.
SILVER = "silver"  # silver.documents' keep-rule columns (exact dedup against earlier runs)
MINHASH_INDEX = "minhash_index"  # silver.minhash: stored signatures (near dedup against earlier runs)
EVAL_INDEX = "eval_index"  # the n-gram index of governance.eval_items (decontamination)
SURVIVORS = "survivors"  # a batch check: runs once on what every row stage kept, before anything is written


@dataclass(frozen=True)
class StageSpec:
    """One stage. `apply(frame, params)`, or `apply(frame, params, bound)` when it `needs` something;
    a batch check gets `apply(survivors, params, stages_run)` and returns its verdict."""

    name: str
    params: type
    apply: Callable[..., Any]
    needs: str | None = None
    # Raises a clear error, before Spark starts, when the stage cannot run (a missing model or key).
    check: Callable[[Any], object] | None = None
    # Why the default run leaves the stage out under these parameters, or None to run it.
    skip_by_default: Callable[[Any], str | None] | None = None


def _no_classifier_model(params: ClassifierParams) -> str | None:
    return None if params.model else "no model: set [curate.classifier] model (see `millpond classifier train`)"


_REGISTRY: list[StageSpec] = [
    StageSpec("normalize", NormalizeParams, normalize),
    StageSpec("language", LanguageParams, language, check=model_path),
    StageSpec("quality", QualityParams, quality),
    StageSpec("classifier", ClassifierParams, classifier, check=model_file, skip_by_default=_no_classifier_model),
    StageSpec("license", LicenseParams, license_stage),
    StageSpec("exact_dedup", ExactDedupParams, exact_dedup, needs=SILVER),
    StageSpec("fuzzy_dedup", FuzzyDedupParams, fuzzy_dedup, needs=MINHASH_INDEX),
    StageSpec("decontaminate", DecontaminateParams, decontaminate, needs=EVAL_INDEX),
    StageSpec("pii", PiiParams, pii, check=check_ready),
    StageSpec("gate", GateParams, gate, needs=SURVIVORS),
]


def stages() -> tuple[StageSpec, ...]:
    """Every stage, in the default order."""
    return tuple(_REGISTRY)


def stage_names() -> tuple[str, ...]:
    return tuple(s.name for s in _REGISTRY)


def stage(name: str) -> StageSpec:
    for spec in _REGISTRY:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(stage_names())}")


def register(spec: StageSpec, before: str | None = None) -> None:
    """Add a stage before `before` (default: before the batch checks, after every row stage)."""
    if spec.name in stage_names():
        raise ValueError(f"a stage named {spec.name!r} is registered already")
    names = stage_names()
    if before is None:
        position = next((i for i, s in enumerate(_REGISTRY) if s.needs == SURVIVORS), len(_REGISTRY))
    else:
        position = names.index(before)
    _REGISTRY.insert(position, spec)
