"""The served model: found in MLflow by registered name, alias, version or run, and sampled.

A registered model version points at its run's `model` artifacts (Hugging Face format, the
tokenizer beside the weights), so `transformers` loads it as it is. Generation holds a lock:
one sequence batch at a time on the model, off the server's event loop.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage.chat import cut_answer
from lineage.errors import MillpondError


class ModelNotFoundError(MillpondError, LookupError):
    """The model reference names nothing MLflow holds."""


@dataclass(frozen=True)
class ServedModel:
    """Which model answers: its registered name and version (when registered) and its run."""

    name: str
    version: str | None
    run_id: str
    artifact_uri: str
    tracking_uri: str | None = None  # the store that resolves a `models:/` artifact uri

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}" if self.version else f"run:{self.run_id}"

    def as_event(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "run_id": self.run_id}


_REFERENCE = re.compile(r"^(?P<name>[^@/]+)(?:@(?P<alias>[^@/]+)|/(?P<version>\d+))?$")


def resolve_model(tracking_uri: str, model: str | None = None, run_id: str | None = None) -> ServedModel:
    """`NAME`, `NAME@ALIAS` or `NAME/VERSION` of a registered model, or a run id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri)
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise ModelNotFoundError(f"no MLflow run {run_id!r} at {tracking_uri}") from None
        return ServedModel(run.info.run_name or run_id, None, run_id, f"{run.info.artifact_uri}/model", tracking_uri)
    match = _REFERENCE.match(model or "")
    if match is None:
        raise ModelNotFoundError(f"--model {model!r}: expected NAME, NAME@ALIAS or NAME/VERSION")
    name = match["name"]
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(name, match["alias"])
        elif match["version"]:
            version = client.get_model_version(name, match["version"])
        else:
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise MlflowException(f"no versions of {name}")
            version = max(versions, key=lambda v: int(v.version))
    except MlflowException:
        known = ", ".join(sorted(m.name for m in client.search_registered_models())) or "none"
        raise ModelNotFoundError(f"no registered model {model!r} at {tracking_uri}; registered: {known}") from None
    return ServedModel(name, str(version.version), version.run_id, version.source, tracking_uri)


_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_any(tracking_uri: str, reference: str) -> ServedModel:
    """A run id (32 hex digits) or `NAME[@ALIAS|/VERSION]`: what `--init` and `--against` take."""
    if _RUN_ID.match(reference):
        return resolve_model(tracking_uri, run_id=reference)
    return resolve_model(tracking_uri, model=reference)


def download_model(served: ServedModel, cache: Path) -> Path:
    """The model's Hugging Face folder (weights, config, tokenizer), downloaded once into `cache`."""
    import mlflow

    # Keyed by where the artifacts live: a name and version, even a run id, can repeat across stores.
    where = hashlib.sha256(served.artifact_uri.encode()).hexdigest()[:16]
    target = cache / "models" / f"{served.run_id}-{where}"
    if (found := hugging_face_folder(target)) is not None:
        return found
    target.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=_artifact_location(served), dst_path=str(target))
    except Exception as err:  # noqa: BLE001 - any store error is the same fact for the user
        raise ModelNotFoundError(
            f"model {served.label}: its artifacts ({served.artifact_uri}) cannot be read: {err}"
        ) from None
    return hugging_face_folder(target) or Path(local)


def _artifact_location(served: ServedModel) -> str:
    """Where the artifacts are. A logged model's `models:/<model id>` is looked up in the store the
    version came from: MLflow would resolve it in the process's default store (`./mlflow.db`)."""
    import mlflow

    if served.tracking_uri is None or not served.artifact_uri.startswith("models:/m-"):
        return served.artifact_uri
    model_id = served.artifact_uri.removeprefix("models:/")
    return mlflow.MlflowClient(served.tracking_uri).get_logged_model(model_id).artifact_location


# The name of the Hugging Face folder among a logged MLflow model's artifacts (serving.pyfunc);
# MLflow stores it under `artifacts/<the folder's own name>`.
HF_ARTIFACT = "hf_model"


