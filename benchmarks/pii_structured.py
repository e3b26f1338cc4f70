"""PII recall where text is structured: a generated evaluation set in six locales and seven shapes.

The set is a generator plus a seed, not a frozen file: Faker (pinned in the `dev` extra, so a
seed gives the same records on every machine) makes people, phone numbers, addresses and
identifiers in en_US, en_GB, de_DE, fr_FR, es_ES and nl_NL, and each record plants some of them
in one of seven shapes: prose (English and the locale's own language), chat, log lines, JSON,
CSV, config files and source code. A tenth of the records are controls with no personal data.

A planted value counts as removed when none of its clear-text parts is left in the scrubbed
text (a name: the whole name and the surname; an address: its street line and its postcode
line; anything else: the value). A control counts as untouched when scrubbing changes nothing.
Reported per type and per shape, for millpond's detector and, on the same records, Presidio's
default `AnalyzerEngine` (all predefined recognizers, the same spaCy model, threshold 0.4).

    python -m benchmarks pii-structured --records 2000 --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "nl_NL")
SHAPES = ("prose", "chat", "log", "json", "csv", "config", "code")
TYPES = ("PERSON", "PHONE_NUMBER", "EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "ADDRESS")
CONTROL_SHARE = 0.1


@dataclass
class Planted:
    entity_type: str
    value: str
    parts: tuple[str, ...]  # what must not be left in clear text


@dataclass
class Record:
    text: str
    shape: str
    locale: str
    planted: list[Planted] = field(default_factory=list)

    @property
    def control(self) -> bool:
        return not self.planted


class _People:
    """One locale's Faker, handing out people with the values planted about them."""

    def __init__(self, locale: str, seed: int) -> None:
        from faker import Faker

        self.locale = locale
        self.fake = Faker(locale)
        self.fake.seed_instance(seed)

    def person(self) -> dict[str, Any]:
        f = self.fake
        first, last = f.first_name(), f.last_name()
        street, _, rest = f.address().partition("\n")
        rest = rest.replace("\n", ", ")
        person = {
            "first": first,
            "last": last,
            "name": f"{first} {last}",
            "phone": f.phone_number(),
            "email": f.email(),
            "street": street.strip(),
            "city_line": rest.strip(),
            "card": f.credit_card_number(),
            "iban": f.iban(),
            "ip": f.ipv4_public(),
            "ssn": f.ssn() if self.locale == "en_US" else None,
            "company": f.company(),
            "word": f.word(),
        }
        return person


def _name(p: dict[str, Any]) -> Planted:
    return Planted("PERSON", p["name"], (p["name"], p["last"]))


def _plant(kind: str, p: dict[str, Any]) -> Planted:
    if kind == "PERSON":
        return _name(p)
    if kind == "ADDRESS":
        return Planted("ADDRESS", f"{p['street']}, {p['city_line']}", (p["street"], p["city_line"]))
    value = {"PHONE_NUMBER": p["phone"], "EMAIL_ADDRESS": p["email"], "CREDIT_CARD": p["card"],
             "IBAN_CODE": p["iban"], "IP_ADDRESS": p["ip"], "US_SSN": p["ssn"]}[kind]  # fmt: skip
    return Planted(kind, value, (value,))


PROSE_EN = (
    "Yesterday {name} called from {phone} to ask whether the order shipped to {address} had arrived.",
    "Please send the contract to {name} ({email}); the invoice goes to {address}.",
    "{name} paid with card {card} and asked for a refund to IBAN {iban}.",
    "The account of {name} was opened from {ip}; the SSN on file is {ssn}.",
    "Our new tenant, {name}, moved into {address} last week and can be reached at {phone}.",
)
PROSE_LOCAL = {
    "de_DE": "Bitte rufen Sie {name} unter {phone} an; die Lieferadresse ist {address}.",
    "fr_FR": "Merci de contacter {name} au {phone} ; l'adresse de livraison est {address}.",
    "es_ES": "Por favor, llame a {name} al {phone}; la dirección de entrega es {address}.",
    "nl_NL": "Bel {name} op {phone}; het afleveradres is {address}.",
}
CHAT = (
    "user: hi, I'm {name}, my number is {phone}\nassistant: Thanks! How can I help?\nuser: please update my email to {email}",
    "user: can you ship it to {address}?\nassistant: Sure. Who should sign for it?\nuser: {name}",
    "user: my card {card} was charged twice\nassistant: Sorry about that, I'll check.\nuser: refund to {iban} please, thanks, {first}",
)
CONTROLS = {
    "prose": "The mill pond froze early this year; the {word} committee met on Tuesday to discuss the budget.",
    "chat": "user: how do I reset the {word} setting?\nassistant: Open the settings page and press the reset button.",
    "log": "2026-11-02 10:15:00 INFO job={word} status=ok duration_ms=5123 rows=90210",
    "json": '{{"sku": "A-{n}", "product_name": "Widget {n}", "price": 19.99, "in_stock": true}}',
    "csv": "date,region,units,revenue\n2026-10-01,north,{n},1234.50\n2026-10-02,south,88,990.00\n",
    "config": "[server]\nhost = 127.0.0.1\nport = 8{n}\nworkers = 4\nname: Build and test\n",
    "code": "def total(items):\n    # sum the {word} prices\n    return sum(i.price for i in items)\n",
}


