"""`millpond demo`: the whole loop on data every machine has, with no download.

Data plane: the documentation and source of a few installed Python distributions (each file
tagged with its distribution's license) and a small landing file with one broken line are
ingested, curated, snapshotted and traced for one person, with the demo's bundled demonstrations
(`sft-jsonl`: the users' questions answered from package metadata). Then the flywheel: a tiny model
is pretrained on the snapshot (DeepSpeed, MLflow), tuned on the demonstrations so that it answers
in the chat format (SFT), and made the champion of `millpond-chat`, served
over the OpenAI API, and asked questions by simulated users who each time pick the answer in
plainer words (`plain_words`, below: the preference the demo's users hold and the judge of the win
rate). Their feedback is streamed, made pairs, DPO trains a challenger from the champion, the
challenger is evaluated against it and promoted if it wins, and the running server follows.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import click
from pyspark.sql import SparkSession

from curation.pii import KEY_ENV
from curation.registry import stage_names
from jobs.config import Config, cache_dir
from jobs.context import open_spark, progress
from jobs.curate import print_report as print_funnel
from jobs.curate import run_curate
from jobs.ingest import print_report, run_ingest
from jobs.snapshot import create_snapshot
from jobs.snapshot import print_summary as print_snapshot
from jobs.subject_requests import find_subjects
from lineage.catalog import BRONZE_DOCUMENTS, SILVER_DECISIONS, SILVER_DOCUMENTS
from lineage.explain import explain
from lineage.locations import demo_folder
from lineage.reader import inspect_tables
from lineage.snapshots import SnapshotSpec, snapshot_row
from lineage.tables import read_table

DEMO_SNAPSHOT = "demo"
DEMO_DISTRIBUTIONS = [
    "click",
    "tqdm",
    "jinja2",
    "markupsafe",
    "orjson",
    "zstandard",
    "tomli-w",
    "ftfy",
    "trafilatura",
    "datasketch",
    "deltalake",
    "delta-spark",
    "millpond",
]

MANIFEST = """\
# The demo's sources: see ingestion/manifest.py for every key.
[[source]]
name = "python-docs"
format = "python-env"
include = {include}
consent = ["pretraining", "evaluation"]

[[source]]
name = "feedback"
format = "jsonl"
path = "landing/feedback.jsonl"
text_field = "message"
id_field = "id"
license = "CC-BY-4.0"
subject_fields = ["user_email"]
consent = ["pretraining"]
domain = "chat"

