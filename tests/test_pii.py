"""The pii stage: what it finds and scrubs in many text shapes, the keyed index, and no clear text left."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from curation_data import prose

from conftest import make_config, write_jsonl, write_manifest
from curation.pii import PiiParams, pii_key
from curation.pii_detect import (
    DetectorSettings,
    PiiDetector,
    resolve_overlaps,
    runs_on_torch,
    scrub,
    subject_key,
    value_hmac,
)
from jobs.cli import cli
from jobs.curate import run_curate
from jobs.ingest import run_ingest
from lineage.catalog import BRONZE_DOCUMENTS, SILVER_DOCUMENTS, SILVER_PII_INDEX, TABLES
from lineage.tables import read_table

KEY = b"millpond-test-key-0123456789abcdef"

EMAIL = "Jane.Doe@Example.com"
PHONE = "+1 646 555 0199"
CARD = "4111 1111 1111 1111"
IBAN = "GB82 WEST 1234 5698 7654 32"
IP = "192.168.10.27"
SSN = "536-90-4399"
AWS = "AKIAIOSFODNN7EXAMPLE"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
DB_PASSWORD = "hunter2-Correct-Horse"
INTERNAL = "ops@build.internal"  # no public suffix: Presidio's own recognizer skips it

# The same values in the shapes a training corpus has them in.
SHAPES = {
    "prose": f"Please write to {EMAIL} or call {PHONE} before Friday; my card is {CARD}.",
    "chat": f"User: my iban is {IBAN}, can you check it?\nAssistant: I cannot see accounts. Call {PHONE}.",
    "log": f"2026-11-02T10:15:01Z INFO login ok user={EMAIL} ip={IP} ssn_check={SSN} took 12ms",
    "json": json.dumps({"name": "x", "email": EMAIL, "phone": PHONE, "ip": IP}),
    "csv": f"id,email,phone,ssn\n17,{EMAIL},{PHONE},{SSN}\n",
    "config": f"[database]\nurl = postgres://app:{DB_PASSWORD}@db.internal:5432/prod\naws_access_key_id = {AWS}\n",
    "code": f'import os\n\nGITHUB_TOKEN = "{GITHUB}"\nADMIN = "{EMAIL}"  # or {INTERNAL}\nSERVER = "{IP}"\n',
}
VALUES = (EMAIL, PHONE, CARD, IBAN, IP, SSN, AWS, GITHUB, DB_PASSWORD, INTERNAL)
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aumCKOI9dTYKDtrQyPqKRNUVFR\n"
    "3dT4KRgI2x3JgvzZtPzBXB3MmoDlDhy6T2w8jvb4BQz0kVWc1ZQh4nOaLpAz8a1u\n-----END RSA PRIVATE KEY-----"
)
# Text without personal data, which must come back unchanged.
CONTROLS = (
    prose(3),
    "def add(a: int, b: int) -> int:\n    return a + b\n\n\nprint(add(2, 40))\n",
    "Released 2024-05-01: version 3.11.4 fixes 12 bugs, see the changelog for 3.11.3 and 3.10.14.",
    "| year | sales |\n|------|-------|\n| 2023 | 1,204 |\n| 2024 | 1,876 |\n",
    'password = os.environ["DB_PASSWORD"]\ntoken = get_token()\napi_key = None\n',
    # shapes in source code that a case-blind or decimal-blind pattern takes for addresses, IPs and cards
    "weights = [0.589399999999998, -4.84899999999999, 9.637]\nodd = parts[1::2]  # the python2/3 way\n"
    "if unit == 1:\n    pass\ntoken_normalize_func: t.Optional[t.Callable[[str], str]] = None\n",
    "Classifier: Framework :: IPython\nClassifier: Programming Language :: Python :: 3.12\n",
)


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_known_values_are_scrubbed_in_every_shape(detector: PiiDetector, shape: str) -> None:
    text = SHAPES[shape]
    scrubbed = scrub(text, detector.analyze([text])[0])
    for value in VALUES:
        assert value not in scrubbed, f"{value!r} left in the {shape} text: {scrubbed!r}"
    assert "<" in scrubbed and ">" in scrubbed
    assert scrubbed.count("<EMAIL_ADDRESS>") == text.count(EMAIL) + text.count(INTERNAL)


def test_secrets_and_key_blocks_are_found(detector: PiiDetector) -> None:
    text = f"deploy notes\n{PRIVATE_KEY}\nslack: xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx\n"
    found = detector.analyze([text])[0]
    assert {f.entity_type for f in found} == {"SECRET"}
    scrubbed = scrub(text, found)
    assert "MIIEpAIBAAKCAQEA" not in scrubbed and "xoxb-" not in scrubbed
    assert scrubbed.startswith("deploy notes\n<SECRET>\n")


def test_text_without_personal_data_is_left_alone(detector: PiiDetector) -> None:
    for text, found in zip(CONTROLS, detector.analyze(list(CONTROLS)), strict=True):
        assert found == [], f"{text!r}: {[(f.entity_type, f.value) for f in found]}"


def test_names_and_places_are_found_with_the_spacy_model(detector: PiiDetector) -> None:
    text = "Yesterday Margaret Thatcher flew from London to Paris with her assistant."
    types = {f.entity_type: f.value for f in detector.analyze([text])[0]}
    assert types.get("PERSON") == "Margaret Thatcher"
    assert types.get("LOCATION") in ("London", "Paris")


def test_ner_through_numpy_finds_what_it_finds_through_blis(detector: PiiDetector) -> None:
    """The NER model's matrix products run in numpy (blis's generic kernel is 3x slower on CPUs
    its wheel does not know); the entities must not change with the library."""
    from thinc.api import NumpyOps

    model = detector._nlp.get_pipe("ner").model  # type: ignore[attr-defined]
    assert not model.ops.use_blis
    texts = [*SHAPES.values(), *CONTROLS, "Yesterday Margaret Thatcher flew from London to Paris with Tony Blair."]
    through_numpy = detector.analyze(texts)
    for node in model.walk():
        node.ops = NumpyOps(use_blis=True)
    try:
        assert detector.analyze(texts) == through_numpy
    finally:
        for node in model.walk():
            node.ops = NumpyOps(use_blis=False)


def test_python_literals_in_docstrings_are_not_persons(detector: PiiDetector) -> None:
    """The small model reads `False` in a docstring as a person; scrubbing it would change the
    meaning of the documentation a corpus keeps."""
    docstring = "If False, only Polars classes are registered with the SQL engine."
    assert detector.analyze([docstring]) == [[]]
    found = detector.analyze([f"When False, send it to {EMAIL}. Margaret Thatcher flew to London."])[0]
    assert "False" not in [f.value for f in found]
    assert {f.entity_type for f in found} >= {"EMAIL_ADDRESS", "PERSON", "LOCATION"}


def test_technical_prose_keeps_its_words_and_names_are_still_found(detector: PiiDetector) -> None:
    """The small model reads `Convert`, `MLflow`, `JSON` and `node` as persons and places; the name
    lexicon (`[curate.pii] name_lexicon`) keeps them, and the names and places beside them go."""
    prose = "Convert the MLflow run to JSON before the node restarts. Compute it with SymPy."
    without_lexicon = PiiDetector(DetectorSettings(name_lexicon=False))
    assert {f.value for f in without_lexicon.analyze([prose])[0]} >= {"JSON", "SymPy"}  # what the lexicon is for
    assert detector.analyze([prose]) == [[]]
    found = detector.analyze([f"{prose}\nMark Baker moved from Reading to Toronto; write to {EMAIL}."])[0]
    assert {(f.entity_type, f.value) for f in found} == {
        ("PERSON", "Mark Baker"),
        ("LOCATION", "Reading"),
        ("LOCATION", "Toronto"),
        ("EMAIL_ADDRESS", EMAIL),
    }


def test_a_us_phone_number_is_a_phone_number_not_an_nhs_number(detector: PiiDetector) -> None:
    found = detector.analyze([f"Call me on {PHONE} tomorrow."])[0]
    assert [(f.entity_type, f.value) for f in found] == [("PHONE_NUMBER", PHONE)]


def test_keyed_hashes_match_other_spellings_of_a_value() -> None:
    assert value_hmac(KEY, "EMAIL_ADDRESS", "jane.doe@example.com") == value_hmac(KEY, "EMAIL_ADDRESS", EMAIL)
    assert value_hmac(KEY, "PHONE_NUMBER", "(646) 555-0199") == value_hmac(KEY, "PHONE_NUMBER", PHONE)
    assert value_hmac(KEY, "PHONE_NUMBER", "+16465550199") == value_hmac(KEY, "PHONE_NUMBER", "646.555.0199")
    assert value_hmac(KEY, "CREDIT_CARD", "4111-1111-1111-1111") == value_hmac(KEY, "CREDIT_CARD", CARD)
    assert value_hmac(KEY, "IBAN_CODE", "gb82west12345698765432") == value_hmac(KEY, "IBAN_CODE", IBAN)
    assert value_hmac(b"another-key-0123456789", "EMAIL_ADDRESS", EMAIL) != value_hmac(KEY, "EMAIL_ADDRESS", EMAIL)
    assert subject_key(" Jane.Doe@example.com ") == ("EMAIL_ADDRESS", "Jane.Doe@example.com")
    assert subject_key("user-4711") == ("SUBJECT_ID", "user-4711")


def test_the_engine_never_reaches_the_network(monkeypatch) -> None:
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, a))  # type: ignore[arg-type]
    fresh = PiiDetector(DetectorSettings())  # a new engine: model, recognizers and tldextract load now
    found = fresh.analyze([f"Mail {EMAIL} about https://docs.example.co.uk/page"])[0]
    assert [f.entity_type for f in resolve_overlaps(found)] == ["EMAIL_ADDRESS"]
    assert attempts == []


def test_a_fresh_process_finds_names_without_loading_torch(tmp_path: Path) -> None:
    """Presidio imports transformers and thinc imports torch when they are installed (about 7 s of
    every Python worker's first detector); a CNN pipeline never calls them. A transformer pipeline
    keeps them, and torch still imports after the detector is built."""
    script = (
        "import json, sys\n"
        "from curation.pii_detect import DetectorSettings, PiiDetector\n"
        f"found = PiiDetector(DetectorSettings()).analyze([{f'Ask Margaret Thatcher in London on {PHONE}.'!r}])[0]\n"
        "loaded = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "import torch\n"
        "print(json.dumps({'found': sorted({f.entity_type for f in found}), 'loaded': loaded, "
        "'torch_after': torch.ones(2).sum().item()}))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"found": ["LOCATION", "PERSON", "PHONE_NUMBER"], "loaded": [], "torch_after": 2.0}

    transformer = tmp_path / "en_pipeline_trf"
    transformer.mkdir()
    (transformer / "meta.json").write_text(json.dumps({"requirements": ["spacy-curated-transformers>=0.2.2"]}))
    assert runs_on_torch(str(transformer)) and not runs_on_torch(DetectorSettings().spacy_model)


def test_pattern_only_mode_warns_and_still_scrubs_identifiers() -> None:
    with pytest.warns(UserWarning, match="PERSON and LOCATION are not detected"):
        patterns = PiiDetector(DetectorSettings(pattern_only=True))
    text = f"Margaret Thatcher <{EMAIL}> {PHONE}"
    assert scrub(text, patterns.analyze([text])[0]) == "Margaret Thatcher <<EMAIL_ADDRESS>> <PHONE_NUMBER>"


def test_the_key_comes_from_the_environment_or_a_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MILLPOND_PII_KEY", "short")
    with pytest.raises(Exception, match="shorter than 16 bytes"):
        pii_key(PiiParams())
    key_file = tmp_path / "pii.key"
    key_file.write_text("a-key-kept-outside-the-lakehouse\n")
    assert pii_key(PiiParams(key_file=str(key_file))) == b"a-key-kept-outside-the-lakehouse"


def test_scan_command_prints_findings_without_values(tmp_path: Path) -> None:
    sample = tmp_path / "sample.txt"
    sample.write_text("hello\n" + SHAPES["csv"])
    result = CliRunner().invoke(cli, ["pii", "scan", str(sample), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["counts"] == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "US_SSN": 1}
    assert {(f["entity_type"], f["line"]) for f in report["findings"]} == {
        ("EMAIL_ADDRESS", 3), ("PHONE_NUMBER", 3), ("US_SSN", 3)
    }  # fmt: skip
    assert EMAIL not in result.output and PHONE not in result.output
    shown = CliRunner().invoke(cli, ["pii", "scan", str(sample), "--show-values"])
    assert EMAIL in shown.output
    assert "--show-values" in CliRunner().invoke(cli, ["pii", "scan", "--help"]).output


def _clear_text_in_tables(lakehouse: Path, needles: tuple[str, ...]) -> list[str]:
    """Every value of every table but bronze and quarantine (which keep raw text), searched for `needles`."""
    leaks = []
    for name, spec in TABLES.items():
        if name.startswith(("bronze.", "quarantine.")) or not Path(spec.path(lakehouse)).exists():
            continue
        dump = json.dumps(read_table(spec, lakehouse).to_pylist(), default=str).lower()
        leaks += [f"{name}: {n}" for n in needles if n.lower() in dump]
    return leaks


def test_curate_scrubs_indexes_and_leaves_no_clear_text(
    spark, tmp_path: Path, lakehouse: Path, capfd, monkeypatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow's store: under the lakehouse
    records = [
        {
            "id": "mail",
            "text": prose(1) + f" Write to {EMAIL} for a tour.",
            "author_email": "Owner@Mill.example",
            "contact": f"the owner, {EMAIL}",  # a record field kept as metadata
        },
        {"id": "phone", "text": prose(2) + " Bookings: (646) 555-0199, ask for Margaret Thatcher."},
        {"id": "code", "text": SHAPES["code"] + "\n# " + prose(4)},
        {"id": "clean", "text": prose(5)},
    ]
    write_jsonl(tmp_path / "in" / "a.jsonl", records)
    manifest = write_manifest(
        tmp_path / "in" / "sources.toml",
        [{"name": "s", "format": "jsonl", "path": "*.jsonl", "id_field": "id", "subject_fields": ["author_email"]}],
    )
    config = make_config(lakehouse)
    run_ingest(spark, config, manifest)
    report = run_curate(spark, config, ["normalize", "exact_dedup", "pii", "gate"]).as_json()
    pii_stage = next(s for s in report["stages"] if s["stage"] == "pii")
    assert pii_stage["modified"] == 3 and pii_stage["kept"] == 1
    assert report["gate"]["success"] is True  # the residual e-mail / IP check ran on scrubbed text

    record_of = {r["doc_id"]: r["record_id"] for r in read_table(BRONZE_DOCUMENTS, lakehouse).to_pylist()}
    silver = {record_of[r["doc_id"]]: r for r in read_table(SILVER_DOCUMENTS, lakehouse).to_pylist()}
    assert "Write to <EMAIL_ADDRESS> for a tour" in silver["mail"]["text"]
    assert "<PHONE_NUMBER>, ask for <PERSON>" in silver["phone"]["text"]
    assert silver["clean"]["text"] == prose(5) and not silver["clean"]["pii_counts"]
    assert dict(silver["mail"]["pii_counts"]) == {"EMAIL_ADDRESS": 2}  # the text and the metadata value
    assert dict(silver["mail"]["metadata"])["contact"] == "the owner, <EMAIL_ADDRESS>"
    owner = value_hmac(KEY, "EMAIL_ADDRESS", "owner@mill.example")
    assert silver["mail"]["subject_ids"] == [owner]

    # A subject request finds the documents by the same e-mail in another case, the phone number in
    # another format, and the author's address.
    index = read_table(SILVER_PII_INDEX, lakehouse).to_pylist()
    by_hash: dict[str, set[str]] = {}
    doc_record = {r["doc_id"]: k for k, r in silver.items()}
    for row in index:
        by_hash.setdefault(row["value_hmac"], set()).add(doc_record[row["doc_id"]])
    assert by_hash[value_hmac(KEY, "EMAIL_ADDRESS", "jane.doe@EXAMPLE.COM")] == {"mail", "code"}
    assert by_hash[value_hmac(KEY, "PHONE_NUMBER", "+1.646.555.0199")] == {"phone"}
    assert by_hash[owner] == {"mail"}

    # No clear-text identifier anywhere but bronze: silver, decisions, index, run records, and
    # nothing in what the run printed (progress, funnel, Spark's own output).
    needles = (EMAIL, "owner@mill.example", "555-0199", "Thatcher", GITHUB, IP)
    assert _clear_text_in_tables(lakehouse, needles) == []
    printed = capfd.readouterr()
    assert [n for n in needles if n.lower() in (printed.out + printed.err).lower()] == []

    # A model trained on silver and logged to MLflow (here, the quality classifier; its fastText
    # file keeps its vocabulary in clear) holds no identifier either: every file of the store is read.
    negatives = tmp_path / "spam.txt"
    negatives.write_text("".join(f"buy cheap pills now click here offer {i}\n" for i in range(40)))
    trained = CliRunner().invoke(
        cli,
        ["--lakehouse", str(lakehouse), "classifier", "train", "--positive", "table:silver.documents",
         "--negative", str(negatives), "--holdout", "0.3", "--epoch", "2", "--json"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    store = [p for p in (lakehouse / "_mlflow").rglob("*") if p.is_file()]
    assert any(p.name.endswith(".fasttext.bin") for p in store)
    for path in store:
        raw = path.read_bytes().lower()
        assert [n for n in needles if n.lower().encode() in raw] == [], path

    # Re-curating everything gives the same index (rows replaced, not added).
    run_curate(spark, config, ["normalize", "exact_dedup", "pii", "gate"], full=True)
    again = read_table(SILVER_PII_INDEX, lakehouse).to_pylist()
    assert sorted((r["doc_id"], r["value_hmac"]) for r in again) == sorted(
        (r["doc_id"], r["value_hmac"]) for r in index
    )


def test_ner_reads_a_recurring_sentence_once_and_finds_the_same(detector: PiiDetector) -> None:
    """The memo of NER's sentences: the same findings with it and without, and a sentence met
    again (in the same call or a later one) is not read again."""
    signature = "Kind regards, Margaret Thatcher, Grantham."
    texts = [f"Thanks for the update on ticket {n}. {signature}" for n in range(6)]
    forgetful = PiiDetector(DetectorSettings(ner_memo_chars=0))
    key = lambda found: [[(f.entity_type, f.start, f.end) for f in fs] for fs in found]  # noqa: E731
    read: list[str] = []
    pipe = detector._nlp.pipe  # type: ignore[attr-defined]

    def counting_pipe(texts: Any, **kwargs: Any) -> Any:
        texts = list(texts)
        read.extend(texts)
        return pipe(texts, **kwargs)

    detector._ner_memo.clear()
    detector._nlp.pipe = counting_pipe  # type: ignore[attr-defined]
    try:
        first, again = detector.analyze(texts), detector.analyze(texts)
    finally:
        del detector._nlp.pipe  # type: ignore[attr-defined]
    assert key(first) == key(again) == key(forgetful.analyze(texts))
    assert "Margaret Thatcher" in {f.value for f in first[0] if f.entity_type == "PERSON"}
    assert read.count(signature) == 1 and len(read) == len(set(read))
