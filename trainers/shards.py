"""Token shards: a snapshot cut into flat token streams (numpy memmaps) with a manifest.

Layout under `<lakehouse>/_shards/<snapshot>/<tokenizer digest[:16]>/`:
- `train-00000.bin`, ..., `validation-00000.bin`: uint16 (or uint32 for vocabularies above
  65,536) token ids, documents in a fixed hash order, each followed by EOS; a document that
  mixing repeats appears once per repeat, in different places;
- `documents.parquet`: (split, shard, doc_id, copies, tokens): which documents each shard holds
  and how many of their tokens, what lineage needs to say how much of a person a run saw;
- `manifest.json`: snapshot, source table and version, content digest, tokenizer digest,
  dtype, and per shard its file, split and token count.
The sealed test split is never cut. Shards are written into a temporary folder and renamed
into place when complete, so a folder with a manifest is a whole, reusable cache entry.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lineage.locations import SHARD_DOCUMENTS, shard_folder
from trainers.tokenizer import EOS, tokenizer_digest

if TYPE_CHECKING:  # Spark is imported where shards are cut: a training process reads them without it
    from pyspark.sql import DataFrame

SHARD_SPLITS = ("train", "validation")
MANIFEST = "manifest.json"
DOCUMENTS = SHARD_DOCUMENTS


@dataclass(frozen=True)
class ShardSettings:
    """The `[shards]` section."""

    tokens_per_shard: int = 16_777_216  # about 32 MB of uint16 per shard
    tokens_per_word: float = 1.5  # to size the shard count before tokenizing

    def __post_init__(self) -> None:
        if self.tokens_per_shard < 1024:
            raise ValueError("[shards] tokens_per_shard must be at least 1024")


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def load_manifest(folder: Path) -> dict[str, Any] | None:
    file = folder / MANIFEST
    return json.loads(file.read_text()) if file.is_file() else None


def shard_tokens(folder: Path, shard: dict[str, Any], dtype: str) -> np.memmap:
    """One shard's token ids, memory-mapped (read-only)."""
    return np.memmap(folder / shard["file"], dtype=np.dtype(dtype), mode="r")


def write_exposure_listing(path: Path, splits: np.ndarray, doc_ids: list[str], tokens: np.ndarray) -> None:
    """(split, doc_id, tokens) of every example a tuning run reads (a DPO pair, an SFT
    demonstration), as the shards list their documents: what a data subject request counts as a
    run's exposure to it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "split": pa.array([str(s) for s in splits], pa.string()),
            "doc_id": pa.array(doc_ids, pa.string()),
            "tokens": pa.array(np.asarray(tokens).astype(np.int64)),
        }
    )
    pq.write_table(table, path)


def write_partition(
    rows: Iterator[Any], *, split: str, shard_index: int, folder: str, tokenizer_json: str, dtype: str
) -> Iterator[dict[str, Any]]:
    """Tokenize one partition's documents (already in their order) into one shard file."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    eos = tokenizer.token_to_id(EOS)
    kind = np.dtype(dtype)
    name = f"{split}-{shard_index:05d}.bin"
    docs: dict[str, list[int]] = {}
    total = 0
    with open(os.path.join(folder, name), "wb") as out:
        batch: list[Any] = []
        for row in rows:
            batch.append(row)
            if len(batch) == 256:
                total += _write(out, batch, tokenizer, eos, kind, docs)
                batch = []
        if batch:
            total += _write(out, batch, tokenizer, eos, kind, docs)
    if total == 0:
        os.remove(os.path.join(folder, name))
        return
    yield {"file": name, "split": split, "tokens": total, "documents": [[d, c, t] for d, (c, t) in docs.items()]}


def _write(out: Any, batch: list[Any], tokenizer: Any, eos: int, kind: np.dtype, docs: dict) -> int:
    encodings = tokenizer.encode_batch([r["text"] for r in batch])
    written = 0
    for row, encoding in zip(batch, encodings, strict=True):
        ids = np.asarray([*encoding.ids, eos], dtype=kind)
        out.write(ids.tobytes())
        copies, tokens = docs.get(row["doc_id"], (0, 0))
        docs[row["doc_id"]] = (copies + 1, tokens + len(ids))
        written += len(ids)
    return written


def words_by_split(members: DataFrame, texts: DataFrame) -> dict[str, int]:
    """Words per split, repeats counted: one pass over the texts sizes every split's shards."""
    from pyspark.sql import functions as F

    counted = (
        members.join(texts, "doc_id")
        .groupBy("split")
        .agg(F.sum(F.size(F.split(F.trim("text"), r"\s+")) * F.col("repeats")).alias("words"))
    )
    return {r["split"]: int(r["words"] or 0) for r in counted.collect()}