def hugging_face_folder(folder: Path) -> Path | None:
    """The weights folder of a download: a run's `model` artifacts, or the one inside an MLflow
    model (what a registered version's `models:/` source holds: `MLmodel`, `artifacts/<folder>`)."""
    for candidate in (folder / "model", *sorted(folder.glob("artifacts/*")), *sorted(folder.glob("*/artifacts/*"))):
        if (candidate / "config.json").is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1


@dataclass
class Generation:
    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class Generator:
    """A causal LM and its tokenizer, loaded once; `generate()` is thread-safe."""

    def __init__(self, local: Path, served: ServedModel | None = None):
        """`local`: the model's Hugging Face folder; `served`: what it is in MLflow, when known."""
        import torch
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        self.served = served
        self.model = AutoModelForCausalLM.from_pretrained(local).eval()
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(local)
        self.context = int(self.model.config.max_position_embeddings)
        self._lock = threading.Lock()
        self._torch = torch

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def generate(self, prompt: str, sampling: Sampling) -> Generation:
        torch = self._torch
        started = time.perf_counter()
        ids = self.tokenizer.encode(prompt)
        # Keep the end of a long prompt: the newest turns matter most.
        ids = ids[-max(1, self.context - sampling.max_tokens) :]
        inputs = torch.tensor([ids])
        with self._lock, torch.inference_mode():
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            greedy = sampling.temperature <= 0
            out = self.model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=sampling.max_tokens,
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                top_k=None,
                num_return_sequences=sampling.n,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.model.config.eos_token_id,
            )
        texts, reasons, completion = [], [], 0
        for row in out[:, len(ids) :].tolist():
            eos = self.model.config.eos_token_id
            ended = eos in row
            row = row[: row.index(eos)] if ended else row
            completion += len(row)
            text, reason = cut_answer(self.tokenizer.decode(row), sampling.stop)
            texts.append(text)
            reasons.append("stop" if ended else reason)
        return Generation(texts, reasons, len(ids), completion, time.perf_counter() - started)

    def chunks(self, text: str) -> Iterator[str]:
        """A generated text in token-sized pieces, for server-sent events."""
        pieces = self.tokenizer.encode(text)
        done = ""
        for end in range(1, len(pieces) + 1):
            now = self.tokenizer.decode(pieces[:end])
            if now.startswith(done) and len(now) > len(done):
                yield now[len(done) :]
                done = now
        if done != text:
            yield text[len(done) :]


def label_of(served: ServedModel) -> str:
    return f"{served.name}/{served.version}:{served.run_id}" if served.version else f"run:{served.run_id}"


class ModelSlot:
    """The generator behind a server. Given `NAME@ALIAS`, it follows the alias: a background thread
    resolves it every `refresh_seconds`, loads a newly pointed-at version beside the old one and
    then swaps it in, so a promotion reaches a running server without a restart and no request
    waits for a load. A request keeps the generator it started with."""

    def __init__(self, tracking_uri: str, model: str | None, run_id: str | None, cache: Path,
                 refresh_seconds: float = 15.0) -> None:  # fmt: skip
        self.tracking_uri, self.model, self.cache = tracking_uri, model, cache
        served = resolve_model(tracking_uri, model, run_id)
        self.current = Generator(download_model(served, cache), served)
        self.swaps = 0
        self.follows = bool(model and "@" in model)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.follows and refresh_seconds > 0:
            self._thread = threading.Thread(target=self._watch, args=(refresh_seconds,), daemon=True,
                                            name="millpond-model-alias")  # fmt: skip
            self._thread.start()

    @property
    def label(self) -> str:
        return label_of(self.current.served)

    def refresh(self) -> bool:
        """Resolve the alias now; True when a new version was loaded and swapped in."""
        served = resolve_model(self.tracking_uri, self.model)
        if served.version == self.current.served.version:
            return False
        self.current = Generator(download_model(served, self.cache), served)  # loaded first, then swapped in
        self.swaps += 1
        return True

    def _watch(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a registry hiccup keeps the model being served
                continue

    def close(self) -> None:
        self._stop.set()
