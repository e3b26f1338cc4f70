"""Cheap tests that say where an expensive recognizer cannot find anything, so it runs only where it can.

Most of a corpus holds no personal data, and most of what the `pii` stage spends goes to regular
expressions and NER over text where nothing is. Each screen here is a necessary condition of a
recognizer: a text it rejects is one where that recognizer finds nothing, so skipping it there
changes no finding. `tests/test_pii_screen.py` checks that on texts of every shape.

- `LiteralScreen`: the literals a regular expression cannot match without (`AKIA`, `password`),
  read from the pattern itself, so the screen follows the patterns a package ships.
- `RECOGNIZER_TRIGGERS`: hand-written conditions for Presidio's pattern recognizers (an e-mail
  needs an `@`, a card number four digits in a row).
- `name_lines`, `name_sentences`: the lines, or sentences, where NER can find a name or a place
  (the detector reads sentences). Unlike the two above this is a judgement, not a proof: it
  trusts NER to find only names written with a capital letter, which a small English model
  almost always does, and to find a sentence's names without the sentences around it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import regex

try:  # Python 3.11+
    from re import _constants as sre_constants
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

if TYPE_CHECKING:
    from curation.name_lexicon import NameLexicon

# `corner of`, case-insensitive: the literal part of the street-address trigger.
_CORNER_OF = r"[cC][oO][rR][nN][eE][rR] [oO][fF]"

# Necessary conditions of Presidio's recognizers (their patterns are in presidio_analyzer's
# predefined recognizers and ours in `curation/pii_detect.py`); a recognizer not listed always
# runs. Each starts with the character class it needs first (`\d`), so a scan skips ahead fast.
RECOGNIZER_TRIGGERS: dict[str, re.Pattern[str]] = {
    "EmailRecognizer": re.compile("@"),
    # Every issuer group starts with four digits: (4\d{3})|(5[0-5]\d{2})|...
    "CreditCardRecognizer": re.compile(r"\d\d\d\d"),
    # Two capitals, two digits.
    "IbanRecognizer": re.compile(r"[0-9](?<=[A-Z]{2}[0-9])[0-9]"),
    # IPv4 forms hold `digit.digit`; every IPv6 form holds `hex:` or `::`.
    "IpRecognizer": re.compile(r"[0-9A-Fa-f:](?::|(?<=[0-9])\.[0-9])"),
    "UsSsnRecognizer": re.compile(r"[0-9]{3}"),
    # A house number or postcode next to a word (`12 Main`, `Road 12`, `SW1A`, `Apt #4`), or `corner of`.
    "StreetAddressRecognizer": re.compile(
        r"\d(?:(?<=[ \t]\d)|(?<=[ \t]#\d)|(?<=[A-Z]\d)|(?=[A-Za-z]?,?[ \t])|(?=[A-Z]))|" + _CORNER_OF
    ),
}
# The same conditions for a text without a digit (most prose): None where the recognizer cannot
# fire then, else what is left of its trigger, led by a literal for a fast scan.
WITHOUT_DIGITS: dict[str, re.Pattern[str] | None] = {
    "CreditCardRecognizer": None,
    "IbanRecognizer": None,
    "UsSsnRecognizer": None,
    "IpRecognizer": re.compile(r":(?<=[A-Fa-f:]:)"),  # IPv6 without a digit: `a:` or `::`
    "StreetAddressRecognizer": re.compile(_CORNER_OF),
}
ANY_DIGIT = re.compile(r"\d")


def triggered(name: str, text: str, has_digit: bool | None = None) -> bool:
    """Whether the recognizer `name` can find anything in `text`; `has_digit`, when the caller
    knows it, whether `text` holds a digit (`ANY_DIGIT`)."""
    if has_digit is False and name in WITHOUT_DIGITS:
        trigger = WITHOUT_DIGITS[name]
        return trigger is not None and trigger.search(text) is not None
    trigger = RECOGNIZER_TRIGGERS.get(name)
    return trigger is None or trigger.search(text) is not None


# ---------------------------------------------------------------------------------------------
# Required literals of a regular expression

_Literals = tuple[frozenset[str], bool]  # one of these strings must occur; case-folded?


def required_literals(pattern: re.Pattern[str], most: int = 3) -> tuple[_Literals, ...]:
    """Sets of strings such that every match of `pattern` contains one string of each set, each
    with whether it is case-folded (the pattern ignores case there); the `most` most selective
    sets, none when none was found.

    Only ASCII literals count (their case variants are ASCII or fold to them), so a text whose
    `casefold()` holds none of a folded set's strings cannot match.
    """
    try:
        parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    except (re.error, TypeError, ValueError):
        return ()
    found = _sequence(list(parsed), bool(pattern.flags & re.IGNORECASE))
    return tuple(sorted(found, key=_selectivity)[:most])


def _selectivity(literals: _Literals) -> tuple[int, int]:
    """Sort key, most selective first: the longer the shortest string and the fewer strings."""
    return -min(map(len, literals[0])), len(literals[0])


def _sequence(items: list[tuple[object, object]], fold: bool) -> list[_Literals]:
    found: list[_Literals] = []
    run: list[str] = []
    for op, av in [*items, (None, None)]:
        if op is sre_constants.LITERAL and isinstance(av, int) and av < 128:
            run.append(chr(av))
            continue
        if run:
            text = "".join(run)
            found.append((frozenset({text.casefold() if fold else text}), fold))
            run = []
        if op is None:
            break
        found.extend(_item(op, av, fold))
    return found


def _item(op: object, av: object, fold: bool) -> list[_Literals]:
    if op is sre_constants.SUBPATTERN:
        _group, add_flags, del_flags, body = av  # type: ignore[misc]
        inner = (fold or bool(add_flags & re.IGNORECASE)) and not del_flags & re.IGNORECASE
        return _sequence(list(body), inner)
    if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
        low, _high, body = av  # type: ignore[misc]
        return _sequence(list(body), fold) if low >= 1 else []
    if op is sre_constants.BRANCH:
        _, alternatives = av  # type: ignore[misc]
        best = [
            min(found, key=_selectivity) if found else None
            for found in (_sequence(list(a), fold) for a in alternatives)
        ]
        if any(b is None for b in best):
            return []
        # One case mode for the union: fold all when any alternative is folded.
        folded = any(b[1] for b in best)  # type: ignore[index]
        return [(frozenset(x.casefold() if folded else x for b in best for x in b[0]), folded)]  # type: ignore[index]
    return []


# ---------------------------------------------------------------------------------------------
# Required runs of a regular expression

# A character class repeated at least this often is a run worth screening on (`[a-z0-9]{64}`):
# prose rarely holds one, and finding one is a single scan of the text.
MIN_RUN = 16

_CATEGORIES = {
    sre_constants.CATEGORY_DIGIT: r"\d",
    sre_constants.CATEGORY_NOT_DIGIT: r"\D",
    sre_constants.CATEGORY_SPACE: r"\s",
    sre_constants.CATEGORY_NOT_SPACE: r"\S",
    sre_constants.CATEGORY_WORD: r"\w",
    sre_constants.CATEGORY_NOT_WORD: r"\W",
}


def required_runs(pattern: re.Pattern[str], min_run: int = MIN_RUN) -> tuple[re.Pattern[str], ...]:
    """Patterns `[class]{n}` (n >= `min_run`) such that every match of `pattern` contains a match
    of each: the long runs of one character class it cannot match without (the 24 to 64 letters
    and digits of an API key). Compiled with `pattern`'s flags, so case is ignored where it is."""
    try:
        parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    except (re.error, TypeError, ValueError):
        return ()
    flags = pattern.flags & (re.IGNORECASE | re.ASCII)
    return tuple(re.compile(f"{cls}{{{low}}}", flags) for cls, low in _runs(list(parsed), min_run))


