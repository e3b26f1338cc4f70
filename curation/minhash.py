"""MinHash signatures and LSH banding in numpy, for whole batches of documents at once.

Signatures follow datasketch 2.x's `affine32` scheme bit for bit: each 32-bit shingle hash is
pre-mixed with the MurmurHash3 finalizer, permuted by `a * h + b` modulo 2**32 (odd `a`),
and the minimum over the document's shingles kept per permutation; the permutation
parameters come from `numpy.random.RandomState(seed)` as datasketch draws them. So a
signature computed here equals `MinHash(num_perm, seed=seed, scheme="affine32")` fed the same
32-bit shingle hashes (a test checks it), and the bands and rows for a threshold are chosen
as datasketch's `MinHashLSH` chooses them.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache

import numpy as np

EMPTY = np.uint32(0xFFFFFFFF)  # the signature value of a document without shingles
_WORD = re.compile(r"\w+")
_MIX64 = np.uint64(0x9E3779B97F4A7C15)


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a odd, b), as uint32 arrays."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def fmix32(h: np.ndarray) -> np.ndarray:
    """The MurmurHash3 32-bit finalizer (a bijection), element-wise on uint32."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def token_hashes(tokens: list[str], cache_: dict[str, int]) -> np.ndarray:
    """A stable 64-bit hash per token (the same on every worker and run), cached per batch."""
    out = np.empty(len(tokens), dtype=np.uint64)
    for i, token in enumerate(tokens):
        value = cache_.get(token)
        if value is None:
            value = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
            cache_[token] = value
        out[i] = value
    return out


def rolling_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash of every run of n consecutive token hashes (empty when there are fewer)."""
    if len(ids) < n:
        return np.empty(0, dtype=np.uint64)
    hashes = ids[: len(ids) - n + 1].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            hashes = hashes * _MIX64 + ids[k : len(ids) - n + 1 + k]
    return hashes


def shingle_hashes(text: str, n: int = 5, kind: str = "word", cache_: dict[str, int] | None = None) -> np.ndarray:
    """The distinct 32-bit hashes of the text's shingles: word n-grams of lower-cased `\\w+` tokens,
    or character n-grams of the whitespace-collapsed text. Fewer tokens than n: one shingle of all."""
    if kind == "word":
        tokens = _WORD.findall(text.lower())
    elif kind == "char":
        tokens = list(" ".join(text.split()))
    else:
        raise ValueError(f"shingle kind must be word or char, got {kind!r}")
    if not tokens:
        return np.empty(0, dtype=np.uint32)
    ids = token_hashes(tokens, {} if cache_ is None else cache_)
    hashes = rolling_hashes(ids, min(n, len(ids)))
    folded = (hashes ^ (hashes >> np.uint64(32))).astype(np.uint32)
    return np.unique(folded)


def signatures(shingles: list[np.ndarray], a: np.ndarray, b: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """One signature row (uint32, len(a) values) per document, computed for the whole batch:
    every shingle of every document is permuted at once, then reduced per document."""
    num_perm = len(a)
    out = np.full((len(shingles), num_perm), EMPTY, dtype=np.uint32)
    lengths = np.array([len(s) for s in shingles], dtype=np.int64)
    present = np.flatnonzero(lengths)
    if len(present) == 0:
        return out
    flat = fmix32(np.concatenate([shingles[i] for i in present]).astype(np.uint32))
    starts = np.concatenate([[0], np.cumsum(lengths[present])[:-1]])
    doc_of_row = np.repeat(np.arange(len(present)), lengths[present])
    reduced = np.full((len(present), num_perm), EMPTY, dtype=np.uint32)
    # In chunks of rows, so memory stays bounded by chunk * num_perm whatever the batch.
    for lo in range(0, len(flat), chunk):
        hi = min(lo + chunk, len(flat))
        permuted = flat[lo:hi, None] * a[None, :] + b[None, :]
        docs = doc_of_row[lo:hi]
        # reduce the rows of each document inside the chunk, then merge with earlier chunks
        cuts = np.flatnonzero(np.diff(docs)) + 1
        firsts = np.concatenate([[0], cuts])
        partial = np.minimum.reduceat(permuted, firsts, axis=0)
        targets = docs[firsts]
        reduced[targets] = np.minimum(reduced[targets], partial)
    del starts
    out[present] = reduced
    return out


def estimated_jaccard(left: np.ndarray, right: np.ndarray) -> float:
    """The share of equal signature values: MinHash's estimate of the Jaccard similarity."""
    return float(np.mean(left == right))


def jaccard(left: set[int] | np.ndarray, right: set[int] | np.ndarray) -> float:
    """Exact Jaccard similarity of two shingle sets."""
    a, b = set(np.asarray(left).tolist()), set(np.asarray(right).tolist())
    return len(a & b) / len(a | b) if a or b else 1.0


def _false_positive(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)[0]


def _false_negative(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)[0]


@cache
def optimal_bands(
    threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimizing the weighted sum of the false
    positive and false negative probability mass around the threshold (datasketch's rule)."""
    best, best_error = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            error = false_positive_weight * _false_positive(threshold, b, r) + false_negative_weight * _false_negative(
                threshold, b, r
            )
            if error < best_error:
                best, best_error = (b, r), error
    return best


def band_hashes(signature_rows: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """A 64-bit hash per (document, band) of the band's `rows` signature values (int64 for Spark)."""
    docs = signature_rows.shape[0]
    used = signature_rows[:, : bands * rows].reshape(docs, bands, rows).astype(np.uint64)
    h = np.full((docs, bands), np.uint64(0xCBF29CE484222325), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(rows):
            h = (h ^ used[:, :, k]) * np.uint64(0x100000001B3)
        h = h ^ (np.arange(bands, dtype=np.uint64)[None, :] * _MIX64)  # the same rows in two bands differ
    return h.view(np.int64)