[[source]]
name = "demonstrations"
format = "sft-jsonl"
path = "landing/demonstrations.jsonl"
id_field = "id"
license = "CC-BY-4.0"
consent = ["sft"]
"""

FEEDBACK = [
    {"id": "fb-1", "message": "The ingest command was easy to run on my laptop.", "user_email": "Alice@Example.com"},
    {"id": "fb-2", "message": "Could the quarantine list show the byte offset too?", "user_email": "bob@example.org"},
    {"id": "fb-3", "message": "", "user_email": "carol@example.net"},
]


def write_demo_sources(folder: Path) -> Path:
    """The demo manifest and its landing file (rewritten each time: the demo is reproducible)."""
    (folder / "landing").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record) for record in FEEDBACK]
    lines.insert(2, '{"id": "fb-broken", "message": "this line was cut in transit')
    (folder / "landing" / "feedback.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    demonstrations = [json.dumps(record) for record in demonstration_records()]
    (folder / "landing" / "demonstrations.jsonl").write_text("\n".join(demonstrations) + "\n", encoding="utf-8")
    manifest = folder / "sources.toml"
    manifest.write_text(MANIFEST.format(include=json.dumps(DEMO_DISTRIBUTIONS)), encoding="utf-8")
    return manifest


def demonstration_records() -> list[dict[str, Any]]:
    """The demo's bundled demonstrations (`sft-jsonl`): each user question of `QUESTIONS` about each
    package, answered in plain words from the package's installed metadata, so that SFT teaches the
    pretrained model the chat format before the users first talk to it."""
    from importlib import metadata

    records = []
    for name in DEMO_DISTRIBUTIONS:
        try:
            meta = metadata.metadata(name)
        except metadata.PackageNotFoundError:
            continue
        summary = (meta.get("Summary") or "a Python package").rstrip(".")
        stated = meta.get("License-Expression") or meta.get("License") or ""
        license_ = f"the {stated} license" if stated and len(stated) < 40 else "the license its authors chose"
        version = metadata.version(name)
        answers = [
            f"You install {name} with pip, the Python package installer; this machine has version {version}.",
            f"The package {name} is described by its authors as: {summary}.",
            f"You import {name} in your code and call it where you need it; its documentation has examples.",
            f"The package {name} is quick for what it does: {summary.lower()}.",
            f"The authors of {name} maintain it in the open; version {version} is their latest here.",
            f"The package {name} is shared under {license_}, so check it before you ship it.",
            f"You test code that uses {name} with pytest and small inputs, as its own authors do.",
            f"Version {version} of {name} is what is installed here; its changelog says what changed.",
        ]
        for i, (question, answer) in enumerate(zip(QUESTIONS, answers, strict=True)):
            messages = [
                {"role": "user", "content": question.format(name=name)},
                {"role": "assistant", "content": answer},
            ]
            records.append({"id": f"demo-{name}-{i}", "messages": messages})
    return records


def demo_pii_key(config: Config) -> None:
    """Without a configured PII key, the demo makes one in the project cache (never in the lakehouse)."""
    if os.environ.get(KEY_ENV) or config.section("curate")["pii"]["key_file"]:
        return
    key_file = cache_dir() / "demo-pii.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
        key_file.chmod(0o600)
    os.environ[KEY_ENV] = key_file.read_text(encoding="utf-8").strip()
    progress(f"demo: PII values are keyed with {key_file}; set {KEY_ENV} for real data")


# The demo's users ask about the corpus; each of them prefers the answer in plainer words.
QUESTIONS = [
    "How do I install {name}?", "What does {name} do?", "Show an example of {name}.", "Is {name} fast?",
    "Who maintains {name}?", "What license is {name} under?", "How do I test code that uses {name}?",
    "What is new in {name}?",
]  # fmt: skip
USERS = [f"demo-user-{i}" for i in range(1, 7)]
# How the users are served their answers; the win rate judges answers sampled the same way.
SERVED_TEMPERATURE = 1.0
SERVED_TOKENS = 32


def plain_words(prompt: str, answer: str, other: str) -> float:
    """The demo users' preference, and the demo's win-rate judge (`[eval] judge =
    "jobs.demo:plain_words"`): of two answers, the one more of whose characters are letters and
    spaces wins (they ask in words and want words back, not code symbols); an empty answer never
    wins. Closer than five points in a hundred (about one character in twenty) is a tie: a person
    does not see so small a difference, and gives no choice."""

    def share(text: str) -> float:
        return sum(c.isalpha() or c == " " for c in text) / len(text) if text.strip() else -1.0

    mine, theirs = share(answer), share(other)
    return 0.5 if abs(mine - theirs) < 0.05 else float(mine > theirs)


def demo_loop_config(config: Config, quick: bool) -> Config:
    """The demo's settings for the loop, where the user's config leaves a default in place (a
    setting of their own wins)."""
    from jobs.config import DEFAULTS

    demo = {
        "train": {"max_steps": 60 if quick else 300, "seq_len": 128, "warmup": 10, "checkpoint_every": 1000},
        "serve": {"default_consent": ["preference", "sft"], "roll_seconds": 1.0, "model_refresh_seconds": 1.0,
                  "max_tokens": 48},
        "sft": {"max_steps": 20 if quick else 60, "lr": 1e-3, "checkpoint_every": 1000},
        "dpo": {"max_steps": 20 if quick else 180, "lr": 3e-4, "beta": 0.3, "label_smoothing": 0.1,
                "checkpoint_every": 1000},
        "eval": {"judge": "jobs.demo:plain_words", "prompts": 16 if quick else 48, "max_new_tokens": SERVED_TOKENS,
                 "temperature": SERVED_TEMPERATURE, "answers_per_prompt": 4},
        "flywheel": {"min_new_pairs": 8, "min_winrate": 0.6, "test": 0.3},
    }  # fmt: skip
    values = copy.deepcopy(config.values)
    for section, settings in demo.items():
        for key, value in settings.items():
            if values[section][key] == DEFAULTS[section][key]:
                values[section][key] = value
    return Config(values=values, file=config.file)


def run_demo(config: Config, loop: bool = True, quick: bool = False, spark: SparkSession | None = None) -> None:
    """The demo from start to end. It starts its own Spark session and stops it at the end; a
    session handed in (a test's) is used and left running."""
    lakehouse = config.lakehouse
    demo_pii_key(config)
    manifest = write_demo_sources(demo_folder(lakehouse))
    progress(f"demo lakehouse: {lakehouse}  (manifest: {manifest})")
    own_session = spark is None
    if spark is None:
        spark = open_spark(config, app_name="millpond-demo")
    click.echo("\n== 1. ingest: raw files -> bronze.documents (bad records -> quarantine.records)")
    print_report(run_ingest(spark, config, manifest))
    click.echo("\n== 2. curate: bronze.documents -> silver.documents (every decision -> silver.decisions)")
    funnel = run_curate(spark, config)
    print_funnel(funnel)
    _show_a_dropped_document(config, funnel.run_id)
    click.echo("\n== 3. snapshot: silver.documents -> gold.snapshots (a named training set, pinned to a version)")
    existing = snapshot_row(lakehouse, DEMO_SNAPSHOT)
    if existing is None:
        print_snapshot(create_snapshot(spark, config, SnapshotSpec(DEMO_SNAPSHOT, validation=0.05, test=0.05)))
    else:
        click.echo(f"   {DEMO_SNAPSHOT} exists (snapshots are immutable): `millpond snapshot show {DEMO_SNAPSHOT}`")
    click.echo("\n== 4. lineage: which rows, snapshots and runs hold data of one person?")
    _find_a_subject(spark, config)
    if loop:
        run_loop(spark, demo_loop_config(config, quick), quick)
    if own_session:
        spark.stop()
    click.echo("\n== the tables")
    for info in inspect_tables(lakehouse):
        state = "not created yet" if info.version is None else f"v{info.version}, {info.rows} rows"
        click.echo(f"  {info.name:<22} {state:<22} {info.path}")
    click.echo(
        "\nNext: `millpond quarantine`, `millpond runs`, `millpond why DOC_ID`, `millpond snapshot list`, "
        f"`millpond pii scan FILE`; the runs side by side: `millpond --lakehouse {lakehouse} mlflow`, "
        "then open the link it prints for each experiment"
        + (f" (the flywheel's: {_flywheel_page(config)})." if loop else ".")
    )


def _flywheel_page(config: Config) -> str:
    """The flywheel experiment's runs table in the UI `millpond mlflow` serves (default port)."""
    import mlflow

    from jobs.tracking import experiment_id, tracking_uri
    from trainers.tracking import experiment_page

    return experiment_page(
        "http://127.0.0.1:5000", experiment_id(config, "flywheel", mlflow.MlflowClient(tracking_uri(config)))
    )


def _find_a_subject(spark: SparkSession, config: Config) -> None:
    """`millpond lineage find` on the first author the demo corpus names (public package metadata)."""
    bronze = read_table(BRONZE_DOCUMENTS, config.lakehouse, columns=["doc_id", "subject_ids"])
    silver = read_table(SILVER_DOCUMENTS, config.lakehouse, columns=["doc_id"])
    curated = set(silver.column("doc_id").to_pylist()) if silver is not None else set()
    rows = bronze.to_pylist() if bronze is not None else []
    # Someone whose document made it into silver (and the snapshot) shows the whole path.
    subjects = sorted({s for r in rows for s in r["subject_ids"] or [] if r["doc_id"] in curated and "@" in s})
    subjects = subjects or sorted({s for r in rows for s in r["subject_ids"] or []})
    if not subjects:
        click.echo("   no document of the demo corpus names a subject")
        return
    subject = subjects[0]
    click.echo(f"   millpond lineage find --subject {subject}")
    found = find_subjects(spark, config, (subject,))
    for table_name, count in sorted(found["row_counts"].items()):
        click.echo(f"     {table_name:<24} {count:>5} row(s)")
    for snap in found["snapshots"]:
        click.echo(f"     snapshot {snap['name']} (v{snap['version']}): {snap['members']} member(s)")
    click.echo(f"   erase it: millpond lineage erase --subject {subject} --reason '...' --dry-run")


def _show_a_dropped_document(config: Config, run_id: str) -> None:
    """`millpond why` on one document this run dropped, so the decision log is seen once."""
    decisions = read_table(SILVER_DECISIONS, config.lakehouse, columns=["doc_id", "action", "run_id", "stage"])
    dropped = sorted(
        r["doc_id"]
        for r in ([] if decisions is None else decisions.to_pylist())
        if r["run_id"] == run_id and r["action"] == "dropped"
    )
    if not dropped:
        return
    doc_id = dropped[0]
    click.echo(f"\n   why was {doc_id} dropped?  (millpond why {doc_id})")
    for d in explain(config.lakehouse, doc_id, stage_names())["decisions"]:
        extra = " ".join(str(x) for x in (d["reason"], d["duplicate_of"]) if x)
        click.echo(f"     {d['stage']:<14} {d['action']:<9} {extra}")


def run_loop(spark: SparkSession, config: Config, quick: bool) -> dict[str, Any]:
    """Pretrain, serve, simulated users, stream, pairs, DPO, evaluate, promote, serve the champion."""
    from jobs.config import params_from
    from jobs.flywheel import PROMOTED, print_turn, promote, turn
    from jobs.train import prepare_tokens, pretrain
    from trainers.loop import TrainSettings

    click.echo("\n== 5. pretrain: a tiny Llama on the snapshot, then SFT on the demonstrations (DeepSpeed, MLflow)")
    settings = params_from(TrainSettings, config.section("train"))
    manifest = prepare_tokens(config, DEMO_SNAPSHOT, None, None)
    base = pretrain(config, DEMO_SNAPSHOT, settings, manifest)
    click.echo(f"   run {base['run_id']}: loss {base['losses'][0]:.2f} -> {base['losses'][-1]:.2f}, "
               f"validation perplexity {base.get('val_perplexity', float('nan')):.1f}")  # fmt: skip
    tuned = _tune_on_demonstrations(spark, config, base["run_id"])
    registered = tuned["registered_model"]
    champion = promote(config, f"{registered['name']}/{registered['version']}")
    click.echo(f"   {champion['name']}@{champion['alias']} -> version {champion['version']} (the first champion)")

    click.echo("\n== 6. serve it (OpenAI API) and let simulated users talk to it and pick answers")
    serve_config = demo_folder(config.lakehouse) / "serve.toml"
    import tomli_w

    serve_config.write_text(tomli_w.dumps(config.values), encoding="utf-8")
    with _server(config, serve_config) as url:
        asked = _simulated_users(url, config, 24 if quick else 1536)
        click.echo(f"   {asked['interactions']} conversations, {asked['feedback']} choices given "
                   f"(each user picks the answer in plainer words)")  # fmt: skip
        time.sleep(2.5)  # the landing file rolls and the stream can read it

        click.echo("\n== 7. the flywheel turns: stream, pairs, DPO from the champion, evaluate, promote")
        report = turn(spark, config)
        print_turn(report)
        if report.decision == PROMOTED:
            deadline = time.time() + 30
            while _health(url)["model"].split(":")[0] != report.challenger and time.time() < deadline:
                time.sleep(0.5)
            click.echo(f"   the running server now answers with {_health(url)['model']}")
    click.echo("\n== 8. the runs side by side (also in the MLflow UI)")
    rows = [("pretrain", base["run_id"], base.get("val_perplexity"), None, None),
            ("sft (champion)", tuned["run_id"], report.figures.get("champion_perplexity"), 0.5, 0.5),
            ("dpo (challenger)", report.dpo.get("run_id"), report.figures.get("challenger_perplexity"),
             report.figures.get("preference_accuracy"), report.figures.get("winrate"))]  # fmt: skip
    click.echo(f"   {'run':<18} {'id':<34} {'perplexity':>10} {'pref. acc.':>10} {'win rate':>9}")
    for name, run_id, ppl, accuracy, rate in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else "-" for v in (ppl, accuracy, rate)]
        click.echo(f"   {name:<18} {run_id or '-':<34} {cells[0]:>10} {cells[1]:>10} {cells[2]:>9}")
    click.echo("   (win rate: the challenger's answers against the champion's on held-out prompts, judged by the "
               "users' preference; the champion against itself is 0.5)")  # fmt: skip
    return {"base": base, "sft": tuned, "turn": report.as_json()}