# Texts' whitespace: a run whose class holds none of it lies inside one `\S+` token of the text.
_WHITESPACE = "".join(chr(c) for c in range(0x3000 + 1) if chr(c).isspace())
_LONG_TOKEN = re.compile(rf"\S{{{MIN_RUN},}}")


def _within_tokens(run: re.Pattern[str]) -> bool:
    """Whether no match of `run` can hold whitespace, so it can be searched in long tokens only."""
    one = re.compile(run.pattern.rsplit("{", 1)[0], run.flags)
    return not any(one.match(c) for c in _WHITESPACE)


def _runs(items: list[tuple[object, object]], min_run: int) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for op, av in items:
        if op is sre_constants.SUBPATTERN:
            _group, add_flags, del_flags, body = av  # type: ignore[misc]
            if not (add_flags or del_flags):  # a local case flag would change what the class holds
                found.extend(_runs(list(body), min_run))
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            low, _high, body = av  # type: ignore[misc]
            body = list(body)
            cls = _character_class(body[0]) if len(body) == 1 else None
            if cls is not None and low >= min_run:
                found.append((cls, low))
            elif low >= 1:
                found.extend(_runs(body, min_run))
    return found


def _character_class(item: tuple[object, object]) -> str | None:
    """`item` (one parsed element) as a character class's source, or None when it is not one."""
    op, av = item
    if op is sre_constants.LITERAL:
        return f"[{_escaped(av)}]"  # type: ignore[arg-type]
    if op is sre_constants.CATEGORY and av in _CATEGORIES:
        return _CATEGORIES[av]  # type: ignore[index]
    if op is not sre_constants.IN:
        return None
    parts = []
    for inner_op, inner_av in av:  # type: ignore[attr-defined]
        if inner_op is sre_constants.NEGATE:
            parts.insert(0, "^")
        elif inner_op is sre_constants.LITERAL:
            parts.append(_escaped(inner_av))
        elif inner_op is sre_constants.RANGE:
            parts.append(f"{_escaped(inner_av[0])}-{_escaped(inner_av[1])}")
        elif inner_op is sre_constants.CATEGORY and inner_av in _CATEGORIES:
            parts.append(_CATEGORIES[inner_av])
        else:
            return None
    return f"[{''.join(parts)}]"


