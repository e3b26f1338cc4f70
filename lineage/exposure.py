"""Which training runs saw a person's data, and how much of it: the exposure half of a data
subject request.

Every training run logs the snapshot it read (`snapshot` param) and a listing of the examples it
trained on (`exposure.listing`: (split, doc_id, tokens); the shards' documents for pretraining,
the demonstrations for SFT, the pairs for DPO). A run whose snapshot holds the person's
documents saw the tokens of those documents in its training split, every repeat counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lineage.locations import SHARD_DOCUMENTS
from lineage.subjects import Lineage

# `millpond eval` logs a run's held-out prompts and answers here, and tags the run with the
# snapshot the prompts came from: an erasure of a person in that snapshot drops the samples.
EVAL_SAMPLES = "eval/samples.json"
EVAL_SNAPSHOT_TAG = "eval.snapshot"


def all_runs(client: Any) -> list[Any]:
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs: list[Any] = []
    token = None
    while experiments:
        page = client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def exposure(listing: Path | None, documents: set[str]) -> int | None:
    """Tokens of `documents` in a run's training split (every repeat counted), from its listing of
    (split, doc_id, tokens): the shards' documents for pretraining, the demonstrations for SFT,
    the pairs for DPO; None when the listing is gone."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if listing is None or not listing.is_file():
        return None
    listed = pq.read_table(listing, columns=["split", "doc_id", "tokens"])
    mine = listed.filter(
        pc.and_(
            pc.equal(listed["split"], "train"), pc.is_in(listed["doc_id"], pa.array(sorted(documents), pa.string()))
        )
    )
    return int(pc.sum(mine["tokens"]).as_py() or 0)


def training_runs(
    client: Any | None, lineage: Lineage, every: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(runs, model versions) among `every` run of the store `client` reads that trained on a
    snapshot holding the documents, with exposure; none without a store."""
    names = {s["name"] for s in lineage.snapshots}
    if client is None or not names:
        return [], []
    documents = set(lineage.documents)
    runs, models = [], []
    for run in every:
        params = run.data.params
        if params.get("snapshot") not in names:
            continue
        kind = run.data.tags.get("millpond.kind", "run")
        listing = params.get("exposure.listing") or (
            str(Path(params["shards.folder"]) / SHARD_DOCUMENTS) if "shards.folder" in params else None
        )
        tokens = exposure(Path(listing), documents) if listing else None
        runs.append(
            {
                "run_id": run.info.run_id,
                "kind": kind,
                "snapshot": params["snapshot"],
                "experiment_id": run.info.experiment_id,
                "tokens": tokens,
                "train_tokens": int(params["shards.train_tokens"]) if "shards.train_tokens" in params else None,
                "steps": int(params["train.max_steps"]) if "train.max_steps" in params else None,
            }
        )
        for version in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            models.append({"name": version.name, "version": str(version.version), "run_id": run.info.run_id})
    runs.sort(key=lambda r: r["run_id"])
    models.sort(key=lambda m: (m["name"], int(m["version"])))
    return runs, models


def runs_with_eval_samples(every: list[Any], snapshots: set[str]) -> list[str]:
    """Those of `every` run whose logged evaluation samples hold prompts of the `snapshots`."""
    return sorted(r.info.run_id for r in every if snapshots and r.data.tags.get(EVAL_SNAPSHOT_TAG) in snapshots)


def drop_eval_samples(client: Any, run_id: str) -> bool:
    """Delete a run's evaluation samples from its artifact store (`millpond eval --suite samples`
    logs them again from what the tables hold now); whether there were any."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    run = client.get_run(run_id)
    if not any(a.path == EVAL_SAMPLES for a in client.list_artifacts(run_id, EVAL_SAMPLES.rsplit("/", 1)[0])):
        return False
    get_artifact_repository(run.info.artifact_uri).delete_artifacts(EVAL_SAMPLES)
    client.set_tag(run_id, EVAL_SNAPSHOT_TAG, "")
    return True
