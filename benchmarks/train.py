"""The DeepSpeed loop's overhead: CPU tokens/s beside a plain PyTorch loop, same model and data.

Both loops train the same Llama preset from the same initial weights on the same batches
(windows of a token stream), with the same optimizer (torch AdamW), clipping and schedule;
the DeepSpeed one is `trainers.loop.train` (ZeRO stage from `--zero`, fp32, gloo, one
process), the plain one a dozen lines of torch. The first `--warmup` steps are not timed.

    python -m benchmarks train --steps 60 --preset tiny --seq-len 256 --micro-batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def plain_steps(model: Any, data: Any, settings: Any, device: str = "cpu", bf16: bool = False) -> list[float]:
    """Seconds of each step of a plain PyTorch loop over `settings.max_steps` steps: the loop's
    batches, optimizer (`trainers.loop.adamw`, fused on a GPU), schedule, accumulation and
    clipping, with no DeepSpeed; `bf16`: fp32 weights under `torch.autocast`, as nanoGPT; model
    and loss compiled where `settings.compile` is. Each step ends by reading the loss, as the loop
    does."""
    import torch

    from trainers.loop import adamw, compiled_when
    from trainers.model import next_token_loss

    model = model.to(device)
    optimizer = adamw(model, settings, fused=device == "cuda")
    forward, loss_of = compiled_when(settings, model), compiled_when(settings, next_token_loss)
    spent: list[float] = []
    for step in range(settings.max_steps):
        started = time.perf_counter()
        set_lr(optimizer, settings, step)
        summed: Any = None
        for micro in range(settings.grad_accum):
            x, y = data.batch(settings.seed, step * settings.grad_accum + micro, 0, settings.micro_batch)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                logits = forward(input_ids=torch.from_numpy(x).to(device)).logits
            loss = loss_of(logits, torch.from_numpy(y).to(device))
            (loss / settings.grad_accum).backward()
            summed = loss.detach() if summed is None else summed + loss.detach()
        update(model, optimizer, settings)
        float(summed)
        spent.append(time.perf_counter() - started)
    return spent


def set_lr(optimizer: Any, settings: Any, step: int) -> None:
    """The loop's schedule (`lr_at`) for `step`, set as the loop sets it."""
    from trainers.schedule import lr_at

    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, peak=settings.lr, warmup=settings.warmup, total=settings.max_steps,
                            floor_ratio=settings.min_lr_ratio)  # fmt: skip


def update(model: Any, optimizer: Any, settings: Any) -> None:
    """A plain step's update after its backward passes: clipping at `grad_clip`, the optimizer's
    step, the gradients cleared."""
    import torch

    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--zero", type=int, default=1)
    args = parser.parse_args(argv)

    from jobs.config import cache_dir
    from trainers.loop import TrainSettings, runtime_environment

    runtime_environment(cache_dir())
    import torch
    from transformers import LlamaForCausalLM

    from trainers.data import TokenWindows
    from trainers.loop import NextToken, train
    from trainers.model import llama_config, parameter_count

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        ids = rng.integers(2, args.vocab, size=2_000_000, dtype=np.uint16)
        ids.tofile(folder / "train-00000.bin")
        manifest = {"snapshot": "bench", "dtype": "uint16",
                    "shards": [{"file": "train-00000.bin", "split": "train", "tokens": len(ids)}]}  # fmt: skip
        data = TokenWindows(folder, manifest, "train", args.seq_len)
        config = llama_config(args.preset, args.vocab, 0, 1)
        settings = TrainSettings(
            preset=args.preset, seq_len=args.seq_len, micro_batch=args.micro_batch, max_steps=args.steps,
            warmup=5, checkpoint_every=args.steps * 10, zero_stage=args.zero,
        )  # fmt: skip
        tokens_per_step = args.seq_len * args.micro_batch

        # DeepSpeed (its last step saves a checkpoint: excluded, the steps are timed one by one).
        times: list[float] = []

        def on_step(report: Any) -> None:
            times.append(tokens_per_step / report.tokens_per_s)

        torch.manual_seed(settings.seed)
        train(LlamaForCausalLM(config), NextToken(data, settings), settings, folder / "ckpt", False, on_step)
        deepspeed_s = sum(times[args.warmup :])

        # Plain PyTorch, same initial weights (same seed), batches, optimizer, clipping and schedule.
        torch.manual_seed(settings.seed)
        model = LlamaForCausalLM(config)
        plain_s = sum(plain_steps(model, data, settings)[args.warmup :])
        timed = args.steps - args.warmup
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
            "preset": args.preset,
            "parameters": parameter_count(model),
            "vocab": args.vocab,
            "seq_len": args.seq_len,
            "micro_batch": args.micro_batch,
            "zero_stage": args.zero,
            "timed_steps": timed,
            "deepspeed_tokens_per_s": round(timed * tokens_per_step / deepspeed_s),
            "plain_tokens_per_s": round(timed * tokens_per_step / plain_s),
            "overhead_ratio": round(deepspeed_s / plain_s, 3),
        }
    print(json.dumps(result), flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "train.json").write_text(json.dumps(result, indent=2) + "\n")
