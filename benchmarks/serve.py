"""`millpond serve` under load: requests/s and latency with durable landing on and off.

The `tiny` preset (untrained: the answers do not matter, the work per token does) is registered
in a fresh lakehouse and served twice per mode, alternating, by a real `millpond serve`
process on 127.0.0.1: `[serve] durable = true` (every answer waits for its events' fsync, group
commit) and `false` (events written, not fsynced). 8 client threads each send chat completions
back to back (max_tokens 16, a fixed seed); the faster run of each mode counts.

    python -m benchmarks serve --requests 800 --clients 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = "millpond-bench-served"
TEXTS = [
    "The river that feeds the mill pond rises in the hills to the north of the village.",
    "Every spring the water level climbs and the old wheel turns faster than it has all year.",
    "The miller keeps a careful record of the flour he grinds and of the farmers who bring their grain.",
] * 50


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(lakehouse: Path, durable: bool) -> tuple[subprocess.Popen[bytes], str]:
    config = lakehouse.parent / f"serve-{durable}.toml"
    config.write_text(f"[serve]\ndurable = {str(durable).lower()}\nmax_tokens = 64\n")
    port = _port()
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "--lakehouse", str(lakehouse), "--config", str(config), "serve",
         "--model", NAME, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            return process, url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("millpond serve did not come up")


def _load(url: str, requests: int, clients: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    per_client = requests // clients

    def client(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(per_client):
                body = {"messages": [{"role": "user", "content": f"Tell me about the mill, {worker} {i}."}],
                        "max_tokens": 16, "seed": i, "user": f"u-{worker}"}  # fmt: skip
                started = time.perf_counter()
                answer = http.post("/v1/chat/completions", json=body)
                answer.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000, 1),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks serve", description=__doc__)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    from serving.smoke import register_untrained_model

    with tempfile.TemporaryDirectory() as tmp:
        lakehouse = Path(tmp) / "lakehouse"
        register_untrained_model(lakehouse, NAME, TEXTS)
        results: dict[str, list[dict[str, float]]] = {"durable": [], "not_durable": []}
        for _ in range(args.rounds):
            for durable in (True, False):
                process, url = _serve(lakehouse, durable)
                try:
                    _load(url, args.clients * 4, args.clients)  # warm-up
                    figures = _load(url, args.requests, args.clients)
                finally:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=60)
                results["durable" if durable else "not_durable"].append(figures)
                print(f"durable={durable}: {figures}", flush=True)
        events = sum(
            len(p.read_bytes().splitlines()) for p in (lakehouse / "_landing" / "interactions").glob("*.jsonl")
        )
    best = {mode: max(runs, key=lambda r: r["requests_per_s"]) for mode, runs in results.items()}
    cost = 1 - best["durable"]["requests_per_s"] / best["not_durable"]["requests_per_s"]
    summary = {
        "benchmark": "serve",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "clients": args.clients,
        "best": best,
        "runs": results,
        "durability_cost": round(cost, 4),
        "events_landed": events,
    }
    out = HERE / "results" / f"serve-{summary['date']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
