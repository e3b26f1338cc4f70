"""One DeepSpeed training loop: pretraining, SFT and DPO hand it their objective (the loss of one
micro-batch).

Nothing hidden (as in nanoGPT's `train.py`): the settings are one frozen dataclass, logged
whole; the learning rate is set by `lr_at` each step; a batch is a pure function of the step,
so `resume` continues exactly where a checkpoint left off.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

from lineage.errors import MillpondError
from trainers.data import TokenWindows
from trainers.model import next_token_loss
from trainers.schedule import lr_at


class CheckpointMissingError(MillpondError, FileNotFoundError):
    """--resume names a run with no checkpoint to continue from."""


@dataclass(frozen=True)
class TrainSettings:
    """The `[train]` section."""

    preset: str = "tiny"
    seq_len: int = 128
    micro_batch: int = 8
    grad_accum: int = 1
    max_steps: int = 200
    lr: float = 3e-3
    warmup: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    zero_stage: int = 1
    checkpoint_every: int = 100
    eval_batches: int = 20
    seed: int = 1337
    precision: str = "auto"  # auto: bf16 on a GPU, fp32 on the CPU; or fp32, bf16
    peak_tflops: float = 0.0  # the accelerator's peak, for MFU; 0: 989 (H100/H200 bf16) on GPU, not reported on CPU
    compile: bool = False  # torch.compile the model (DeepSpeed's engine.compile): faster GPU steps after a compile

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError("[train] zero_stage must be 0, 1, 2 or 3")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError("[train] precision must be auto, fp32 or bf16")
        if min(self.seq_len, self.micro_batch, self.grad_accum, self.max_steps) < 1:
            raise ValueError("[train] seq_len, micro_batch, grad_accum and max_steps must be positive")


def with_overrides(base: TrainSettings, section: Any) -> TrainSettings:
    """`[train]` with the loop settings a tuning section (`[sft]`, `[dpo]`) sets for itself."""
    mine = {f.name for f in fields(TrainSettings)} & {f.name for f in fields(section)}
    return replace(base, **{name: getattr(section, name) for name in mine})


def example_rows(seed: int, index: int, rank: int, train_rows: Any, size: int) -> Any:
    """The training examples (pairs, demonstrations) of micro-batch `index`: a pure function of it,
    as pretraining's windows are, so a resumed run sees the batches an uninterrupted one would."""
    import numpy as np

    rng = np.random.default_rng([seed, index, rank])
    return rng.choice(train_rows, size=size, replace=size > len(train_rows))


def single_process_rendezvous() -> None:
    """What the `deepspeed` launcher sets, for a plain single-process run."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


def skip_inference_comm_op() -> None:
    """DeepSpeed's communication backend builds its shared-memory all-reduce op (`deepspeed_shm_comm`:
    about 60 s of C++ compilation on a machine that has not built it yet, in every first training
    and demo) when it starts. Only tensor-parallel inference (`inference_all_reduce`) calls that op;
    training reduces through torch.distributed, so the op is marked as not buildable here. Where the
    accelerator has no such op (a GPU), nothing is touched: reading DeepSpeed's table of buildable
    ops probes every op, which DeepSpeed itself would not do there."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().create_op_builder("ShareMemCommBuilder") is not None:
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def join_process_group() -> tuple[int, int]:
    """(rank, world size): joins the launcher's process group, or makes a group of one (gloo on CPU, NCCL on GPU)."""
    import deepspeed
    import torch

    single_process_rendezvous()
    skip_inference_comm_op()
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def share_from_rank0(value: Any) -> Any:
    """`value` as rank 0 has it, on every rank."""
    import torch.distributed as dist

    box = [value]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def runtime_environment(cache: Path) -> None:
    """Threads per process and DeepSpeed's op-build cache, before torch starts."""
    world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, world))))
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache / "torch_extensions"))


