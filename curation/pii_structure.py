"""Personal data in structured text: the key or column header is the context.

In JSON, CSV/TSV, `key = value` / `key: value` lines (config files, YAML, `.env`, headers of
e-mails and source files) and `key=value` pairs in log lines, a value's key says what it is:
a short value such as `"Jürgen Müller"` or a CSV cell has no sentence around it for NER to
read, but under `"customer_name"` or a `Nachname` column it is a name, and under `tel` or
`mobile_no` a phone number. This module finds (key, value span) pairs where the text parses
as one of those shapes, and falls back to line patterns where it does not (a JSON fragment in a
log, a truncated export). It knows nothing of Spark or Presidio; `pii_detect` turns its
candidates into findings, confirming names under ambiguous keys (`name:` in a CI file is a
step name) with NER on a short sentence built from the value.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import phonenumbers

PERSON, PERSON_IF_CONFIRMED, PHONE, ADDRESS, CONTACT = "PERSON", "PERSON?", "PHONE_NUMBER", "STREET_ADDRESS", "CONTACT"
# A key naming a thing (`product_name`, `nombre_producto`): its value is the name of no person.
THING = "THING"


@dataclass(frozen=True)
class KeyedValue:
    """A value and the key it sits under; `start`/`end` index the value in the text."""

    key: str
    start: int
    end: int


# ---------------------------------------------------------------------------------------------
# Keys. A key is split into words (`customerName`, `first-name`, `Nachname`, `E-Mail`) and
# compared accent-folded, in English, German, French, Spanish and Dutch.

# Keys that name a person whatever else the record holds.
PERSON_KEYS = frozenset(
    {
        # en
        "fullname", "full_name", "first_name", "firstname", "last_name", "lastname", "surname", "given_name",
        "givenname", "family_name", "middle_name", "author", "authors", "maintainer", "maintainers", "cardholder",
        "card_holder", "account_holder", "real_name", "legal_name", "contact_person", "signed_by", "written_by",
        "next_of_kin", "emergency_contact", "guardian", "spouse",
        # de
        "vorname", "nachname", "familienname", "geburtsname", "kundenname", "ansprechpartner", "ansprechperson",
        "kontaktperson", "inhaber", "kontoinhaber", "autor", "verfasser", "vollstandiger_name", "kunde_name",
        # fr
        "prenom", "nom", "nom_complet", "nom_de_famille", "auteur", "titulaire", "nom_du_client", "interlocuteur",
        # es
        "nombre_completo", "apellido", "apellidos", "primer_apellido", "segundo_apellido", "titular",
        "nombre_del_cliente", "nombre_y_apellidos",
        # nl
        "voornaam", "achternaam", "volledige_naam", "klantnaam", "contactpersoon", "tussenvoegsel", "eigenaar",
    }
)  # fmt: skip
NAME_WORDS = frozenset({"name", "names", "naam", "nombre", "nom", "namen"})
# Words that make `<word> name` (or `<word>Name`) a person's name: `customer_name`, `nombre cliente`.
PERSON_QUALIFIERS = frozenset(
    {
        "full", "first", "last", "given", "family", "middle", "customer", "contact", "owner", "client", "patient",
        "employee", "person", "recipient", "sender", "holder", "account", "billing", "shipping", "user", "author",
        "buyer", "seller", "tenant", "member", "student", "doctor", "driver", "passenger", "guest", "applicant",
        "kunde", "kunden", "voll", "klant", "cliente", "paciente", "empleado", "mitarbeiter", "medewerker",
        "destinataire", "expediteur", "destinatario", "remitente", "ontvanger", "afzender", "empfanger", "absender",
    }
)  # fmt: skip
# Words that make `<word> name` a form of a person's name or a handle (`display_name`).
_NAME_FORMS = frozenset({"display", "screen", "nick", "preferred", "birth", "maiden", "married", "pen", "stage"})
# Keys that hold a person in most records but not all (`name:` of a CI step, `owner: team-infra`).
MAYBE_PERSON_KEYS = frozenset(
    {
        "name", "naam", "nombre", "names", "customer", "contact", "owner", "client", "kunde", "klant", "cliente",
        "assignee", "reporter", "employee", "patient", "recipient", "sender", "manager", "buyer", "seller",
        "signer", "responsible", "user", "member", "person", "to", "from", "cc", "attendee", "speaker", "editor",
        "reviewer", "approver", "requester", "verantwortlich", "responsable", "verantwoordelijke", "empfanger",
        "destinataire", "destinatario", "ontvanger", "van", "aan", "von", "an", "de", "para", "a",
    }
)  # fmt: skip
_PHONE_WORDS = frozenset(
    {
        "tel", "phone", "phones", "telephone", "telefon", "telefono", "telefoon", "mobile", "mobil", "mobiel", "movil",
        "cell", "cellphone", "cellular", "fax", "handy", "gsm", "portable", "whatsapp", "msisdn", "fon", "landline",
        "phonenumber", "telefonnummer", "telefoonnummer", "mobilnummer", "handynummer", "faxnummer", "numero_de_telefono",
    }
)  # fmt: skip
_PHONE_PREFIXES = ("phone", "telefon", "telefoon", "telephon", "mobil", "mobiel", "cellphone")
_CONTACT_WORDS = frozenset({"email", "e_mail", "mail", "courriel", "correo", "iban", "ssn"})
# Keys whose value is a postal address (`"address": "Stollstra\\u00dfe 32, 35767 Wismar"`).
_ADDRESS_WORDS = frozenset(
    {"address", "addresses", "adresse", "anschrift", "direccion", "domicilio", "adres", "street", "strasse",
     "postal_address", "home_address", "shipping_address", "billing_address", "lieferadresse", "woonadres",
     "address_line", "address_line1", "address1", "street_address", "residence", "wohnort"}
)  # fmt: skip


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def key_words(key: str) -> list[str]:
    """`customerName` -> [customer, name]; `E-Mail` -> [e, mail]; accents folded, lower case."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key.strip().strip("\"'`[]$@"))
    return [w for w in re.split(r"[^0-9a-z]+", _fold(spaced).lower()) if w]


