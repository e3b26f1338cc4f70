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