def deepspeed_config(settings: TrainSettings, bf16: bool) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": settings.micro_batch,
        "gradient_accumulation_steps": settings.grad_accum,
        "gradient_clipping": settings.grad_clip,
        "zero_optimization": {"stage": settings.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


@dataclass
class StepReport:
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    mfu: float | None
    figures: dict[str, float] = field(default_factory=dict)  # the objective's own, averaged over micro-batches

    def metrics(self) -> dict[str, float]:
        """What a run logs for this step (MLflow metric names)."""
        out = {"loss": self.loss, "lr": self.lr, "grad_norm": self.grad_norm, "tokens_per_s": self.tokens_per_s}
        if self.mfu is not None:
            out["mfu"] = self.mfu
        return out | self.figures


class Objective(Protocol):
    """What a training run minimizes: the loss of micro-batch `index` (a pure function of it, so a
    resumed run sees the batches an uninterrupted one would), and the figures to log with it."""

    tokens_per_micro_batch: int  # tokens one micro-batch trains on, for tokens/s and MFU

    def loss(self, engine: Any, index: int, rank: int) -> tuple[Any, dict[str, float]]: ...


class NextToken:
    """Pretraining's objective: next-token cross-entropy on random windows of the token shards."""

    def __init__(self, data: TokenWindows, settings: TrainSettings) -> None:
        self.data, self.settings = data, settings
        self.tokens_per_micro_batch = settings.micro_batch * settings.seq_len
        self.next_token_loss = compiled_when(settings, next_token_loss)

    def loss(self, engine: Any, index: int, rank: int) -> tuple[Any, dict[str, float]]:
        import torch

        x, y = self.data.batch(self.settings.seed, index, rank, self.settings.micro_batch)
        logits = engine(input_ids=torch.from_numpy(x).to(engine.device)).logits
        return self.next_token_loss(logits, torch.from_numpy(y).to(engine.device)), {}


def compiled_when(settings: TrainSettings, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` compiled by torch.compile when `[train] compile` is on, else itself. The loss
    sits outside the compiled model; eager, it makes an fp32 copy of the logits (32k wide) and
    spent a seventh of a GPU step (benchmarks/README.md), compiled it runs as fused kernels."""
    if not settings.compile:
        return function
    import torch

    return torch.compile(function)


def adamw(model: Any, settings: TrainSettings, fused: bool = False) -> Any:
    """torch AdamW with weight decay on matrices only (not on norms and biases), betas (0.9, 0.95):
    the loop's optimizer, and the plain baselines' in the benchmarks."""
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.95), fused=fused)


def uses_bf16(settings: TrainSettings) -> bool:
    import torch

    return settings.precision == "bf16" or (settings.precision == "auto" and torch.cuda.is_available())


def train(
    model: Any,
    objective: Objective,
    settings: TrainSettings,
    checkpoints: Path,
    resume: bool,
    on_step: Callable[[StepReport], None],
    flops_per_token: float = 0.0,
) -> tuple[Any, dict[str, Any], int]:
    """Train `model` (or continue from the latest checkpoint in `checkpoints`); returns (model, ds
    config, first step). `flops_per_token` (training FLOPs) gives the MFU on an accelerator."""
    import deepspeed
    import torch

    rank, world = join_process_group()
    on_gpu = torch.cuda.is_available()
    bf16 = uses_bf16(settings)
    optimizer = adamw(model, settings, fused=on_gpu)
    config = deepspeed_config(settings, bf16)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    if settings.compile:
        engine.compile()
    start = 0
    if resume:
        path, client = engine.load_checkpoint(str(checkpoints))
        if path is None:
            raise CheckpointMissingError(f"--resume: no checkpoint in {checkpoints}; resume a run that saved one")
        start = int(client["step"])
    per_step_tokens = objective.tokens_per_micro_batch * settings.grad_accum * world
    flops = flops_per_token
    peak = settings.peak_tflops or (989.0 if on_gpu else 0.0)
    for step in range(start, settings.max_steps):
        started = time.perf_counter()
        lr = lr_at(step, peak=settings.lr, warmup=settings.warmup, total=settings.max_steps,
                   floor_ratio=settings.min_lr_ratio)  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = lr
        summed: Any = None
        figures: dict[str, float] = {}
        for micro in range(settings.grad_accum):
            loss, more = objective.loss(engine, step * settings.grad_accum + micro, rank)
            engine.backward(loss)
            engine.step()
            # Summed on the device and read once a step: reading each micro-batch's loss would make
            # the host wait for the accelerator before it may queue the next micro-batch.
            summed = loss.detach() if summed is None else summed + loss.detach()
            for key, value in more.items():
                figures[key] = figures.get(key, 0.0) + value / settings.grad_accum
        total = float(summed)
        norm = engine.get_global_grad_norm()
        seconds = time.perf_counter() - started
        tokens_per_s = per_step_tokens / seconds
        mfu = (flops * tokens_per_s / (peak * 1e12 * world)) if peak and flops else None
        report = StepReport(step + 1, total / settings.grad_accum, lr, float(norm or 0.0), tokens_per_s, mfu, figures)
        on_step(report)
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == settings.max_steps:
            engine.save_checkpoint(str(checkpoints), tag=f"step{done}", client_state={"step": done})
    return engine.module, config, start
