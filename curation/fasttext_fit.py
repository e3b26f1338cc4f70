"""One fastText supervised training, run as its own process: `python -m curation.fasttext_fit ARGS_JSON`.

fastText trains in native threads. When training diverges it raises "Encountered NaN", and
some builds abort the whole interpreter instead (`terminate called ...`). A caller holding a
Spark session or an MLflow run must not be taken down with it. A fresh interpreter also starts
from a clean state, whatever the caller has loaded before. This module imports nothing but
fastText, so it starts in a fraction of a second.

Exit status: 0 when the model was saved, `DIVERGED` when training hit NaN (the caller retries at
a lower learning rate), anything else on other errors (with fastText's message on stderr).
"""

from __future__ import annotations

import json
import sys

DIVERGED = 3


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    output = args.pop("output")
    import fasttext

    try:
        model = fasttext.train_supervised(**args)
    except RuntimeError as err:
        print(f"fastText: {err}", file=sys.stderr)
        return DIVERGED if "NaN" in str(err) else 1
    model.save_model(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
