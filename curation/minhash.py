"""MinHash signatures and LSH banding in numpy, for whole batches of documents at once.

Signatures follow datasketch 2.x's `affine32` scheme bit for bit: each 32-bit shingle hash is
pre-mixed with the MurmurHash3 finalizer, permuted by `a * h + b` modulo 2**32 (odd `a`),
and the minimum over the document's shingles kept per permutation; the permutation
parameters come from `numpy.random.RandomState(seed)` as datasketch draws them. So a
signature computed here equals `MinHash(num_perm, seed=seed, scheme="affine32")` fed the same
32-bit shingle hashes (a test checks it), and the bands and rows for a threshold are chosen
as datasketch's `MinHashLSH` chooses them.

Shingles are hashed for a whole batch at once, without a Python loop per token: the batch's
lower-cased text becomes one array of code points, word characters are looked up in a table
of what `re`'s `\\w` matches, each token is hashed from prefix sums of a polynomial over its
code points (then the 64-bit MurmurHash3 finalizer), and each run of n tokens is combined
from those. `SHINGLE_HASHING` names this scheme: stored signatures record it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import cache

import numpy as np

EMPTY = np.uint32(0xFFFFFFFF)  # the signature value of a document without shingles
_WORD = re.compile(r"\w+")
_MIX64 = np.uint64(0x9E3779B97F4A7C15)
# How shingles are hashed; stored signatures are reusable only under the same scheme.
SHINGLE_HASHING = "codepoint-polynomial-fmix64/v2"


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


@cache
def _word_characters() -> np.ndarray:
    """For every code point, whether `re`'s `\\w` matches it: Python's own word characters."""
    table = np.zeros(0x110000, dtype=bool)
    for match in _WORD.finditer("".join(map(chr, range(0x110000)))):
        table[match.start() : match.end()] = True
    return table


def fmix64(h: np.ndarray) -> np.ndarray:
    """The MurmurHash3 64-bit finalizer (a bijection), element-wise on uint64."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> np.uint64(33))


_POWERS: dict[int, np.ndarray] = {}


def _powers(base: int, count: int) -> np.ndarray:
    """base**i modulo 2**64 for i < count (kept, so a worker computes them once)."""
    table = _POWERS.get(base)
    if table is None or len(table) < count:
        table = np.full(max(count, 1 << 18), np.uint64(base), dtype=np.uint64)
        table[0] = 1
        _POWERS[base] = table = np.cumprod(table, out=table)  # wraps modulo 2**64
    return table[:count]


_BASE = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
_LENGTH_KEY = np.uint64(0xD6E8FEB86659FD93)


