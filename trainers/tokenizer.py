"""A byte-level BPE tokenizer (Hugging Face `tokenizers`) and its audit.

Byte level: every string, whatever its script or bytes, encodes without an unknown token.
Trained on a snapshot's train split only (never on its sealed test split); its digest is the
SHA-256 of its JSON, which names the token shards cut with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lineage.errors import MillpondError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOS, PAD)


@dataclass(frozen=True)
class TokenizerSettings:
    """The `[tokenizer]` section."""

    vocab_size: int = 8192
    min_frequency: int = 2
    max_documents: int = 200_000  # the training sample (chosen by hash) is at most this many documents

    def __post_init__(self) -> None:
        if not 256 + len(SPECIAL_TOKENS) < self.vocab_size <= 1 << 20:
            raise ValueError(f"[tokenizer] vocab_size must be above {256 + len(SPECIAL_TOKENS)} (the bytes)")


def train_bpe(texts: Iterable[str], settings: TokenizerSettings) -> object:
    """A byte-level BPE tokenizer trained on `texts`; EOS and PAD are ids 0 and 1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=settings.vocab_size,
        min_frequency=settings.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_nonempty(texts), trainer=trainer)
    return tokenizer


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    return (t for t in texts if t)


def tokenizer_digest(tokenizer_json: str) -> str:
    return hashlib.sha256(tokenizer_json.encode()).hexdigest()


class TokenizerMissingError(MillpondError, FileNotFoundError):
    """No tokenizer file where one was named."""


def load_tokenizer(path: str | Path) -> object:
    """A tokenizer saved by `train_bpe` (a `tokenizer.json`), with a clear error when missing."""
    from tokenizers import Tokenizer

    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise TokenizerMissingError(
            f"no tokenizer at {path}: train one with `millpond tokenizer train --snapshot NAME`"
        )
    return Tokenizer.from_file(str(file))


def audit(tokenizer: object, texts_by_domain: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Tokens per word and per character, by domain: how well the vocabulary fits each kind of text."""
    out = {}
    for domain, texts in sorted(texts_by_domain.items()):
        encodings = tokenizer.encode_batch(texts)  # type: ignore[attr-defined]
        tokens = sum(len(e.ids) for e in encodings)
        words = sum(len(t.split()) for t in texts)
        chars = sum(len(t) for t in texts)
        out[domain] = {
            "documents": float(len(texts)),
            "tokens_per_word": round(tokens / words, 4) if words else 0.0,
            "tokens_per_char": round(tokens / chars, 4) if chars else 0.0,
        }
    return out


class TrainingSample:
    """The texts a tokenizer trains on: at most `limit` documents of the snapshot's train split,
    chosen by a hash of their id (the same snapshot gives the same sample), read in one Spark pass
    that also counts them (`read`)."""

    def __init__(self, members: DataFrame, texts: DataFrame, limit: int) -> None:
        from pyspark.sql import functions as F

        self.rows = (
            members.where("split = 'train'")
            .join(texts, "doc_id")
            .orderBy(F.sha2(F.concat(F.lit("tokenizer:"), "doc_id"), 256))
            .limit(limit)
            .select("text")
        )
        self.read = 0

    def __iter__(self) -> Iterator[str]:
        for row in self.rows.toLocalIterator():
            self.read += 1
            yield row["text"]


def audit_texts(members: DataFrame, texts: DataFrame, per_domain: int) -> dict[str, list[str]]:
    """Up to `per_domain` texts of each domain to audit a tokenizer on: validation documents first,
    training documents for the domains validation lacks (the sealed test split never)."""
    from pyspark.sql import functions as F

    held_out = (
        members.where("split != 'test'")
        .join(texts, "doc_id")
        .orderBy((F.col("split") == "train").cast("int"), F.sha2("text", 256))
        .select("domain", "text")
    )
    by_domain: dict[str, list[str]] = {}
    for row in held_out.orderBy(F.sha2("text", 256)).toLocalIterator():
        bucket = by_domain.setdefault(row["domain"], [])
        if len(bucket) < per_domain:
            bucket.append(row["text"])
    return by_domain