def _fill(template: str, p: dict[str, Any], kinds: dict[str, str]) -> tuple[str, list[Planted]]:
    """`template` with the person's values; the planted ones for each `{field}` used."""
    values = {"name": p["name"], "first": p["first"], "phone": p["phone"], "email": p["email"],
              "address": f"{p['street']}, {p['city_line']}", "card": p["card"], "iban": p["iban"],
              "ip": p["ip"], "ssn": p["ssn"]}  # fmt: skip
    planted = [_plant(kind, p) for key, kind in kinds.items() if "{" + key + "}" in template]
    return template.format(**values), planted


FIELDS = {"name": "PERSON", "phone": "PHONE_NUMBER", "email": "EMAIL_ADDRESS", "address": "ADDRESS",
          "card": "CREDIT_CARD", "iban": "IBAN_CODE", "ip": "IP_ADDRESS", "ssn": "US_SSN"}  # fmt: skip


def _record(shape: str, people: _People, rng: random.Random) -> Record:
    p = people.person()
    locale = people.locale
    if shape == "prose":
        if locale in PROSE_LOCAL and rng.random() < 0.4:
            template = PROSE_LOCAL[locale]
        else:  # social security numbers are planted for en_US only
            template = rng.choice([t for t in PROSE_EN if p["ssn"] or "{ssn}" not in t])
        text, planted = _fill(template, p, FIELDS)
        return Record(text, shape, locale, planted)
    if shape == "chat":
        text, planted = _fill(rng.choice(CHAT), p, FIELDS)
        return Record(text, shape, locale, planted)
    if shape == "log":
        q = people.person()
        text = (
            f"2026-11-02 10:15:{rng.randint(10, 59)} INFO login ok user={p['email']} ip={p['ip']}\n"
            f'2026-11-02 10:16:02 WARN profile update name="{q["name"]}" phone={q["phone"]}\n'
        )
        return Record(text, shape, locale, [_plant("EMAIL_ADDRESS", p), _plant("IP_ADDRESS", p),
                                            _name(q), _plant("PHONE_NUMBER", q)])  # fmt: skip
    if shape == "json":
        keys = rng.choice(
            [("customer_name", "phone", "email"), ("name", "telephone", "e-mail"), ("full_name", "mobile", "mail"),
             ("contact", "tel", "email_address")]
        )  # fmt: skip
        obj = {"id": rng.randint(1, 99999), keys[0]: p["name"], keys[1]: p["phone"], keys[2]: p["email"],
               "address": f"{p['street']}, {p['city_line']}", "iban": p["iban"], "plan": "premium"}  # fmt: skip
        planted = [_name(p), _plant("PHONE_NUMBER", p), _plant("EMAIL_ADDRESS", p), _plant("ADDRESS", p),
                   _plant("IBAN_CODE", p)]  # fmt: skip
        if p["ssn"]:
            obj["ssn"] = p["ssn"]
            planted.append(_plant("US_SSN", p))
        if rng.random() < 0.3:
            obj["card"] = p["card"]
            planted.append(_plant("CREDIT_CARD", p))
        text = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
        return Record(text, shape, locale, planted)
    if shape == "csv":
        header = rng.choice(
            [("name", "email", "phone"), ("Name", "E-Mail", "Telefon"), ("nom", "courriel", "téléphone"),
             ("nombre", "correo", "teléfono"), ("naam", "e-mail", "telefoon"), ("first_name", "last_name", "phone")]
        )  # fmt: skip
        delimiter = rng.choice([",", ";", "\t"])
        rows = [people.person() for _ in range(3)]
        lines = [delimiter.join(header)]
        planted = []
        for r in rows:
            if header[0] == "first_name":
                lines.append(delimiter.join([r["first"], r["last"], r["phone"]]))
                planted += [Planted("PERSON", r["name"], (r["first"], r["last"])), _plant("PHONE_NUMBER", r)]
            else:
                lines.append(delimiter.join([r["name"], r["email"], r["phone"]]))
                planted += [_name(r), _plant("EMAIL_ADDRESS", r), _plant("PHONE_NUMBER", r)]
        return Record("\n".join(lines) + "\n", shape, locale, planted)
    if shape == "config":
        key = rng.choice(["owner", "contact_name", "maintainer", "ansprechpartner", "responsable", "contactpersoon"])
        phone_key = rng.choice(["tel", "phone", "mobile_no", "telefon", "fax", "support_phone"])
        sep = rng.choice([" = ", ": "])
        text = (f"[service]\nname{sep}billing-api\nport{sep}8443\n{key}{sep}{p['name']}\n{phone_key}{sep}{p['phone']}\n"
                f"notify{sep}{p['email']}\n")  # fmt: skip
        return Record(text, shape, locale, [_name(p), _plant("PHONE_NUMBER", p), _plant("EMAIL_ADDRESS", p)])
    # code
    form = rng.randrange(3)
    if form == 0:
        text = (f'__author__ = "{p["name"]}"\n__email__ = "{p["email"]}"\n\n\ndef area(r):\n'
                f"    return 3.14159 * r * r\n")  # fmt: skip
        planted = [_name(p), _plant("EMAIL_ADDRESS", p)]
    elif form == 1:
        text = (f'Customer(name="{p["name"]}", phone="{p["phone"]}", active=True)\n'
                f"assert customer.id > 0\n")  # fmt: skip
        planted = [_name(p), _plant("PHONE_NUMBER", p)]
    else:
        text = f"// Maintainer: {p['name']} <{p['email']}>\nfunction add(a, b) {{\n  return a + b;\n}}\n"
        planted = [_name(p), _plant("EMAIL_ADDRESS", p)]
    return Record(text, shape, locale, planted)


