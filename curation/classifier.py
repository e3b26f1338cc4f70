"""`classifier`: a supervised fastText quality model, trained from examples of good and bad
text, applied as `quality_score` (the probability of the positive label) with a threshold.

Training is single-node (fastText is fast): `train_quality_model` takes texts, splits off a
held-out set by a hash of each text (the same split every time), trains with word bigrams
and a small bucket count (a ~10 MB model instead of fastText's 400 MB default) and returns
held-out figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curation.decisions import DECISION, DROPPED, decision, kept
from curation.fasttext_fit import DIVERGED
from curation.language import ModelMissingError, load_fasttext

POSITIVE = "__label__hq"
NEGATIVE = "__label__lq"
BELOW_THRESHOLD = "quality_score_below_threshold"
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)  # on the child's path, however millpond is installed


@dataclass(frozen=True)
class ClassifierParams:
    """The `[curate.classifier]` section: which trained model the stage applies."""

    model: str = ""  # a model file written by `millpond classifier train`; empty: the stage cannot run
    threshold: float = 0.5
    max_chars: int = 20_000  # only the start of a long document is scored


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of `millpond classifier train`."""

    epoch: int = 10
    lr: float = 0.1  # fastText's own default; training is retried at half the rate if it diverges
    dim: int = 32
    word_ngrams: int = 2
    bucket: int = 200_000
    min_count: int = 1
    threads: int = 2
    holdout: float = 0.1  # share of examples held out for evaluation
    seed: int = 0


def model_file(params: ClassifierParams) -> Path:
    if not params.model:
        raise ModelMissingError(
            "the classifier stage needs a model: train one with `millpond classifier train` and set "
            "[curate.classifier] model to the file it writes"
        )
    path = Path(params.model).expanduser()
    if not path.is_file():
        raise ModelMissingError(f"[curate.classifier] model: no fastText model at {path}")
    return path


def one_line(text: str, max_chars: int = 20_000) -> str:
    """fastText reads one example per line."""
    return " ".join(text[:max_chars].split())


def in_holdout(text: str, share: float, seed: int = 0) -> bool:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def positive_probability(model: Any, lines: list[str]) -> np.ndarray:
    labels, probs = model.predict(lines, k=2)
    out = np.zeros(len(lines))
    for i, (names, values) in enumerate(zip(labels, probs, strict=True)):
        for name, value in zip(names, values, strict=True):
            if name == POSITIVE:
                out[i] = float(value)
    return np.clip(out, 0.0, 1.0)


def _fit(train_file: Path, output: Path, settings: TrainSettings) -> tuple[Any, float]:
    """Train in a child interpreter (see `curation.fasttext_fit`), halving the learning rate
    while fastText diverges; the saved model, loaded, and the learning rate that converged."""
    output.parent.mkdir(parents=True, exist_ok=True)
    lr = settings.lr
    for _ in range(4):
        args = {
            "input": str(train_file),
            "output": str(output),
            "epoch": settings.epoch,
            "lr": lr,
            "dim": settings.dim,
            "wordNgrams": settings.word_ngrams,
            "bucket": settings.bucket,
            "minCount": settings.min_count,
            "thread": settings.threads,
            "seed": settings.seed,
            "verbose": 0,
        }
        child = subprocess.run(
            [sys.executable, "-m", "curation.fasttext_fit", json.dumps(args)],
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
            },
            capture_output=True,
            text=True,
        )
        if child.returncode == 0:
            return load_fasttext(output, reload=True), lr
        if child.returncode != DIVERGED:
            raise RuntimeError(f"fastText training failed (exit {child.returncode}): {child.stderr.strip()[-2000:]}")
        lr /= 2
    raise RuntimeError(
        f"fastText training diverged (Encountered NaN) at every learning rate from {settings.lr} down to {lr * 2}: "
        "check the training examples"
    )


def train_quality_model(
    positive: list[str], negative: list[str], output: Path, settings: TrainSettings = TrainSettings()
) -> dict[str, float]:
    """Train, save to `output`, and return held-out precision, recall, F1, accuracy, counts and
    the learning rate that converged."""
    examples = [(POSITIVE, t) for t in positive] + [(NEGATIVE, t) for t in negative]
    train = [(label, one_line(t)) for label, t in examples if not in_holdout(t, settings.holdout, settings.seed)]
    test = [(label, one_line(t)) for label, t in examples if in_holdout(t, settings.holdout, settings.seed)]
    if (
        not train
        or not any(label == POSITIVE for label, _ in train)
        or not any(label == NEGATIVE for label, _ in train)
    ):
        raise ValueError("training needs positive and negative examples outside the held-out split")
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(len(train))
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("".join(f"{train[i][0]} {train[i][1]}\n" for i in order), encoding="utf-8")
        model, lr = _fit(train_file, output, settings)
    figures: dict[str, float] = {
        "train_examples": float(len(train)),
        "test_examples": float(len(test)),
        "lr": float(lr),
    }
    if test:
        truth = np.array([label == POSITIVE for label, _ in test])
        predicted = positive_probability(model, [text for _, text in test]) >= 0.5
        tp = float(np.sum(predicted & truth))
        precision = tp / max(float(predicted.sum()), 1.0)
        recall = tp / max(float(truth.sum()), 1.0)
        figures.update(
            precision=precision,
            recall=recall,
            f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            accuracy=float(np.mean(predicted == truth)),
        )
    return figures


def classifier(frame: DataFrame, params: ClassifierParams) -> DataFrame:
    """Add `quality_score`; drop documents scoring below the threshold."""
    path = str(model_file(params))
    max_chars = params.max_chars

    @F.pandas_udf("double")
    def score(texts: pd.Series) -> pd.Series:
        model = load_fasttext(Path(path))
        return pd.Series(positive_probability(model, [one_line(t, max_chars) for t in texts]))

    out = frame.withColumn("quality_score", score(F.col("text")))
    verdict = F.when(
        F.col("quality_score") < params.threshold, decision(DROPPED, BELOW_THRESHOLD, F.col("quality_score"))
    ).otherwise(kept(F.col("quality_score")))
    return out.withColumn(DECISION, verdict)
