"""Quality signals of one text: Gopher quality and repetition rules, C4 rules, character entropy.

Pure Python, one text at a time, so the same function serves the Spark stage (inside an
Arrow UDF) and the single-process baseline, and is tested on known answers. Definitions
follow the Gopher paper (Rae et al. 2021, appendix A1) as datatrove implements them: words
are whitespace tokens, duplicates are counted after their first occurrence, and n-gram
character fractions are taken over the document's characters.
"""

from __future__ import annotations

import math
import re
from collections import Counter

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


def _top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent word n-gram (its length times its count)."""
    grams = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return len(gram) * count if count > 1 else 0


def _duplicated_ngram_chars(words: list[str], n: int) -> int:
    """Characters of words inside n-grams that repeat an earlier n-gram (each word once)."""
    seen: set[tuple[str, ...]] = set()
    chars = 0
    i = 0
    while i <= len(words) - n:
        gram = tuple(words[i : i + n])
        if gram in seen:
            chars += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


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
    bare = [_PUNCTUATION.sub("", w) for w in words]
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
        "alpha_words_fraction": frac(sum(1 for w in words if any(ch.isalpha() for ch in w)), n_words),
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
    for n in (2, 3, 4):
        signals[f"top_{n}gram_char_fraction"] = frac(_top_ngram_chars(words, n), chars)
    for n in range(5, 11):
        signals[f"dup_{n}gram_char_fraction"] = frac(_duplicated_ngram_chars(words, n), chars)
    return signals