def _run_hashes(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each run points[start:end], all runs at once: the polynomial
    sum(points[i] * BASE**(i - start)) modulo 2**64 from prefix sums, with the run's length,
    through fmix64."""
    with np.errstate(over="ignore"):
        prefix = np.empty(len(points) + 1, dtype=np.uint64)
        prefix[0] = 0
        np.cumsum(points.astype(np.uint64) * _powers(_BASE, len(points)), out=prefix[1:])
        inverse = _powers(_BASE_INVERSE, len(points) + 1)
        value = (prefix[ends] - prefix[starts]) * inverse[starts]
        return fmix64(value ^ ((ends - starts).astype(np.uint64) * _LENGTH_KEY))


def _tokens(texts: Sequence[str], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(token hash, document index) of every token of the texts, in order: `\\w+` runs of the
    lower-cased text, or every character of the whitespace-collapsed text."""
    if kind == "word":
        pieces = [t.lower() for t in texts]
    elif kind == "char":
        pieces = [" ".join(t.split()) for t in texts]
    else:
        raise ValueError(f"shingle kind must be word or char, got {kind!r}")
    # One code-point array for the batch; a newline (never a word character) between texts.
    points = np.frombuffer("\n".join(pieces).encode("utf-32-le", "surrogatepass"), dtype="<u4")
    text_starts = np.cumsum([0] + [len(p) + 1 for p in pieces[:-1]])
    if kind == "word":
        word = _word_characters()[points]
        edges = np.diff(word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    else:
        inside = np.ones(len(points), dtype=bool)
        inside[text_starts[1:] - 1] = False  # the separators
        starts = np.flatnonzero(inside)
        ends = starts + 1
    documents = np.searchsorted(text_starts, starts, side="right") - 1
    return _run_hashes(points, starts, ends), documents


def batch_shingles(
    texts: Sequence[str], n: int = 5, kind: str = "word", max_points: int = 1 << 18
) -> tuple[np.ndarray, np.ndarray]:
    """The 32-bit shingle hashes of many texts at once, vectorized: (hashes grouped by text, in
    order, repeats kept; the count per text). A shingle is a run of n consecutive tokens; a
    text with fewer tokens (but some) has one shingle of all of them. Texts are processed in
    groups of about `max_points` characters, so memory stays bounded whatever the batch."""
    hashes: list[np.ndarray] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    lo = 0
    while lo < len(texts):
        hi, size = lo, 0
        while hi < len(texts) and (hi == lo or size + len(texts[hi]) <= max_points):
            size += len(texts[hi]) + 1
            hi += 1
        group, group_counts = _group_shingles(texts[lo:hi], n, kind)
        hashes.append(group)
        counts[lo:hi] = group_counts
        lo = hi
    flat = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
    return (flat ^ (flat >> np.uint64(32))).astype(np.uint32), counts


def _group_shingles(texts: Sequence[str], n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    ids, documents = _tokens(texts, kind)
    tokens_per_text = np.bincount(documents, minlength=len(texts))
    windows = len(ids) - n + 1
    if windows > 0:
        hashes = ids[:windows].copy()
        with np.errstate(over="ignore"):
            for k in range(1, n):
                hashes = hashes * _MIX64 + ids[k : windows + k]
        inside = documents[:windows] == documents[n - 1 :]
        hashes, owners = hashes[inside], documents[:windows][inside]
    else:
        hashes, owners = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    short = np.flatnonzero((tokens_per_text > 0) & (tokens_per_text < n))
    if len(short):  # one shingle of all their tokens
        firsts = np.searchsorted(documents, short)
        extra = [rolling_hashes(ids[f : f + c], c) for f, c in zip(firsts, tokens_per_text[short], strict=True)]
        hashes = np.concatenate([hashes, *extra])
        owners = np.concatenate([owners, short])
        order = np.argsort(owners, kind="stable")
        hashes, owners = hashes[order], owners[order]
    return hashes, np.bincount(owners, minlength=len(texts))


def shingle_hashes(text: str, n: int = 5, kind: str = "word") -> np.ndarray:
    """The distinct 32-bit hashes of one text's shingles: word n-grams of lower-cased `\\w+`
    tokens, or character n-grams of the whitespace-collapsed text."""
    return np.unique(batch_shingles([text], n, kind)[0])


def signatures_of(hashes: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One signature row (uint32, len(a) values) per text from its shingle hashes, grouped by
    text as `batch_shingles` gives them. One permutation at a time over every shingle of the
    batch, reduced per text with `minimum.reduceat`: memory is one copy of the shingles."""
    out = np.full((len(a), len(counts)), EMPTY, dtype=np.uint32)
    present = np.flatnonzero(counts)
    if len(present) == 0:
        return out.T.copy()
    mixed = fmix32(hashes.astype(np.uint32))
    starts = (np.cumsum(counts) - counts)[present]
    permuted = np.empty_like(mixed)
    for k in range(len(a)):
        np.multiply(mixed, a[k], out=permuted)
        np.add(permuted, b[k], out=permuted)
        out[k, present] = np.minimum.reduceat(permuted, starts)
    return np.ascontiguousarray(out.T)


def signatures(shingles: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One signature row per document from its 32-bit shingle hashes."""
    counts = np.array([len(s) for s in shingles], dtype=np.int64)
    flat = np.concatenate(shingles).astype(np.uint32) if shingles else np.empty(0, dtype=np.uint32)
    return signatures_of(flat, counts, a, b)


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
