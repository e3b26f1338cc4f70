"""`python -m benchmarks ingest|curate [options]`: see each module's docstring and the README."""

from __future__ import annotations

import sys

BENCHMARKS = (
    "ingest", "curate", "fuzzy", "pii", "pii-structured", "pipeline", "train", "lineage", "serve", "stream", "dpo", "gpu",
)  # fmt: skip
USAGE = f"usage: python -m benchmarks {{{','.join(BENCHMARKS)}}} [--help]"


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        sys.exit(USAGE)
    name, rest = sys.argv[1], sys.argv[2:]
    if name == "ingest":
        from benchmarks.ingest import main as run
    elif name == "train":
        from benchmarks.train import main as run
    elif name == "pii":
        from benchmarks.pii import main as run
    elif name == "pii-structured":
        from benchmarks.pii_structured import main as run
    elif name == "lineage":
        from benchmarks.lineage import main as run
    elif name == "serve":
        from benchmarks.serve import main as run
    elif name == "stream":
        from benchmarks.stream import main as run
    elif name == "dpo":
        from benchmarks.dpo import main as run
    elif name == "gpu":
        from benchmarks.gpu import main as run
    elif name == "pipeline":
        from benchmarks.pipeline import main as run
    elif name == "fuzzy":
        from benchmarks.fuzzy import main as run
    else:
        from benchmarks.curate import main as run
    run(rest)


if __name__ == "__main__":
    main()
