"""What the pii stage's NER may take for a name: common words and names of things are not."""

from __future__ import annotations

import pytest

from curation.name_lexicon import name_lexicon


@pytest.mark.parametrize(
    "words",
    [
        "Convert",  # a docstring's opening verb
        "Returns",  # and its inflections
        "Applies",
        "Python",  # English words in Webster's, which no name list holds
        "node",
        "grant",  # in lower case, an English word is not a name, even one that is a name capitalized
        "MLflow",  # a capital inside
        "SymPy",
        "NaN",
        "JSON",  # an acronym
        "X.",  # an initial alone
        "n_samples",
        "Python's",
        "Convert the MLflow",  # every word of it
        "The",  # English words that only another language's name lists hold
        "Server",
        "Set",  # or only one word of a longer place name (`Set Ka Lay`)
        "Boundary",  # (`Boundary County`)
    ],
)
def test_common_words_and_names_of_things_are_not_names(words: str) -> None:
    assert not name_lexicon().may_hold_name(words)


@pytest.mark.parametrize(
    "words",
    [
        "Mark Baker",  # first and last names that are English words too
        "Grant",
        "Reading",  # and places
        "Split",
        "Toronto",  # in no English word list
        "Databricks",  # unknown words may be names: NER decides
        "McDonald",
        "DiCaprio",
        "O'Brien",
        "Jean-Luc",
        "Łukasz",
        "KURZENKIRCHEN",  # a place in capitals, as addresses write them
        "USA",
        "JOHN SMITH",
        "Convert Toronto",  # one word that may be a name is enough
        "samoylova",  # in lower case, a word that is not English may be a name
    ],
)
def test_names_and_places_stay_names(words: str) -> None:
    assert name_lexicon().may_hold_name(words)