def generate(records: int, seed: int) -> list[Record]:
    """`records` records, the same for the same seed (and the pinned Faker)."""
    rng = random.Random(seed)
    people = {locale: _People(locale, seed * 100 + i) for i, locale in enumerate(LOCALES)}
    out = []
    for i in range(records):
        shape = SHAPES[i % len(SHAPES)]
        locale = LOCALES[(i // len(SHAPES)) % len(LOCALES)]
        if rng.random() < CONTROL_SHARE:
            text = CONTROLS[shape].format(word=people[locale].fake.word(), n=rng.randint(10, 99))
            out.append(Record(text, shape, locale))
        else:
            out.append(_record(shape, people[locale], rng))
    return out


def removed(planted: Planted, scrubbed: str) -> bool:
    return all(part not in scrubbed for part in planted.parts if part)


def evaluate(records: list[Record], scrubbed: list[str]) -> dict[str, Any]:
    """Share removed per type and per shape, and the share of controls left untouched."""
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_shape: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    controls = [0, 0]
    for record, out in zip(records, scrubbed, strict=True):
        if record.control:
            controls[0] += out == record.text
            controls[1] += 1
            continue
        for planted in record.planted:
            hit = removed(planted, out)
            for table, key in ((by_type, planted.entity_type), (by_shape, record.shape)):
                table[key][0] += hit
                table[key][1] += 1

    def share(pair: list[int]) -> float | None:
        return round(pair[0] / pair[1], 3) if pair[1] else None

    return {
        "by_type": {k: {"removed": share(v), "planted": v[1]} for k, v in sorted(by_type.items())},
        "by_shape": {k: {"removed": share(v), "planted": v[1]} for k, v in sorted(by_shape.items())},
        "controls_untouched": share(controls),
        "controls": controls[1],
    }


def scrub_with(engine: Any, texts: list[str]) -> list[str]:
    from curation.pii_detect import Finding, scrub

    results = engine(texts)
    return [scrub(t, [Finding(e, s, x, 1.0, "") for e, s, x in spans]) for t, spans in zip(texts, results, strict=True)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pii-structured", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-presidio", action="store_true", help="Skip Presidio's default engine.")
    args = parser.parse_args(argv)

    from benchmarks.pii import presidio_default
    from curation.pii_detect import DetectorSettings, PiiDetector
    from curation.pii_structure import candidates

    records = generate(args.records, args.seed)
    texts = [r.text for r in records]
    out: dict[str, Any] = {"records": len(records), "seed": args.seed, "date": datetime.now(UTC).isoformat()}
    engines: dict[str, Any] = {}
    for label, settings in (
        ("millpond", DetectorSettings()),
        ("millpond, no keys", DetectorSettings(structured=False)),
    ):
        detector = PiiDetector(settings)
        engines[label] = lambda ts, d=detector: [[(f.entity_type, f.start, f.end) for f in fs] for fs in d.analyze(ts)]
    if not args.no_presidio:
        default = presidio_default(DetectorSettings().spacy_model)
        engines["Presidio default"] = lambda ts: [
            [(r.entity_type, r.start, r.end) for r in default.analyze(t, language="en", score_threshold=0.4)]
            for t in ts
        ]
    # What the structure-aware pass costs beside the NER pass over the same records.
    settings = DetectorSettings()
    started = time.monotonic()
    for text in texts:
        candidates(text, settings.phone_regions)
    out["structure_pass_s"] = round(time.monotonic() - started, 3)
    nlp = PiiDetector(settings)._nlp
    started = time.monotonic()
    for _ in nlp.pipe(texts, batch_size=32):
        pass
    out["ner_pass_s"] = round(time.monotonic() - started, 3)
    print(f"structure pass {out['structure_pass_s']} s, NER pass {out['ner_pass_s']} s over {len(texts)} records")
    for label, engine in engines.items():
        started = time.monotonic()
        scrubbed = scrub_with(engine, texts)
        seconds = time.monotonic() - started
        out[label] = evaluate(records, scrubbed) | {"seconds": round(seconds, 2),
                                                    "records_per_s": round(len(texts) / seconds, 1)}  # fmt: skip
        print(label, json.dumps(out[label], indent=1))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "pii_structured.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