@functools.lru_cache(maxsize=1 << 16)  # keys repeat (`name`, `id`, `self.x`): judged once per process
def key_kind(key: str) -> str | None:
    """PERSON, PERSON? (confirm the value), PHONE_NUMBER, STREET_ADDRESS, CONTACT (an e-mail, IBAN or
    SSN key: its value is found by pattern, but the record holds a person), THING (the name of
    something else: `product_name`), or None."""
    words = key_words(key)
    if not words or len(words) > 5:
        return None
    joined = "_".join(words)
    if any(w in _PHONE_WORDS or w.startswith(_PHONE_PREFIXES) for w in words) or joined in _PHONE_WORDS:
        return PHONE
    if joined in PERSON_KEYS or joined.replace("_", "") in PERSON_KEYS:
        return PERSON
    if words[-1] in NAME_WORDS and len(words) > 1 and any(w in PERSON_QUALIFIERS for w in words[:-1]):
        return PERSON
    if words[0] in NAME_WORDS and len(words) > 1 and any(w in PERSON_QUALIFIERS for w in words[1:]):
        return PERSON  # `nombre_cliente`, `nom_client`
    if joined in MAYBE_PERSON_KEYS:
        return PERSON_IF_CONFIRMED
    if len(words) > 1 and (words[-1] in NAME_WORDS or words[0] in NAME_WORDS):
        if any(w in _NAME_FORMS for w in words):
            return PERSON_IF_CONFIRMED  # `display_name`, `nick_name`: a person's or a handle
        return THING  # `product_name`, `file_name`: no person qualifier came before
    if joined in _ADDRESS_WORDS or (words[-1] in _ADDRESS_WORDS and words[0] not in ("email", "e", "ip", "mac", "web")):
        return ADDRESS
    if joined in _CONTACT_WORDS or joined.replace("_", "") in _CONTACT_WORDS or {words[0], words[-1]} & _CONTACT_WORDS:
        return CONTACT
    return None