def plan(
    members: DataFrame, texts: DataFrame, split: str, words: int, settings: ShardSettings
) -> tuple[DataFrame, int]:
    """The split's documents, one row per copy, with their shard bucket; and the shard count."""
    from pyspark.sql import functions as F

    copies = (
        members.where(F.col("split") == split)
        .join(texts, "doc_id")
        .select("doc_id", "text", F.explode(F.sequence(F.lit(1), F.col("repeats"))).alias("copy"))
    )
    shards = max(1, int(np.ceil(words * settings.tokens_per_word / settings.tokens_per_shard)))
    order = F.sha2(F.concat_ws(":", F.lit("order"), "doc_id", F.col("copy").cast("string")), 256)
    bucket = F.pmod(F.conv(F.substring(order, 1, 8), 16, 10).cast("long"), F.lit(shards))
    return copies.withColumn("_order", order).withColumn("_bucket", bucket), shards


def build_shards(
    members: DataFrame,
    texts: DataFrame,
    folder: Path,
    tokenizer_json: str,
    vocab_size: int,
    settings: ShardSettings,
    about: dict[str, Any],
) -> dict[str, Any]:
    """Cut the train and validation members into shards under `folder` (replaced atomically)."""
    dtype = dtype_for(vocab_size).name
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shards: list[dict[str, Any]] = []
    documents: list[tuple[str, str, str, int, int]] = []
    words = words_by_split(members, texts)
    for split in SHARD_SPLITS:
        rows, count = plan(members, texts, split, words.get(split, 0), settings)
        # Bucket b goes to partition b exactly (a hash partitioner would fold buckets together),
        # in hash order within it: the same members always give the same shards.
        keyed = rows.select("_bucket", "_order", "doc_id", "text").rdd.map(
            lambda r: ((r["_bucket"], r["_order"]), {"doc_id": r["doc_id"], "text": r["text"]})
        )
        ordered = keyed.repartitionAndSortWithinPartitions(count, partitionFunc=lambda key: key[0]).values()
        written = ordered.mapPartitionsWithIndex(
            lambda index, part, s=split: write_partition(
                part, split=s, shard_index=index, folder=str(staging), tokenizer_json=tokenizer_json, dtype=dtype
            )
        ).collect()
        for shard in sorted(written, key=lambda s: s["file"]):
            shards.append({"file": shard["file"], "split": split, "tokens": shard["tokens"]})
            documents.extend((split, shard["file"], d, c, t) for d, c, t in shard["documents"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(zip(*documents, strict=True)) if documents else [[], [], [], [], []]
    pq.write_table(
        pa.table(
            {
                "split": pa.array(columns[0], pa.string()),
                "shard": pa.array(columns[1], pa.string()),
                "doc_id": pa.array(columns[2], pa.string()),
                "copies": pa.array(columns[3], pa.int32()),
                "tokens": pa.array(columns[4], pa.int64()),
            }
        ),
        staging / DOCUMENTS,
    )
    manifest = about | {
        "dtype": dtype,
        "vocab_size": vocab_size,
        "shards": shards,
        "tokens": {s: sum(x["tokens"] for x in shards if x["split"] == s) for s in SHARD_SPLITS},
        "documents": DOCUMENTS,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(folder)
    return manifest


def cached_snapshot_shards(
    lakehouse: Path, name: str, snapshot: dict[str, Any], tokenizer_json: str
) -> dict[str, Any] | None:
    """The manifest of the snapshot's shards for this tokenizer when they were cut already from the
    same members (the snapshot's content digest: an amended snapshot is cut again)."""
    folder = shard_folder(lakehouse, name, tokenizer_digest(tokenizer_json))
    cached = load_manifest(folder)
    if cached is None or cached.get("content_digest") != snapshot["content_digest"]:
        return None
    return cached | {"folder": str(folder), "cached": True}


def cut_snapshot_shards(
    members: DataFrame, texts: DataFrame, lakehouse: Path, name: str, snapshot: dict[str, Any],
    tokenizer: Any, tokenizer_path: str, settings: ShardSettings,
) -> dict[str, Any]:  # fmt: skip
    """Cut the snapshot's members (`texts`: their rows at the pinned version) with this tokenizer
    (loaded from `tokenizer_path`) into its cache folder; the manifest names the snapshot, table
    version and tokenizer."""
    as_json = tokenizer.to_str()
    digest = tokenizer_digest(as_json)
    about = {
        "snapshot": name,
        "source_table": snapshot["source_table"],
        "source_version": snapshot["source_version"],
        "content_digest": snapshot["content_digest"],
        "tokenizer_digest": digest,
        "tokenizer": str(Path(tokenizer_path).resolve()),
    }
    folder = shard_folder(lakehouse, name, digest)
    manifest = build_shards(
        members, texts.select("doc_id", "text"), folder, as_json,
        tokenizer.get_vocab_size(), settings, about,  # type: ignore[attr-defined]
    )  # fmt: skip
    return manifest | {"folder": str(folder), "cached": False}