def _escaped(code: int) -> str:
    return re.escape(chr(code)) if chr(code) not in "^-]\\" else "\\" + chr(code)


@dataclass(frozen=True)
class LiteralScreen:
    """Of a set of patterns, the ones that can match a text: those whose required literals it
    holds (one of each set) and whose required runs it holds (`required_runs`), and those
    without any (always)."""

    patterns: tuple[re.Pattern[str], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_literals", tuple(required_literals(p) for p in self.patterns))
        runs = tuple(tuple((run, _within_tokens(run)) for run in required_runs(p)) for p in self.patterns)
        object.__setattr__(self, "_runs", runs)

    def candidates(self, text: str) -> Iterator[re.Pattern[str]]:
        folded: str | None = None
        tokens: list[str] | None = None  # the text's long `\S+` tokens, found once
        for pattern, required, runs in zip(self.patterns, self._literals, self._runs, strict=True):  # type: ignore[attr-defined]
            for words, fold in required:
                if fold and folded is None:
                    folded = text.casefold()
                haystack = folded if fold else text
                if not any(map(haystack.__contains__, words)):  # type: ignore[union-attr]
                    break
            else:
                if runs and tokens is None:
                    tokens = _LONG_TOKEN.findall(text)
                if all(
                    any(run.search(t) for t in tokens) if within else run.search(text)  # type: ignore[union-attr]
                    for run, within in runs
                ):
                    yield pattern


# ---------------------------------------------------------------------------------------------
# Where NER can find a name

# A capitalized word (`Jean-Luc`, `O'Brien`, `Łukasz`) or one in capitals (`USA`), as a whole word.
_NAME_SHAPED = regex.compile(r"(?<![\p{L}\p{N}_'’.])(?:\p{Lu}[\p{Ll}'’-]*\p{Ll}|\p{Lu}{2,})(?![\p{L}\p{N}_])")
# Capitalized words that are never a name or a place: Python's literals, docstrings' argument
# headers and the pronoun. NER reads them as persons in docstrings ("If False, only Polars
# classes are registered"; a line "Args:" read alone).
NOT_NAMES = frozenset({"None", "True", "False", "Args", "Kwargs", "I"})
_OPENERS = " \t\"'“‘«([{*#>-•"


def name_lines(text: str, lexicon: NameLexicon | None = None) -> list[tuple[int, int]]:
    """(start, end) of the lines of `text` where NER can find a name or a place.

    A line qualifies when it holds a capitalized word that is not just a common word opening a
    sentence (`The`, `This`, `When`): names mid-sentence, or two in a row (`John Smith`), or a
    sentence opening with a word that is not a stop word. Measured on presidio-research's
    labelled sentences with `en_core_web_sm`, NER on these lines alone loses 0.017 of PERSON
    recall (names written in lower case, which that model rarely finds anyway) and keeps a
    third of the characters of docstrings (benchmarks/README.md). With a `lexicon`, words it
    says cannot be names (`Returns`, `Python`) do not qualify a line either.
    """
    return [m.span() for m in _LINE.finditer(text) if _may_name(m.group(0), lexicon)]


_LINE = re.compile(r"[^\n]+")


def name_sentences(text: str, lexicon: NameLexicon | None = None, context_words: int = 0) -> list[tuple[int, int]]:
    """(start, end) of the sentences of `text` where NER can find a name or a place, by the rule
    of `name_lines`; neighbouring ones on a line stay one span, so NER reads them as written.

    Paragraphs of prose are single lines: one technical word in one sentence would send the
    whole paragraph to NER. A sentence is where spaCy's small model finds its names anyway (its
    features reach four tokens either side), and `J. R. R. Tolkien`, `Dr. Smith` or `St. Louis`
    are not cut (no end after an initial or a title). With `context_words`, each span is cut to
    that many words either side of the words that qualify it: the model's features reach four
    tokens either side, and a long sentence's far end adds to NER's time, not to its names.
    """
    spans: list[list[int]] = []  # start, end, and where the first and last words that qualify it are
    for line in _LINE.finditer(text):
        start = line.start()
        for end in [m.end() + line.start() for m in _SENTENCE_END.finditer(line.group(0))] + [line.end()]:
            while start < end and text[start].isspace():
                start += 1
            words = _name_words(text[start:end], lexicon)
            first = next(words, None) if end > start else None
            if first is not None:
                last = first
                if context_words:
                    for last in words:  # noqa: B007 - the last one is wanted
                        pass
                if spans and spans[-1][1] > line.start() and not text[spans[-1][1] : start].strip():
                    spans[-1][1], spans[-1][3] = end, start + last[1]
                else:
                    spans.append([start, end, start + first[0], start + last[1]])
            start = end
    if not context_words:
        return [(start, end) for start, end, _, _ in spans]
    return [_around(text, *span, context_words) for span in spans]


_SPACED_WORD = re.compile(r"\S+")


def _around(text: str, start: int, end: int, first: int, last: int, context_words: int) -> tuple[int, int]:
    """`text[start:end]` cut to `context_words` words before `first` and after `last`."""
    before = [m.start() for m in _SPACED_WORD.finditer(text, start, first)]
    after = [m.end() for m in _SPACED_WORD.finditer(text, last, end)]
    return (
        before[-context_words] if len(before) >= context_words else start,
        after[context_words - 1] if len(after) >= context_words else end,
    )


# A sentence ends at `.`, `!` or `?` (and closing quotes or brackets) before a space, unless the
# word before is an initial or a title or abbreviation that names go after.
_SENTENCE_END = regex.compile(
    r"(?<!(?:^|[\s(\"'])(?:\p{Lu}|Mr|Mrs|Ms|Mx|Dr|Prof|St|Ste|Mt|Ft|Jr|Sr|Rev|Hon|Gen|Col|Capt|Lt|Sgt|Cpt|"
    r"Gov|Sen|Rep|Pres|No|vs|etc|al|cf|e\.g|i\.e))[.!?]+[\"'’”)\]]*(?=\s)"
)


@functools.cache
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS  # spaCy loads on first use, not on import

    return frozenset(STOP_WORDS)


def _may_name(line: str, lexicon: NameLexicon | None) -> bool:
    return next(_name_words(line, lexicon), None) is not None


def _name_words(line: str, lexicon: NameLexicon | None) -> Iterator[tuple[int, int]]:
    """(start, end) of the words of `line` that make it one where NER can find a name."""
    previous = None
    for m in _NAME_SHAPED.finditer(line):
        word = m.group(0)
        if lexicon is not None and previous is not None and previous.end() + 1 == m.start():
            if lexicon.names_place([previous.group(0), word]):  # `United Kingdom`: English words, a place
                yield previous.start(), m.end()
        previous = m
        if word in NOT_NAMES or (lexicon is not None and not lexicon.may_hold_name(word)):
            continue
        before = line[: m.start()].rstrip(_OPENERS)
        opens_sentence = not before or before[-1] in ".!?:;"
        if opens_sentence and word.lower() in _stop_words():
            continue
        yield m.span()
