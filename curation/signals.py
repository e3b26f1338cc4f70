"""Quality signals of one text: Gopher quality and repetition rules, C4 rules, character entropy.

Pure Python, one text at a time, so the same function serves the Spark stage (inside an
Arrow UDF) and the single-process baseline, and is tested on known answers. Definitions
follow the Gopher paper (Rae et al. 2021, appendix A1): words are whitespace tokens; a line,
paragraph or n-gram is a duplicate from its second occurrence on; the duplicated n-gram
fraction counts the characters of every word covered by a repeated n-gram once ("not counting
characters in overlapping n-grams more than once"); fractions are over the text's characters.
The n-gram signals are computed on 64-bit rolling hashes with numpy.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "‣", "◦", "⁃", "-", "*", "–", "—", "·")
ELLIPSES = ("...", "…")
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", "’", "。", "！", "？")
_PARAGRAPHS = re.compile(r"\n{2,}")
_PUNCTUATION = re.compile(r"^\W+|\W+$")


def _duplicates(elements: list[str]) -> tuple[int, int]:
    """How many elements repeat an earlier one, and their characters."""
    seen: set[str] = set()
    count = chars = 0
    for element in elements:
        if element in seen:
            count += 1
            chars += len(element)
        else:
            seen.add(element)
    return count, chars


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for rolling n-gram hashes


def _ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash per word n-gram (position i covers words i..i+n-1); collisions ~ W**2 / 2**64."""
    hashes = ids[: len(ids) - n + 1].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            hashes = hashes * _MIX + ids[k : len(ids) - n + 1 + k]
    return hashes


def _ngram_signals(words: list[str], ns: range) -> dict[int, tuple[int, int]]:
    """For each n: (characters of the most frequent repeated n-gram times its count,
    characters of the words covered by n-grams that repeat an earlier occurrence, each word once)."""
    vocabulary: dict[str, int] = {}
    ids = np.fromiter((vocabulary.setdefault(w, len(vocabulary)) for w in words), dtype=np.uint64, count=len(words))
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    results: dict[int, tuple[int, int]] = {}
    for n in ns:
        if len(words) < n:
            results[n] = (0, 0)
            continue
        hashes = _ngram_hashes(ids, n)
        _, first, inverse, counts = np.unique(hashes, return_index=True, return_inverse=True, return_counts=True)
        top = 0
        if counts.max() > 1:
            best = np.flatnonzero(counts == counts.max())
            start = int(first[best[np.argmin(first[best])]])  # the earliest of the most frequent
            top = (int(lengths[start : start + n].sum()) + n - 1) * int(counts.max())
        repeat = first[inverse] < np.arange(len(hashes))
        covered = np.zeros(len(words), dtype=bool)
        for k in range(n):
            covered[k : k + len(repeat)] |= repeat
        results[n] = (top, int(lengths[covered].sum()))
    return results


def char_entropy(text: str) -> float:
    """Shannon entropy of the character distribution, in bits."""
    if not text:
        return 0.0
    total = len(text)
    return -sum(c / total * math.log2(c / total) for c in Counter(text).values())


def quality_signals(text: str, stop_words: frozenset[str] = GOPHER_STOP_WORDS) -> dict[str, float]:
    """Every signal of one text; fractions are 0 for an empty text rather than undefined."""
    chars = len(text)
    words = text.split()
    n_words = len(words)
    bare = [w if w.isalnum() else _PUNCTUATION.sub("", w) for w in words]  # isalnum: nothing to strip
    lines = [line for line in text.split("\n") if line.strip()]
    n_lines = len(lines)
    paragraphs = [p for p in _PARAGRAPHS.split(text.strip()) if p.strip()]
    dup_lines, dup_line_chars = _duplicates(lines)
    dup_paragraphs, dup_paragraph_chars = _duplicates(paragraphs)
    lowered = text.lower()

    def frac(part: float, whole: float) -> float:
        return part / whole if whole else 0.0

    signals: dict[str, float] = {
        # Gopher quality
        "word_count": float(n_words),
        "mean_word_length": frac(sum(len(w) for w in bare if w), sum(1 for w in bare if w)),
        "symbol_to_word_ratio": frac(text.count("#") + sum(text.count(e) for e in ELLIPSES), n_words),
        "bullet_lines_fraction": frac(sum(1 for ln in lines if ln.lstrip().startswith(BULLETS)), n_lines),
        "ellipsis_lines_fraction": frac(sum(1 for ln in lines if ln.rstrip().endswith(ELLIPSES)), n_lines),
        "alpha_words_fraction": frac(sum(1 for w in words if w.isalpha() or any(ch.isalpha() for ch in w)), n_words),
        "stop_word_count": float(sum(1 for w in bare if w.lower() in stop_words)),
        # Gopher repetition
        "dup_line_fraction": frac(dup_lines, n_lines),
        "dup_line_char_fraction": frac(dup_line_chars, chars),
        "dup_paragraph_fraction": frac(dup_paragraphs, len(paragraphs)),
        "dup_paragraph_char_fraction": frac(dup_paragraph_chars, chars),
        # C4
        "terminal_punctuation_lines_fraction": frac(
            sum(1 for ln in lines if ln.rstrip().endswith(TERMINAL_PUNCTUATION)), n_lines
        ),
        "has_javascript": float("javascript" in lowered),
        "has_lorem_ipsum": float("lorem ipsum" in lowered),
        "has_curly_brace": float("{" in text),
        "char_entropy": char_entropy(text),
    }
    ngrams = _ngram_signals(words, range(2, 11))
    for n in (2, 3, 4):
        signals[f"top_{n}gram_char_fraction"] = frac(ngrams[n][0], chars)
    for n in range(5, 11):
        signals[f"dup_{n}gram_char_fraction"] = frac(ngrams[n][1], chars)
    return signals
