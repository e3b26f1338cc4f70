"""DPO: the DeepSpeed loop beside a plain PyTorch DPO loop, the reference cache's saving, and DPO
on the real hh-rlhf pairs read through `preference-jsonl`.

`--part loop`: both loops train the same preset from the same weights on the same pairs (random
token sequences, prompt masked), with the same optimizer (torch AdamW), clipping, schedule and
loss (`trainers.preference.preference_loss`), fp32, one process. The DeepSpeed one is
`trainers.loop.train` with `trainers.dpo.DirectPreference` (the reference log-probs read from
the cache); the plain one a dozen lines of torch. A third loop is the plain one computing the
reference's log-probs in every step, as a DPO trainer without a cache does: the ratio is what the
cache saves. The first `--warmup` steps are not timed.

`--part hh`: the whole path on `../shared/data/hh-rlhf-harmless-base-test.jsonl.gz` (2,312 real
pairs) in a temporary lakehouse: `millpond ingest` (a preference-jsonl source), `preferences
build` (PII scrubbing included), `snapshot create --purpose preference`, then `train dpo` from a
model with the architecture of the tiny preset (random weights; nothing pretrained ships with the
project) and a tokenizer trained on the pairs. Its held-out preference accuracy is reported
beside a response-length baseline (the longer answer is the chosen one) on the same split.

    python -m benchmarks dpo --part loop --steps 40
    python -m benchmarks dpo --part hh --steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
HH = HERE.parents[1] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"


def plain_dpo_steps(model: Any, objective: Any, reference: np.ndarray, loop: Any, device: str = "cpu",
                    bf16: bool = False, reference_model: Any = None) -> list[float]:  # fmt: skip
    """Seconds of each step of a plain PyTorch DPO loop over `loop.max_steps` steps: the DeepSpeed
    objective's pairs, loss (`preference_loss`), optimizer (`trainers.loop.adamw`, fused on a GPU),
    schedule and clipping; the reference's log-probs read from `reference`, or computed by a
    forward pass of `reference_model` in every step (a DPO trainer without a cache). `bf16`: fp32
    weights under `torch.autocast`."""
    import torch

    from benchmarks.train import set_lr, update
    from trainers.dpo import pair_logps
    from trainers.loop import adamw
    from trainers.preference import preference_loss

    model = model.to(device)
    optimizer = adamw(model, loop, fused=device == "cuda")
    cached = torch.from_numpy(reference).float().to(device)
    spent: list[float] = []
    for step in range(loop.max_steps):
        started = time.perf_counter()
        set_lr(optimizer, loop, step)
        rows = objective.rows(step, 0)
        if reference_model is not None:
            with torch.no_grad():
                ref = pair_logps(reference_model, objective.tensors, rows, device)
        else:
            ref = cached[torch.from_numpy(rows).to(device)]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logps = pair_logps(model, objective.tensors, rows, device)
        preference = objective.settings.preference()
        loss = preference_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], preference).loss
        loss.backward()
        update(model, optimizer, loop)
        float(loss.detach())  # the loop reads its loss too, so both wait for the step to end
        spent.append(time.perf_counter() - started)
    return spent


def loop_part(args: argparse.Namespace) -> dict[str, Any]:
    from jobs.config import cache_dir
    from trainers.loop import runtime_environment

    runtime_environment(cache_dir())
    import torch
    from transformers import LlamaForCausalLM

    from trainers.dpo import DirectPreference, DpoSettings, PairTensors, all_logps
    from trainers.loop import TrainSettings, train
    from trainers.model import llama_config, parameter_count

    rng = np.random.default_rng(0)
    n, seq = args.pairs, args.seq_len
    ids = rng.integers(2, args.vocab, size=(n, 2, seq + 1), dtype=np.int64)
    masks = np.zeros((n, 2, seq), dtype=bool)
    masks[:, :, seq // 2 :] = True  # the second half of every sequence is the answer
    tensors = PairTensors([f"p{i}" for i in range(n)], np.array(["train"] * n), ids[..., :-1], ids[..., 1:], masks, 0,
                          masks.sum(axis=(1, 2)))  # fmt: skip
    config = llama_config(args.preset, args.vocab, 0, 1)
    settings = DpoSettings(micro_batch=args.micro_batch, seq_len=seq, max_steps=args.steps, warmup=5,
                           checkpoint_every=args.steps * 10)  # fmt: skip
    loop = settings.loop(TrainSettings(preset=args.preset))
    torch.manual_seed(loop.seed)
    reference_model = LlamaForCausalLM(config)
    started = time.perf_counter()
    reference = all_logps(reference_model, tensors, np.arange(n), settings.eval_micro_batch)
    reference_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        np.savez(Path(tmp) / "ref.npz", pair_ids=np.array(tensors.pair_ids), logps=reference)
        with np.load(Path(tmp) / "ref.npz") as stored:
            _ = stored["logps"]
        cache_read_s = time.perf_counter() - started
        objective = DirectPreference(tensors, reference, settings, loop.seed)
        times: list[float] = []
        torch.manual_seed(loop.seed)
        policy = LlamaForCausalLM(config)
        policy.load_state_dict(reference_model.state_dict())
        train(policy, objective, loop, Path(tmp) / "ckpt", False,
              lambda r: times.append(objective.tokens_per_micro_batch / r.tokens_per_s))  # fmt: skip
    deepspeed_s = sum(times[args.warmup :])

    def plain(with_reference_forward: bool) -> float:
        torch.manual_seed(loop.seed)
        model = LlamaForCausalLM(config)
        model.load_state_dict(reference_model.state_dict())
        forward_reference = reference_model if with_reference_forward else None
        return sum(plain_dpo_steps(model, objective, reference, loop, reference_model=forward_reference)[args.warmup :])

    plain_s = plain(False)
    uncached_s = plain(True)
    timed = args.steps - args.warmup
    tokens = timed * objective.tokens_per_micro_batch
    return {
        "part": "loop", "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": _machine(),
        "preset": args.preset, "parameters": parameter_count(reference_model), "vocab": args.vocab, "seq_len": seq,
        "pairs_per_step": args.micro_batch, "timed_steps": timed,
        "deepspeed_tokens_per_s": round(tokens / deepspeed_s), "plain_tokens_per_s": round(tokens / plain_s),
        "overhead_ratio": round(deepspeed_s / plain_s, 3),
        "plain_with_reference_forward_tokens_per_s": round(tokens / uncached_s),
        "cache_speedup": round(uncached_s / plain_s, 3),
        "reference_pass_s": round(reference_s, 3), "reference_pairs": n, "cache_read_s": round(cache_read_s, 4),
    }  # fmt: skip


def _millpond(lakehouse: Path, *args: str) -> dict[str, Any]:
    command = [str(Path(sys.executable).parent / "millpond"), "--lakehouse", str(lakehouse), *args, "--json"]
    started = time.perf_counter()
    env = {"MILLPOND_PII_KEY": "benchmark-only-key-" + "0" * 32} | dict(os.environ)  # a throwaway lakehouse
    out = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"_seconds": round(time.perf_counter() - started, 1)}


def hh_part(args: argparse.Namespace) -> dict[str, Any]:
    import tomli_w

    from jobs.config import DEFAULTS, Config
    from jobs.dpo import preference_pairs
    from serving.smoke import register_untrained_model

    if not args.data.is_file():
        raise SystemExit(f"{args.data} is not on this machine")
    with tempfile.TemporaryDirectory() as tmp:
        lakehouse = Path(tmp) / "lakehouse"
        manifest = Path(tmp) / "manifest.toml"
        manifest.write_text(tomli_w.dumps({"source": [{
            "name": "hh-rlhf-harmless", "path": str(args.data), "format": "preference-jsonl", "license": "MIT",
            "consent": ["preference"]}]}))  # fmt: skip
        ingest = _millpond(lakehouse, "ingest", "--manifest", str(manifest))
        build = _millpond(lakehouse, "preferences", "build")
        snapshot = _millpond(lakehouse, "snapshot", "create", "hh-v1", "--from", "silver.preferences", "--purpose",
                             "preference", "--validation", "0", "--test", "0.1")  # fmt: skip
        config = Config(values={**DEFAULTS, "lakehouse": str(lakehouse)}, file=None)
        _, pairs = preference_pairs(config, "hh-v1")
        texts = [t for p in pairs if p.split == "train" for t in (p.prompt, p.chosen, p.rejected)]
        register_untrained_model(lakehouse, "hh-base", texts, alias="champion")
        dpo = _millpond(lakehouse, "train", "dpo", "--snapshot", "hh-v1", "--init", "hh-base@champion",
                        "--max-steps", str(args.steps), "--seq-len", str(args.seq_len))  # fmt: skip
        held_out = [p for p in pairs if p.split != "train"]
        lengths = [(len(p.chosen) > len(p.rejected)) + 0.5 * (len(p.chosen) == len(p.rejected)) for p in held_out]
    return {
        "part": "hh", "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": _machine(),
        "records": ingest["read"], "pairs": build["pairs"], "refused": build["refused"],
        "train_pairs": dpo["pairs"]["train"], "held_out_pairs": dpo["pairs"]["held_out"],
        "prompts_cut": dpo["pairs"]["prompts_cut"], "steps": dpo["steps"], "seq_len": args.seq_len,
        "preference_accuracy": round(dpo["preference_accuracy"], 4),
        "length_baseline_accuracy": round(float(np.mean(lengths)), 4),
        "reference_accuracy": dpo["init_preference_accuracy"], "tokens_per_s": dpo["tokens_per_s"],
        "seconds": {"ingest": ingest["_seconds"], "preferences_build": build["_seconds"],
                    "snapshot": snapshot["_seconds"], "train_dpo": dpo["_seconds"]},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks dpo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["loop", "hh", "all"], default="all")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (loop: 40, hh: 200)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=None, help="loop: 128; hh: 256 (the tiny preset's context)")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=512, help="loop: pairs in the reference pass")
    parser.add_argument("--data", type=Path, default=HH, help="hh: the hh-rlhf file (default: ../shared/data)")
    args = parser.parse_args(argv)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    for part in ("loop", "hh") if args.part == "all" else (args.part,):
        part_args = argparse.Namespace(**vars(args))
        part_args.steps = args.steps or (40 if part == "loop" else 200)
        part_args.seq_len = args.seq_len or (128 if part == "loop" else 256)
        result = loop_part(part_args) if part == "loop" else hh_part(part_args)
        print(json.dumps(result), flush=True)
        (out / f"dpo-{part}.json").write_text(json.dumps(result, indent=2) + "\n")