def _tune_on_demonstrations(spark: SparkSession, config: Config, base_run: str) -> dict[str, Any]:
    """SFT of the pretrained model on a `--purpose sft` snapshot of the bundled demonstrations."""
    from jobs.config import params_from
    from jobs.sft import run_sft
    from lineage.snapshots import parse_where, schema_columns
    from trainers.sft import SftSettings

    name = f"{DEMO_SNAPSHOT}-sft"
    if snapshot_row(config.lakehouse, name) is None:
        where = parse_where("domain = 'sft'", schema_columns(SILVER_DOCUMENTS.schema))
        create_snapshot(spark, config, SnapshotSpec(name, where=where, purpose="sft", validation=0.0, test=0.1))
    tuned = run_sft(config, name, base_run, params_from(SftSettings, config.section("sft")))
    click.echo(f"   SFT run {tuned['run_id']} on {name} ({tuned['demonstrations']['train']} demonstrations): "
               f"held-out answer loss {tuned['init_heldout_loss']:.2f} -> {tuned['heldout_loss']:.2f}")  # fmt: skip
    return tuned


def _health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/health", timeout=5) as response:
        return json.loads(response.read())


class _server:
    """`millpond serve --model millpond-chat@champion` in its own process group, stopped after."""

    def __init__(self, config: Config, config_file: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.config, self.config_file = config, config_file
        self.log = demo_folder(config.lakehouse) / "serve.log"

    def __enter__(self) -> str:
        model = f"{self.config.section('flywheel')['model']}@{self.config.section('flywheel')['alias']}"
        command = [sys.executable, "-m", "jobs.cli", "--config", str(self.config_file), "serve", "--model", model,
                   "--port", str(self.port)]  # fmt: skip
        self.handle = open(self.log, "w")  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(command, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})  # fmt: skip
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 180
        while True:
            try:
                progress(f"serving {_health(url)['model']} on {url}/v1 (log: {self.log})")
                return url
            except OSError:
                if self.process.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"millpond serve did not start: see {self.log}") from None
                time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.handle.close()


def _simulated_users(url: str, config: Config, conversations: int) -> dict[str, int]:
    """Users ask about the corpus's packages; each gets two answers and picks the one in plainer words."""
    import httpx
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="demo", max_retries=0)
    model = config.section("flywheel")["model"]
    feedback = 0
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(conversations):
            name = DEMO_DISTRIBUTIONS[i % len(DEMO_DISTRIBUTIONS)]
            question = QUESTIONS[(i // len(DEMO_DISTRIBUTIONS)) % len(QUESTIONS)].format(name=name)
            chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], n=2,
                                                  max_tokens=SERVED_TOKENS, temperature=SERVED_TEMPERATURE, seed=i, user=USERS[i % len(USERS)])  # fmt: skip
            a, b = (c.message.content or "" for c in chat.choices)
            verdict = plain_words(question, a, b)
            if verdict != 0.5:
                http.post("/v1/feedback", json={"interaction_id": chat.id, "choice": 0 if verdict == 1.0 else 1})
                feedback += 1
    return {"interactions": conversations, "feedback": feedback}
