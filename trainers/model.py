"""Llama-style decoders from a `transformers` config: RoPE, RMSNorm, SwiGLU, grouped-query attention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (hidden, layers, heads, kv heads, intermediate, context)
PRESETS: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny": (64, 2, 4, 2, 176, 256),  # a few hundred thousand parameters: tests on a CPU
    "small": (768, 12, 12, 4, 3072, 1024),  # 128M with a 32k vocabulary (110M with 8k): one GPU
}


@dataclass(frozen=True)
class ModelSettings:
    preset: str = "tiny"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown model preset {self.preset!r}; presets: {', '.join(PRESETS)}")


def llama_config(preset: str, vocab_size: int, eos_id: int, pad_id: int) -> Any:
    """The `LlamaConfig` of a preset for a tokenizer's vocabulary."""
    from transformers import LlamaConfig

    hidden, layers, heads, kv_heads, intermediate, context = PRESETS[preset]
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,  # grouped-query attention
        intermediate_size=intermediate,  # SwiGLU MLP
        max_position_embeddings=context,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        hidden_act="silu",
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_token(config: Any, seq_len: int) -> float:
    """Training FLOPs per token (6N plus attention), as in the PaLM appendix, for MFU."""
    n = config.vocab_size * config.hidden_size + config.num_hidden_layers * (
        config.hidden_size * config.hidden_size * 2
        + 2 * config.hidden_size * (config.hidden_size // config.num_attention_heads) * config.num_key_value_heads
        + 3 * config.hidden_size * config.intermediate_size
    )
    return 6.0 * n + 12.0 * config.num_hidden_layers * config.hidden_size * seq_len


def next_token_loss(logits: Any, targets: Any) -> Any:
    """Mean cross-entropy of next-token logits (batch, seq, vocab) against targets (batch, seq), in fp32."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