# ---------------------------------------------------------------------------------------------
# Values

_NAME_TOKEN = re.compile(r"[^\W\d_][^\W\d_'’.-]*(?:['’.-][^\W\d_]+)*\.?", re.UNICODE)
_PARTICLES = frozenset(
    {"van", "der", "den", "de", "del", "della", "la", "le", "los", "las", "von", "zu", "du", "des", "da", "di", "dos",
     "y", "e", "ter", "ten", "op", "bin", "al", "el", "st", "mc", "mac"}
)  # fmt: skip
_PLACEHOLDERS = frozenset(
    {"null", "none", "nil", "n/a", "na", "unknown", "test", "example", "admin", "root", "anonymous", "todo", "tbd",
     "string", "name", "your name", "true", "false", "yes", "no", "default", "system", "user", "guest", "everyone",
     "nobody", "somebody", "redacted", "undefined"}
)  # fmt: skip


def name_shaped(value: str) -> bool:
    """One to five words of letters, at least one capitalized, none lower case but particles
    (`van der`, `de la`); no digits, no `@`, no path or code characters."""
    text = value.strip()
    if not 2 <= len(text) <= 70 or text.casefold() in _PLACEHOLDERS:
        return False
    if any(c.isdigit() or c in '@/\\_#$%&*+=<>{}[]|;:!?"' for c in text):
        return False
    tokens = text.replace(",", " ").split()
    if not 1 <= len(tokens) <= 5:
        return False
    capitalized = 0
    for token in tokens:
        if not _NAME_TOKEN.fullmatch(token):
            return False
        if token[0].isupper():
            capitalized += 1
        elif token.casefold() not in _PARTICLES:
            return False
    return capitalized >= 1


def address_shaped(value: str) -> bool:
    """Two to twelve words with a number among them (house number or postcode), no e-mail or URL."""
    words = value.split()
    return 2 <= len(words) <= 12 and any(c.isdigit() for c in value) and not re.search(r"@|://", value)


def phone_shaped(value: str) -> bool:
    """7 to 15 digits (an extension besides) and nothing but phone punctuation."""
    text = value.strip().lower()
    main = re.split(r"\s*(?:x|ext\.?|extension|#)\s*(?=\d+$)", text)[0]
    if _DATE.fullmatch(main):
        return False
    return 7 <= sum(c.isdigit() for c in main) <= 15 and not re.search(r"[^\d\s().+/-]", main)


_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def phone_valid(value: str, regions: Sequence[str]) -> bool:
    """A possible phone number (extension allowed) in one of `regions`, or with a country code."""
    text = value.strip()
    if not phone_shaped(text):
        return False
    for region in regions or ("US",):
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(number):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Shapes

