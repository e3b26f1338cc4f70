"""The `[serve]` and `[stream]` sections: plain dataclasses, so the config loads without FastAPI."""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeSettings:
    """The `[serve]` section."""

    host: str = "127.0.0.1"
    port: int = 8000
    # One key per line; required to bind any address but loopback, enforced whenever set.
    api_keys_file: str = ""
    # Consent purposes of a request that names a user but states none (`metadata.consent`).
    default_consent: tuple[str, ...] = ()
    max_body_bytes: int = 1024 * 1024
    max_prompt_tokens: int = 4096
    max_tokens: int = 512  # the most a request may ask for
    max_n: int = 4
    roll_bytes: int = 16 * 1024 * 1024
    roll_seconds: float = 60.0
    # Off only to measure what durability costs; events can then be lost.
    durable: bool = True
    # With --model NAME@ALIAS: how often the alias is resolved again (a promotion is served after at most this)
    model_refresh_seconds: float = 15.0


@dataclass(frozen=True)
class StreamSettings:
    """The `[stream]` section: how `millpond stream interactions` reads the landing folder."""

    trigger: str = "30s"  # processing-time trigger of a long-running stream
    max_files_per_trigger: int = 64
    # A landing line longer than this is quarantined as too_large.
    max_event_bytes: int = 4 * 1024 * 1024
