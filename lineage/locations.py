"""Where the lakehouse keeps what is not a table: shards, tokenizers, run folders, certificates,
the MLflow store. One module, so that no job builds these paths by hand and lineage and erasure
know every place a person's data can be."""

from __future__ import annotations

from pathlib import Path

# In a shard folder: (split, doc_id, tokens) of every document cut into it, what a data subject
# request counts as a pretraining run's exposure (trainers.shards writes it).
SHARD_DOCUMENTS = "documents.parquet"


def _root(lakehouse: str | Path) -> Path:
    return Path(lakehouse).expanduser().resolve()


def shards_folder(lakehouse: str | Path, snapshot: str) -> Path:
    """Every token-shard cache of a snapshot (one sub-folder per tokenizer)."""
    return _root(lakehouse) / "_shards" / snapshot


def shard_folder(lakehouse: str | Path, snapshot: str, tokenizer_digest: str) -> Path:
    """The shards of a snapshot cut with one tokenizer."""
    return shards_folder(lakehouse, snapshot) / tokenizer_digest[:16]


def tokenizers_folder(lakehouse: str | Path) -> Path:
    """Trained tokenizers, one sub-folder each (`<snapshot>-v<vocab>-<digest>`)."""
    return _root(lakehouse) / "_artifacts" / "tokenizers"


def tokenizer_folder(lakehouse: str | Path, snapshot: str, vocab_size: int, digest: str) -> Path:
    return tokenizers_folder(lakehouse) / f"{snapshot}-v{vocab_size}-{digest[:12]}"


def latest_tokenizer(lakehouse: str | Path, snapshot: str) -> Path | None:
    """The `tokenizer.json` most recently trained on the snapshot, if any."""
    folders = sorted(tokenizers_folder(lakehouse).glob(f"{snapshot}-v*"), key=lambda p: p.stat().st_mtime)
    return folders[-1] / "tokenizer.json" if folders else None


def run_folder(lakehouse: str | Path, run_id: str) -> Path:
    """A training run's checkpoints and saved model."""
    return _root(lakehouse) / "_runs" / run_id


def certificates_folder(lakehouse: str | Path) -> Path:
    """Erasure certificates, one JSON file per request."""
    return _root(lakehouse) / "_governance" / "certificates"


def mlflow_folder(lakehouse: str | Path) -> Path:
    """The MLflow store (SQLite and artifacts) when no tracking server is configured."""
    return _root(lakehouse) / "_mlflow"


def demo_folder(lakehouse: str | Path) -> Path:
    """The raw files `millpond demo` writes and ingests."""
    return _root(lakehouse) / "_demo"


def landing_folder(lakehouse: str | Path, feed: str = "interactions") -> Path:
    """Where `millpond serve` lands events as JSON lines (`.part` while open, `.jsonl` closed)."""
    return _root(lakehouse) / "_landing" / feed


def ingest_staging_folder(lakehouse: str | Path, run_id: str) -> Path:
    """What an ingest's readers set aside while they stream documents into bronze: each Spark
    task's quarantine entries and counts (no record text), removed when the run ends."""
    return _root(lakehouse) / "_staging" / "ingest" / run_id


def stream_checkpoint(lakehouse: str | Path, feed: str = "interactions") -> Path:
    """The Structured Streaming checkpoint (offsets, commits, the file source's log) of a feed."""
    return _root(lakehouse) / "_checkpoints" / feed


def reference_cache_folder(lakehouse: str | Path) -> Path:
    """Reference log-probabilities of preference snapshots, one file per (pairs, reference model, context)."""
    return _root(lakehouse) / "_cache" / "reference-logps"