_QUOTED = r'"((?:[^"\\\n]|\\.){1,200})"'
_SQUOTED = r"'((?:[^'\\\n]|\\.){1,200})'"
# `"key": "value"`, `'key': 'value'`, `"key": ["a", "b"]` (JSON, Python/JS literals), anywhere.
_PAIR = re.compile(r"[\"']([^\"'\n]{1,60})[\"']\s*:\s*(?:" + _QUOTED + "|" + _SQUOTED + r"|\[([^\]\n]{1,400})\])")
_LIST_ITEM = re.compile(_QUOTED + "|" + _SQUOTED)
# `key = value`, `key: value`, `key := value`, `Key Name: value` at the start of a line, after an
# optional comment or list marker (`# Author: ...`, `- name: ...`, `export TEL=...`).
_LINE = re.compile(
    r"^[ \t]*(?:#+|//+|--|;|\*|-(?=[ \t]))?[ \t]*(?:export[ \t]+|set[ \t]+)?"
    r"([^\W\d][\w .'’-]{0,40}?)[ \t]*(?::=|=>|=|:)(?![/=])[ \t]*"
    r"(?:\"([^\"\n]*)\"|'([^'\n]*)'|([^\n]*?))[ \t]*[,;]?[ \t]*$",
    re.MULTILINE,
)
# `key=value` pairs inside a line (logs, query strings, keyword arguments): an unquoted value
# goes on over capitalized words that are not keys themselves (`user=Jane Doe action=login`).
_INLINE = re.compile(
    r"(?<![\w.-])([^\W\d][\w.-]{0,40})=(?:\"([^\"\n]{1,200})\"|'([^'\n]{1,200})'|"
    r"([^\s,;&=\"'()]+(?:[ ](?![\w.-]+=)[A-ZÀ-ÖØ-Þ][^\s,;&=\"'()]*){0,3}))"
)
_DELIMITERS = (",", "\t", ";", "|")
# Text between two delimiters too long to be in a header cell (over 40 characters from the first
# to the last that is neither a space nor a quote).
_LONG_PART = re.compile(r"[^\s\"'][^\n]{39,}[^\s\"']")


def _cells(line: str, delimiter: str) -> list[tuple[int, int]]:
    """(start, end) of each cell of a CSV line, quotes honoured (the span excludes the quotes)."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(line)
    while i <= n:
        if i < n and line[i] == '"':
            j = i + 1
            while j < n and not (line[j] == '"' and (j + 1 >= n or line[j + 1] != '"')):
                j += 2 if line[j] == '"' else 1
            spans.append((i + 1, min(j, n)))
            k = line.find(delimiter, j)
            i = n + 1 if k < 0 else k + 1
            continue
        k = line.find(delimiter, i)
        end = n if k < 0 else k
        spans.append((i, end))
        i = end + 1
        if k < 0:
            break
    return spans


def _looks_like_header(cells: list[str]) -> bool:
    if len(cells) < 2:
        return False
    return sum(1 for c in cells if key_kind(c) is not None) >= 1 and all(
        c.strip() and len(c) <= 40 and not any(ch.isdigit() for ch in c) for c in cells
    )


def _csv_values(text: str) -> Iterator[KeyedValue]:
    """Cells under a header row (CSV, TSV, semicolon- or pipe-separated), table by table."""
    lines = text.split("\n")
    offsets = []
    position = 0
    for line in lines:
        offsets.append(position)
        position += len(line) + 1
    i = 0
    while i < len(lines) - 1:
        line = lines[i].rstrip("\r")
        found = False
        for delimiter in _DELIMITERS:
            if delimiter not in line or _LONG_PART.search(line.replace(delimiter, "\n")):
                continue  # a header's cells are at most 40 characters: not a paragraph of prose
            header_spans = _cells(line, delimiter)
            header = [line[s:e].strip() for s, e in header_spans]
            if not _looks_like_header(header):
                continue
            j = i + 1
            while j < len(lines):
                row = lines[j].rstrip("\r")
                spans = _cells(row, delimiter)
                if len(spans) != len(header) or not row.strip():
                    break
                for column, (s, e) in zip(header, spans, strict=True):
                    value = row[s:e]
                    stripped = value.strip()
                    if stripped:
                        lead = len(value) - len(value.lstrip())
                        yield KeyedValue(column, offsets[j] + s + lead, offsets[j] + s + lead + len(stripped))
                j += 1
            if j > i + 1:
                i, found = j, True
                break
        if not found:
            i += 1


def keyed_values(text: str) -> list[KeyedValue]:
    """Every (key, value) the text holds in JSON, CSV/TSV, key-value lines or inline pairs."""
    out: list[KeyedValue] = []
    for m in _PAIR.finditer(text):
        if m.group(4) is not None:  # a list of strings under one key
            base = m.start(4)
            for item in _LIST_ITEM.finditer(m.group(4)):
                group = 1 if item.group(1) is not None else 2
                out.append(KeyedValue(m.group(1), base + item.start(group), base + item.end(group)))
        else:
            group = 2 if m.group(2) is not None else 3
            out.append(KeyedValue(m.group(1), m.start(group), m.end(group)))
    for m in _LINE.finditer(text):
        group = next(g for g in (2, 3, 4) if m.group(g) is not None)
        if m.end(group) > m.start(group):
            out.append(KeyedValue(m.group(1), m.start(group), m.end(group)))
    for m in _INLINE.finditer(text) if "=" in text else ():  # the scan is slow; most prose has no `=`
        group = next(g for g in (2, 3, 4) if m.group(g) is not None)
        out.append(KeyedValue(m.group(1), m.start(group), m.end(group)))
    out.extend(_csv_values(text))
    return out


@dataclass(frozen=True)
class Candidate:
    """A value its key makes a PERSON, PHONE_NUMBER or STREET_ADDRESS (`confirm` names need NER's
    agreement), or a THING: the name of something else, where NER's persons are not kept."""

    entity_type: str
    start: int
    end: int
    confirm: bool = False
    valid: bool = True  # a phone number libphonenumber accepts for one of the regions


