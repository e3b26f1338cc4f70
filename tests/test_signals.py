"""Quality signals on texts whose answers can be counted by hand."""

import math

import pytest

from curation.signals import char_entropy, quality_signals


def test_clean_prose_has_no_repetition() -> None:
    text = "The cat sat on the mat.\nIt was a sunny day, and the birds sang with joy."
    s = quality_signals(text)
    assert s["word_count"] == 17
    assert s["stop_word_count"] == 5  # the, the, and, the, with
    assert s["dup_line_fraction"] == 0 and s["dup_paragraph_fraction"] == 0
    assert s["terminal_punctuation_lines_fraction"] == 1.0
    assert s["alpha_words_fraction"] == 1.0
    assert s["top_2gram_char_fraction"] == 0.0  # no 2-gram occurs twice
    assert all(s[f"dup_{n}gram_char_fraction"] == 0 for n in range(5, 11))
    assert s["has_curly_brace"] == 0 and s["has_javascript"] == 0


def test_repeated_lines_and_paragraphs() -> None:
    text = "buy now\n\nbuy now\n\nbuy now\n\nreal content here"
    s = quality_signals(text)
    assert s["dup_line_fraction"] == pytest.approx(2 / 4)
    assert s["dup_line_char_fraction"] == pytest.approx(14 / len(text))
    assert s["dup_paragraph_fraction"] == pytest.approx(2 / 4)
    # "buy now" is the top 2-gram: 7 characters, 3 times
    assert s["top_2gram_char_fraction"] == pytest.approx(21 / len(text))


def test_duplicated_ngrams_count_each_word_once() -> None:
    words = "a b c d e".split()
    text = " ".join(words * 3)  # the 5-gram "a b c d e" occurs three times
    s = quality_signals(text)
    assert s["dup_5gram_char_fraction"] == pytest.approx(10 / len(text))  # two repeats of 5 one-char words


def test_boilerplate_markers() -> None:
    text = "• item one\n• item two...\n# heading ...\nLorem ipsum dolor\nenable JavaScript {x}"
    s = quality_signals(text)
    assert s["bullet_lines_fraction"] == pytest.approx(2 / 5)
    assert s["ellipsis_lines_fraction"] == pytest.approx(2 / 5)
    assert s["symbol_to_word_ratio"] == pytest.approx(3 / 15)  # one "#", two "...", 15 words
    assert s["has_lorem_ipsum"] == s["has_javascript"] == s["has_curly_brace"] == 1.0


@pytest.mark.parametrize("text", ["", "   \n\n  ", "🙂🙂🙂", "\x00\x01\x02"])
def test_degenerate_texts_give_numbers_not_errors(text: str) -> None:
    s = quality_signals(text)
    assert all(isinstance(v, float) and math.isfinite(v) for v in s.values())


def test_char_entropy() -> None:
    assert char_entropy("aaaa") == 0.0
    assert char_entropy("abab") == pytest.approx(1.0)
    assert char_entropy("abcd") == pytest.approx(2.0)


def _reference_top(words: list[str], n: int) -> int:
    from collections import Counter

    grams = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    if not grams or grams.most_common(1)[0][1] < 2:
        return 0
    best = max(grams.values())
    first = next(g for g in (" ".join(words[i : i + n]) for i in range(len(words) - n + 1)) if grams[g] == best)
    return len(first) * best


def _reference_covered(words: list[str], n: int) -> int:
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            for k in range(i, i + n):
                covered[k] = True
        seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered, strict=True) if c)


@pytest.mark.parametrize("seed", range(5))
def test_numpy_ngram_signals_match_a_plain_python_reference(seed: int) -> None:
    import random

    from curation.signals import _ngram_signals

    rng = random.Random(seed)
    vocabulary = [rng.choice(["a", "bb", "ccc", "dddd", "e"]) + str(i % 7) for i in range(12)]
    words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 400))]
    got = _ngram_signals(words, range(2, 11))
    for n in range(2, 11):
        assert got[n] == (_reference_top(words, n), _reference_covered(words, n)), n


def test_the_shortcuts_change_no_word() -> None:
    """A word `isalnum()` has no punctuation to strip, and one `isalpha()` holds a letter."""
    from curation.signals import _PUNCTUATION

    words = ["naïve", "Łódź", "x²", "٣٤", "snake_case", "_x_", "—", "(a)", "C++", "日本語", "ǅemal", "Ⅻ", "e\u0301"]
    for word in words:
        if word.isalnum():
            assert _PUNCTUATION.sub("", word) == word, word
        if word.isalpha():
            assert any(ch.isalpha() for ch in word), word
