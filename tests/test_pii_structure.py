"""Structure-aware PII: keys and column headers as context, European addresses, a generated set."""

from __future__ import annotations

import pytest

from benchmarks.pii_structured import evaluate, generate
from curation.pii_detect import PiiDetector, scrub
from curation.pii_structure import (
    ADDRESS,
    PERSON,
    PERSON_IF_CONFIRMED,
    PHONE,
    THING,
    key_kind,
    keyed_values,
    name_shaped,
    phone_valid,
)

REGIONS = ("US", "GB", "DE", "FR", "ES", "NL")


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector()


def _scrubbed(detector: PiiDetector, text: str) -> str:
    return scrub(text, detector.analyze([text])[0])


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("customer_name", PERSON), ("customerName", PERSON), ("Full Name", PERSON), ("first_name", PERSON),
        ("Nachname", PERSON), ("prénom", PERSON), ("apellidos", PERSON), ("achternaam", PERSON),
        ("__author__", PERSON), ("nombre_cliente", PERSON), ("name", PERSON_IF_CONFIRMED),
        ("owner", PERSON_IF_CONFIRMED), ("tel", PHONE), ("mobile_no", PHONE), ("Telefonnummer", PHONE),
        ("téléphone", PHONE), ("support-phone", PHONE), ("shipping_address", ADDRESS), ("Anschrift", ADDRESS),
        ("product_name", THING), ("hostname", None), ("file_name", THING), ("display_name", PERSON_IF_CONFIRMED), ("telemetry", None), ("hotel", None),
        ("email_address", "CONTACT"),
    ],
)  # fmt: skip
def test_keys_are_read_in_five_languages(key: str, kind: str | None) -> None:
    assert key_kind(key) == kind


def test_values_are_checked_for_their_shape() -> None:
    assert name_shaped("Jürgen Müller") and name_shaped("Jan van der Berg") and name_shaped("Karsten Wieloch-Bolnbach")
    assert not name_shaped("Install dependencies") and not name_shaped("null") and not name_shaped("v1.2")
    assert not name_shaped("billing-api") and not name_shaped("jane@example.org")
    assert phone_valid("314-370-9127x178", REGIONS)  # a US number with an extension
    assert phone_valid("030 12345678", REGIONS) and phone_valid("06 12 34 56 78", REGIONS)  # national numbers
    assert not phone_valid("2026-11-01", REGIONS) and not phone_valid("8443", REGIONS)


def test_keyed_values_keep_their_offsets_in_every_shape() -> None:
    text = (
        '{"customer_name": "J\\u00fcrgen M\\u00fcller", "authors": ["Ann Lee", "Bo Chan"]}\n'
        "# Maintainer: Ruth Baker\n"
        "tel = 030 12345678\n"
        "2026-11-01 INFO login user=Ryan Gallagher action=update\n"
        "Vorname;Nachname;Telefon\n"
        'Karsten;"Wieloch-Bolnbach";06834 49786\n'
    )
    pairs = {(p.key, text[p.start : p.end]) for p in keyed_values(text)}
    assert {
        ("customer_name", "J\\u00fcrgen M\\u00fcller"), ("authors", "Ann Lee"), ("authors", "Bo Chan"),
        ("Maintainer", "Ruth Baker"), ("tel", "030 12345678"), ("user", "Ryan Gallagher"), ("Vorname", "Karsten"),
        ("Nachname", "Wieloch-Bolnbach"), ("Telefon", "06834 49786"),
    } <= pairs  # fmt: skip


def test_a_header_is_found_only_where_its_cells_are_short() -> None:
    """A header row's cells are at most 40 characters; prose with commas is not read as a table
    (the shortcut that skips parsing such lines must not skip a real header)."""
    padded = 'name ,  "  email  "  ,phone\nAda Lovelace, ada@example.org, 020 7946 0000\n'
    assert {(p.key, padded[p.start : p.end]) for p in keyed_values(padded)} >= {("name", "Ada Lovelace")}
    prose = (
        "Returns the frame sorted by the given columns, in ascending order unless told otherwise,\n"
        "and the rows that tie keep the order they had before, as a stable sort would keep them.\n"
    )
    assert keyed_values(prose) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"id": 7, "customer_name": "J\\u00fcrgen M\\u00fcller", "phone": "06834 49786"}',
         '{"id": 7, "customer_name": "<PERSON>", "phone": "<PHONE_NUMBER>"}'),
        ("name,email,phone\nMatthijs Dekker,md@example.org,0177-763170\n",
         "name,email,phone\n<PERSON>,<EMAIL_ADDRESS>,<PHONE_NUMBER>\n"),
        ("[contact]\nowner = Virginie Delattre\ntel = 03 87 17 77 63\n",
         "[contact]\nowner = <PERSON>\ntel = <PHONE_NUMBER>\n"),
        ("support_phone: 314-370-9127x178\n", "support_phone: <PHONE_NUMBER>\n"),
        ('__author__ = "Ruth Baker"\n', '__author__ = "<PERSON>"\n'),
        ("Sie wohnt in der Konrad-Adenauer-Straße 4219, 73600 Roth.", "Sie wohnt in der <STREET_ADDRESS>."),
        ("Envoyez-le au 2, chemin du Moulin, 97132 Saint-Pierre.", "Envoyez-le au <STREET_ADDRESS>."),
        ("Ship to Flat 7, Ben Pike, Middletontown, BH49 2GW please", "Ship to <STREET_ADDRESS> please"),
        ("Het adres is Kerkstraat 12, 1012 AB Amsterdam.", "Het adres is <STREET_ADDRESS>."),
        ("La dirección es Calle Mayor 12, 28013 Madrid.", "La dirección es <STREET_ADDRESS>."),
    ],
)  # fmt: skip
def test_structured_values_are_scrubbed(detector: PiiDetector, text: str, expected: str) -> None:
    assert _scrubbed(detector, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "jobs:\n  test:\n    steps:\n      - name: Install dependencies\n      - name: Setup Python\n",
        "product_name = Widget Pro\nhostname: Build Server\nport = 8443\n",
        "[server]\nhost = 127.0.0.1\nbind = 0.0.0.0\nworkers = 4\n",
        "date,region,units\n2026-10-01,north,12\n",
        "In 2019, 12345 people came to the fair for Version 3, 2021 Release.",
    ],
)
def test_structured_text_without_personal_data_is_left_alone(detector: PiiDetector, text: str) -> None:
    assert _scrubbed(detector, text) == text


def test_the_generated_set_meets_the_recall_goals(detector: PiiDetector) -> None:
    records = generate(700, seed=11)
    assert {r.shape for r in records} == {"prose", "chat", "log", "json", "csv", "config", "code"}
    assert len({r.locale for r in records}) >= 5 and any(r.control for r in records)
    assert generate(20, seed=11)[5].text == records[5].text  # a generator plus a seed: the same records
    found = detector.analyze([r.text for r in records])
    result = evaluate(records, [scrub(r.text, f) for r, f in zip(records, found, strict=True)])
    by_type = {k: v["removed"] for k, v in result["by_type"].items()}
    assert by_type["PERSON"] >= 0.90 and by_type["ADDRESS"] >= 0.95, result
    assert all(by_type[t] >= 0.99 for t in ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS"))
    assert result["controls_untouched"] >= 0.98, result