def candidates(text: str, regions: Sequence[str]) -> list[Candidate]:
    """Names and phone numbers the keys point at. A name under an ambiguous key (`name`, `owner`)
    is taken as is when the same text also has an e-mail, phone or address key (a contact
    record), else marked for confirmation."""
    pairs = keyed_values(text)
    kinds = [key_kind(p.key) for p in pairs]
    contact_record = any(k in (PHONE, ADDRESS, CONTACT, PERSON) for k in kinds)
    out: list[Candidate] = []
    seen: set[tuple[int, int]] = set()
    for pair, kind in zip(pairs, kinds, strict=True):
        if kind is None or kind == CONTACT or (pair.start, pair.end) in seen:
            continue
        value = text[pair.start : pair.end]
        if kind == THING:
            out.append(Candidate(THING, pair.start, pair.end))
            seen.add((pair.start, pair.end))
            continue
        if kind == ADDRESS:
            if address_shaped(value):
                out.append(Candidate(ADDRESS, pair.start, pair.end))
                seen.add((pair.start, pair.end))
            continue
        if kind == PHONE:
            # What a phone field holds is a phone number even where libphonenumber knows no such
            # number (a typo, a made-up export): its shape is enough; validity raises the score.
            if phone_shaped(value):
                out.append(Candidate(PHONE, pair.start, pair.end, valid=phone_valid(value, regions)))
                seen.add((pair.start, pair.end))
            continue
        for start, end in _names_in(value):
            span = (pair.start + start, pair.start + end)
            if span in seen:
                continue
            seen.add(span)
            out.append(Candidate(PERSON, *span, confirm=kind == PERSON_IF_CONFIRMED and not contact_record))
    return out


def _names_in(value: str) -> list[tuple[int, int]]:
    """The name-shaped parts of a value: the whole of it, or each of `A, B and C`, `A; B`,
    `Jane Doe <jane@example.org>`. A JSON string with escapes (`J\u00fcrgen`) is judged decoded."""
    stripped = value.strip()
    lead = len(value) - len(value.lstrip())
    if "\\" in stripped:
        try:
            decoded = json.loads(f'"{stripped}"')
        except ValueError:
            decoded = ""
        return [(lead, lead + len(stripped))] if name_shaped(decoded) else []
    if name_shaped(stripped) and "," not in stripped:
        return [(lead, lead + len(stripped))]
    spans = []
    for m in re.finditer(r"[^,;&<>()]+", value):
        part = re.sub(r"^\s*(?:and|und|et|y|en)\s+", "", m.group(0))
        start = m.start() + m.group(0).find(part)
        inner = part.strip()
        if name_shaped(inner):
            offset = start + part.find(inner)
            spans.append((offset, offset + len(inner)))
    return spans
