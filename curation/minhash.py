"""MinHash signatures and LSH banding in numpy, for whole batches of documents at once.

Signatures follow datasketch 2.x's `affine32` scheme bit for bit: each 32-bit shingle hash is
pre-mixed with the MurmurHash3 finalizer, permuted by `a * h + b` modulo 2**32 (odd `a`),
and the minimum over the document's shingles kept per permutation; the permutation
parameters come from `numpy.random.RandomState(seed)` as datasketch draws them. So a
signature computed here equals `MinHash(num_perm, seed=seed, scheme="affine32")` fed the same
32-bit shingle hashes (a test checks it), and the bands and rows for a threshold are chosen
as datasketch's `MinHashLSH` chooses them.

Shingles are hashed for a whole batch at once, without Python work per token: the batch's
lower-cased text becomes one array of code points, and one compiled pass (numba) finds the
tokens (word characters are what `re`'s `\\w` matches, from a table over all code points),
hashes each as a polynomial over its code points through the 64-bit MurmurHash3 finalizer,
and combines each run of n tokens. `SHINGLE_HASHING` names this scheme: stored signatures
record it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from functools import cache

import numba
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


_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd
_LENGTH_KEY = np.uint64(0xD6E8FEB86659FD93)
_FMIX1, _FMIX2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_LOW32 = np.uint64(0xFFFFFFFF)
# Compiled code is cached beside the module; not when it is imported from a zip (spark-submit's
# --py-files), where numba has nowhere to keep it and each process compiles once (about 1 s).
_CACHE = os.path.isfile(__file__)


@numba.njit(cache=_CACHE, nogil=True)
def _fmix64(h: np.uint64) -> np.uint64:
    """The MurmurHash3 64-bit finalizer (a bijection)."""
    h ^= h >> np.uint64(33)
    h *= _FMIX1
    h ^= h >> np.uint64(33)
    h *= _FMIX2
    return h ^ (h >> np.uint64(33))


@numba.njit(cache=_CACHE, nogil=True)
def _shingle_kernel(
    points: np.ndarray, text_ends: np.ndarray, word: np.ndarray, n: int, words: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the code points of many texts (each ended by a separator at `text_ends`).

    A token is a run of word characters (`words`), or a single character. Its hash is the
    polynomial sum(point[i] * BASE**(i - start)) modulo 2**64, xor its length times a key,
    through fmix64. A shingle is n consecutive tokens h0..h(n-1) of one text, combined as
    (((h0 * MIX + h1) * MIX + h2) ...), folded to 32 bits; a text with fewer tokens (but
    some) has one shingle of all of them. Returns the shingles and the running count at the
    end of each text."""
    out = np.empty(len(points), dtype=np.uint32)
    ends = np.empty(len(text_ends), dtype=np.int64)
    tokens_of_text = np.empty(len(points) + 1, dtype=np.uint64)
    written = 0
    start = 0
    for t in range(len(text_ends)):
        end = text_ends[t]
        tokens = 0
        i = start
        while i < end:
            if words:
                if not word[points[i]]:
                    i += 1
                    continue
                value, power, j = np.uint64(0), np.uint64(1), i
                while j < end and word[points[j]]:
                    value += np.uint64(points[j]) * power
                    power *= _BASE
                    j += 1
            else:
                value, j = np.uint64(points[i]), i + 1
            tokens_of_text[tokens] = _fmix64(value ^ (np.uint64(j - i) * _LENGTH_KEY))
            tokens += 1
            if tokens >= n:
                h = tokens_of_text[tokens - n]
                for k in range(tokens - n + 1, tokens):
                    h = h * _MIX64 + tokens_of_text[k]
                out[written] = np.uint32((h ^ (h >> np.uint64(32))) & _LOW32)
                written += 1
            i = j
        if 0 < tokens < n:
            h = tokens_of_text[0]
            for k in range(1, tokens):
                h = h * _MIX64 + tokens_of_text[k]
            out[written] = np.uint32((h ^ (h >> np.uint64(32))) & _LOW32)
            written += 1
        ends[t] = written
        start = end + 1
    return out[:written], ends


def batch_shingles(
    texts: Sequence[str], n: int = 5, kind: str = "word", max_points: int = 1 << 18
) -> tuple[np.ndarray, np.ndarray]:
    """The 32-bit shingle hashes of many texts at once: (hashes grouped by text, in order,
    repeats kept; the count per text). Word shingles are runs of n `\\w+` tokens of the
    lower-cased text, char shingles runs of n characters of the whitespace-collapsed text.
    Texts go through the compiled pass in groups of about `max_points` characters, so memory
    stays bounded whatever the batch."""
    if kind not in ("word", "char"):
        raise ValueError(f"shingle kind must be word or char, got {kind!r}")
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
    return (np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint32)), counts


def _group_shingles(texts: Sequence[str], n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    pieces = [t.lower() for t in texts] if kind == "word" else [" ".join(t.split()) for t in texts]
    # One code-point array for the group; a newline (never a word character) ends each text.
    points = np.frombuffer("\n".join(pieces).encode("utf-32-le", "surrogatepass"), dtype="<u4")
    text_ends = np.cumsum([len(p) + 1 for p in pieces], dtype=np.int64) - 1
    hashes, ends = _shingle_kernel(points, text_ends, _word_characters(), n, kind == "word")
    return hashes, np.diff(ends, prepend=0)


def shingle_hashes(text: str, n: int = 5, kind: str = "word") -> np.ndarray:
    """The distinct 32-bit hashes of one text's shingles: word n-grams of lower-cased `\\w+`
    tokens, or character n-grams of the whitespace-collapsed text."""
    return np.unique(batch_shingles([text], n, kind)[0])


def signatures_of(
    hashes: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = 1 << 16
) -> np.ndarray:
    """One signature row (uint32, len(a) values) per text from its shingle hashes, grouped by
    text as `batch_shingles` gives them. The shingles go in blocks of whole texts of about
    `block` values (small enough to stay in the CPU cache); in each block every permutation
    in turn is applied to all its shingles at once and reduced per text with `minimum.reduceat`."""
    out = np.full((len(a), len(counts)), EMPTY, dtype=np.uint32)
    mixed = fmix32(hashes.astype(np.uint32))
    ends = np.cumsum(counts)
    starts = ends - counts
    permuted = np.empty(max(block, int(counts.max(initial=0))), dtype=np.uint32)
    first = 0
    while first < len(counts):
        last = max(int(np.searchsorted(ends, starts[first] + block, side="right")), first + 1)
        lo, hi = starts[first], ends[last - 1]
        texts = first + np.flatnonzero(counts[first:last])
        if len(texts):
            values, scratch, cuts = mixed[lo:hi], permuted[: hi - lo], starts[texts] - lo
            for k in range(len(a)):
                np.multiply(values, a[k], out=scratch)
                np.add(scratch, b[k], out=scratch)
                out[k, texts] = np.minimum.reduceat(scratch, cuts)
        first = last
    return np.ascontiguousarray(out.T)


def signatures(shingles: list[np.ndarray], a: np.ndarray, b: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """One signature row per document from its 32-bit shingle hashes."""
    counts = np.array([len(s) for s in shingles], dtype=np.int64)
    flat = np.concatenate(shingles).astype(np.uint32) if shingles else np.empty(0, dtype=np.uint32)
    return signatures_of(flat, counts, a, b, block)


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
