"""`python -m benchmarks ingest|curate [options]`: see each module's docstring and the README."""

from __future__ import annotations

import sys

USAGE = "usage: python -m benchmarks {ingest,curate,fuzzy,pii,train,lineage} [--help]"


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("ingest", "curate", "fuzzy", "pii", "train", "lineage"):
        sys.exit(USAGE)
    name, rest = sys.argv[1], sys.argv[2:]
    if name == "ingest":
        from benchmarks.ingest import main as run
    elif name == "train":
        from benchmarks.train import main as run
    elif name == "pii":
        from benchmarks.pii import main as run
    elif name == "lineage":
        from benchmarks.lineage import main as run
    elif name == "fuzzy":
        from benchmarks.fuzzy import main as run
    else:
        from benchmarks.curate import main as run
    run(rest)


if __name__ == "__main__":
    main()
