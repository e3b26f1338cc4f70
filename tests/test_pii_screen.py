"""The PII stage's screens: each skips a recognizer only where it cannot find anything."""

from __future__ import annotations

import re

import pytest
from test_pii import CONTROLS, PRIVATE_KEY, SHAPES

from benchmarks.pii_structured import generate
from curation.name_lexicon import name_lexicon
from curation.pii_detect import (
    IDENTIFIER_ENTITIES,
    KEYWORD_ASSIGNMENT,
    PASSWORD_IN_URL,
    PRIVATE_KEY_BLOCK,
    DetectorSettings,
    PiiDetector,
    _detect_secrets_patterns,
)
from curation.pii_screen import (
    ANY_DIGIT,
    LiteralScreen,
    name_lines,
    name_sentences,
    required_literals,
    required_runs,
    triggered,
)

# Tokens in the formats detect-secrets knows (made up; the shapes are real).
TOKENS = (
    "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
    'aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # aws secret key',
    "token: ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "GITLAB=glpat-abcdefghij0123456789",
    "SLACK=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "stripe: sk_live_" + "a1b2c3d4e5f6g7h8i9j0k1l2",
    "SENDGRID=SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ",
    "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "mailchimp 0123456789abcdef0123456789abcdef-us12",
    "twilio AC0123456789abcdef0123456789abcdef",
    "//registry.npmjs.org/:_authToken=npm_abcdefghijklmnopqrstuvwxyz0123456789",
    "cloudant_password='" + "a" * 24 + "'",
    "IBM_CLOUD_IAM_KEY = " + "A1b2C3d4E5" * 4 + "abcd",
    "url = postgres://app:hunter2-Correct-Horse@db.internal:5432/prod",
    'db_password = "hunter2-Correct-Horse"',
    PRIVATE_KEY,
)


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Personal data and controls in every shape the stage meets, several languages."""
    return [r.text for r in generate(400, seed=5)] + list(SHAPES.values()) + list(CONTROLS) + list(TOKENS)


def test_required_literals_are_read_from_the_pattern() -> None:
    assert required_literals(re.compile(r"AKIA[0-9A-Z]{16}")) == ((frozenset({"AKIA"}), False),)
    assert (frozenset({"password"}), True) in required_literals(re.compile(r"(?i)password\s*=\s*\S+"))
    assert required_literals(re.compile(r"(?:glpat|glrt)-\w+"))[0][0] <= {"gl", "pat", "rt", "-"} | {"glpat", "glrt"}
    assert required_literals(re.compile(r"(?:foo)?bar")) == ((frozenset({"bar"}), False),)  # optional: not required
    assert required_literals(re.compile(r"[a-z]+\d*")) == ()  # nothing to screen on: always run


def test_a_secret_pattern_is_skipped_only_where_it_cannot_match(texts: list[str]) -> None:
    patterns = (*_detect_secrets_patterns(), PRIVATE_KEY_BLOCK, PASSWORD_IN_URL, KEYWORD_ASSIGNMENT)
    screen = LiteralScreen(patterns)
    matched = 0
    for text in [*texts, *(t.upper() for t in TOKENS), *(t.swapcase() for t in TOKENS)]:
        kept = set(screen.candidates(text))
        for pattern in patterns:
            if pattern.search(text):
                matched += 1
                assert pattern in kept, f"{pattern.pattern!r} matches {text!r} but was screened out"
    assert matched >= len(TOKENS)
    assert len(list(screen.candidates(CONTROLS[0]))) < len(patterns) / 3  # prose runs few of them


def test_a_presidio_recognizer_is_skipped_only_where_it_finds_nothing(detector: PiiDetector, texts: list[str]) -> None:
    found = 0
    for text in texts:
        for recognizer in detector._pattern_recognizers:
            if recognizer.analyze(text, detector._presidio_entities, None):
                found += 1
                assert triggered(recognizer.name, text), f"{recognizer.name} finds something in {text!r}"
    assert found >= 300


def test_presidio_results_are_what_its_analyzer_engine_returns(detector: PiiDetector, texts: list[str]) -> None:
    """The direct calls (triggers, context words only where something was found, artifacts from
    the doc's arrays) against `AnalyzerEngine.analyze` over the same recognizers, given the
    artifacts Presidio builds from the spaCy doc's tokens."""
    from presidio_analyzer.nlp_engine import NlpArtifacts

    for text in texts:
        ours = detector._presidio_results(text, [])
        doc = detector._tokenizer(text)  # type: ignore[misc]
        artifacts = NlpArtifacts(
            entities=[],
            tokens=doc,
            tokens_indices=[t.idx for t in doc],
            lemmas=[t.lower_ for t in doc],
            nlp_engine=detector.analyzer.nlp_engine,
            language="en",
        )
        ours_artifacts = detector._tokens_only(text)
        assert list(ours_artifacts.keywords) == artifacts.keywords  # type: ignore[attr-defined]
        assert ours_artifacts.tokens == [t.text for t in doc]  # type: ignore[attr-defined]
        theirs = detector.analyzer.analyze(
            text,
            language="en",
            entities=[e for e in detector._presidio_entities if e not in ("PERSON", "LOCATION")],
            nlp_artifacts=artifacts,
            score_threshold=0.0,
        )
        key = lambda r: (r.entity_type, r.start, r.end, round(r.score, 6))  # noqa: E731
        assert sorted(map(key, ours)) == sorted(map(key, theirs)), text


def test_name_lines_are_where_a_capitalized_word_is_more_than_a_sentence_opening() -> None:
    text = "The cat sat on the mat.\nwe met Margaret Thatcher there\nThis is fine. It was.\nParis is lovely\n"
    lines = [text[s:e] for s, e in name_lines(text)]
    assert lines == ["we met Margaret Thatcher there", "Paris is lovely"]
    assert name_lines("x = None if flag is True else False\nI think so.") == []
    assert name_lines("Łukasz went home") and name_lines("ship it to the USA") and not name_lines("DataFrame.apply")


def test_name_lines_with_the_lexicon_skip_lines_of_common_words() -> None:
    text = "Returns the Python object.\nConvert it to JSON with NumPy\nAsk Mark Baker in Reading\n"
    assert [text[s:e] for s, e in name_lines(text, name_lexicon())] == ["Ask Mark Baker in Reading"]
    assert len(name_lines(text)) == 3  # without it, every capitalized word qualifies a line


def test_name_sentences_keep_a_paragraph_s_name_sentences_and_cut_no_name() -> None:
    text = (
        "Returns the frame. It was written by J. R. R. Tolkien in St. Louis. The value is cached. "
        "Ask Dr. Smith! Then Mark Baker came.\nNothing to see here.\nLena Wirth\nAddress: Paris"
    )
    spans = [text[s:e] for s, e in name_sentences(text, name_lexicon())]
    # neighbouring sentences on a line stay one span; lines never join
    assert spans == [
        "It was written by J. R. R. Tolkien in St. Louis.",
        "Ask Dr. Smith! Then Mark Baker came.",
        "Lena Wirth",
        "Address: Paris",
    ]
    assert name_sentences("Returns the frame. Use NumPy here.", name_lexicon()) == []


def test_name_sentences_cut_to_the_words_around_a_name() -> None:
    """With `context_words`, NER reads a few words either side of what may be a name, within
    its sentence; a sentence's far end, beyond the model's features, is left out."""
    text = (
        "The returned frame keeps every column of the input and the index that was computed by the "
        "optimizer during the first pass, as Ada Lovelace described in her notes on the engine.\nLena Wirth"
    )
    spans = [text[s:e] for s, e in name_sentences(text, name_lexicon(), context_words=3)]
    assert spans == ["first pass, as Ada Lovelace described in her", "Lena Wirth"]
    whole = [text[s:e] for s, e in name_sentences(text, name_lexicon())]
    assert whole[0].startswith("The returned frame") and whole[0].endswith("engine.")


def test_screening_names_changes_no_identifier_and_keeps_names_found(detector: PiiDetector, texts: list[str]) -> None:
    unscreened = PiiDetector(DetectorSettings(ner_screen=False))
    for text, screened, full in zip(texts, detector.analyze(texts), unscreened.analyze(texts), strict=True):
        ids = lambda found: sorted(
            (f.entity_type, f.start, f.end) for f in found if f.entity_type in IDENTIFIER_ENTITIES
        )  # noqa: E731
        assert ids(screened) == ids(full), text
    names = detector.analyze(["Yesterday Margaret Thatcher flew from London to Paris with her assistant."])[0]
    assert {f.value for f in names if f.entity_type == "PERSON"} == {"Margaret Thatcher"}


def test_required_runs_are_read_from_the_pattern() -> None:
    assert [r.pattern for r in required_runs(re.compile(r"AKIA[0-9A-Z]{16}"))] == ["[0-9A-Z]{16}"]
    assert [r.pattern for r in required_runs(re.compile(r"(?i)key\s*=\s*([a-z0-9]{64})"))] == ["[a-z0-9]{64}"]
    assert required_runs(re.compile(r"(?:x[a-f]{20})?y")) == ()  # optional: not required
    assert required_runs(re.compile(r"AKC[a-zA-Z0-9]{10,}")) == ()  # too short to be worth a scan
    (run,) = required_runs(re.compile(r"(?i)tok_[a-z]{16}"))
    assert run.search("TOK_ABCDEFGHIJKLMNOP")  # the pattern's case rule is kept


def test_a_keyed_token_pattern_is_skipped_on_prose_that_holds_its_keywords() -> None:
    """detect-secrets' `cloudant_password = <24 letters>` needs `cl` and `pass`, which prose often
    holds; without a 24-letter run it cannot match."""
    patterns = tuple(p for p in _detect_secrets_patterns() if "cloudant|cl|clou" in p.pattern)
    screen = LiteralScreen(patterns)
    prose = "The class reads the password from the keyring: pass it in, and close the session after."
    assert list(screen.candidates(prose)) == []
    assert list(screen.candidates("cloudant_password='" + "a" * 24 + "'"))


def test_digit_triggers_are_skipped_without_a_digit() -> None:
    assert not triggered("CreditCardRecognizer", "no digits here", has_digit=False)
    assert triggered("StreetAddressRecognizer", "at the corner of Main and Elm", has_digit=False)
    assert triggered("StreetAddressRecognizer", "CORNER OF Main", has_digit=False)
    assert triggered("StreetAddressRecognizer", "12 Main Street", has_digit=True)
    assert not triggered("StreetAddressRecognizer", "v12.5", has_digit=True)
    for text in ("fe80::1ff:fe23:4567:890a", "fe80::", "a::b", "ab:cd:ef::", "time: noon", "key:value"):
        has_digit = ANY_DIGIT.search(text) is not None
        assert triggered("IpRecognizer", text, has_digit) == triggered("IpRecognizer", text), text


def test_a_recognizer_skipped_for_want_of_a_digit_finds_nothing(detector: PiiDetector, texts: list[str]) -> None:
    """The shortcut for texts without a digit, on those texts with their digits taken out."""
    for text in [re.sub(r"\d", "", t) for t in texts]:
        for recognizer in detector._pattern_recognizers:
            if recognizer.analyze(text, detector._presidio_entities, None):
                assert triggered(recognizer.name, text, has_digit=False), (
                    f"{recognizer.name} finds something in {text!r}"
                )
