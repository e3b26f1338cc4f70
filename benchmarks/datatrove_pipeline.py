"""DataTrove's side of `python -m benchmarks pipeline`: run with the Python of a virtualenv that
has `datatrove[processing]` (its pins differ from ours, so it is not in millpond's environment).

    .cache/datatrove-venv/bin/python benchmarks/datatrove_pipeline.py --input DIR --work DIR \
        --lid-model lid.176.ftz --tasks 2

The stages DataTrove has, set to millpond's thresholds: JSONL reader, fastText language ID
(the same lid.176 model, English at 0.5), Gopher repetition and quality filters (their defaults
are millpond's `_GOPHER` rules), the lorem-ipsum check of the C4 filter (the only C4 rule in
millpond's `prose` rules), the PII formatter (e-mail and IP addresses), then MinHash dedup in
its four steps with millpond's settings (word 5-grams, 14 bands of 9 hashes). Prints one JSON
object: seconds per step, documents in and out, and the drops per filter and reason from
DataTrove's own stats.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def local_lid(path: str, languages: list[str]) -> Any:
    """DataTrove's fastText LID reading a model file on disk (it would download lid.176.bin)."""
    from datatrove.utils.lid import FT176LID

    class LocalFT176(FT176LID):
        @property
        def model(self) -> Any:
            if self._model is None:
                from fasttext.FastText import _FastText

                self._model = _FastText(path)
            return self._model

    return LocalFT176(languages)


def stats(folder: Path) -> list[dict[str, Any]]:
    """Per pipeline step: its name and the counters DataTrove kept (dropped, per reason, ...)."""
    merged = folder / "stats.json"
    if not merged.is_file():
        return []
    out = []
    for step in json.loads(merged.read_text()):
        counters = {k: (v.get("total") if isinstance(v, dict) else v) for k, v in step.get("stats", {}).items()}
        timing = step.get("time_stats") or {}
        seconds = timing.get("total") if isinstance(timing, dict) else None  # summed over tasks: CPU seconds
        out.append({"name": step.get("name"), "stats": counters, "cpu_seconds": seconds})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="folder of JSONL files (id, text)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--lid-model", required=True)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--language-threshold", type=float, default=0.5)
    args = parser.parse_args()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    work = args.work
    language = LanguageFilter(languages=["en"], language_threshold=args.language_threshold)
    language.model = local_lid(args.lid_model, ["en"])
    lorem_only = C4QualityFilter(
        split_paragraph=True,
        remove_citations=False,
        filter_no_terminal_punct=False,
        min_num_sentences=-1,
        min_words_per_line=-1,
        max_word_length=-1,
        filter_lorem_ipsum=True,
        filter_javascript=False,
        filter_curly_bracket=False,
        filter_policy=False,
    )
    minhash = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=9, seed=1)
    steps: dict[str, tuple[list[Any], int]] = {
        "filters": (
            [
                JsonlReader(str(args.input), text_key="text", id_key="id", glob_pattern="*.jsonl"),
                language,
                GopherRepetitionFilter(),
                GopherQualityFilter(),
                lorem_only,
                PIIFormatter(),
                JsonlWriter(str(work / "filtered"), compression=None),
            ],
            args.tasks,
        ),
        "minhash_signatures": (
            [
                JsonlReader(str(work / "filtered"), glob_pattern="*.jsonl"),
                MinhashDedupSignature(output_folder=str(work / "signatures"), config=minhash),
            ],
            args.tasks,
        ),
        "minhash_buckets": (
            [
                MinhashDedupBuckets(
                    input_folder=str(work / "signatures"), output_folder=str(work / "buckets"), config=minhash
                )
            ],
            minhash.num_buckets,
        ),
        "minhash_cluster": (
            [
                MinhashDedupCluster(
                    input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"), config=minhash
                )
            ],
            1,
        ),
        "minhash_filter": (
            [
                JsonlReader(str(work / "filtered"), glob_pattern="*.jsonl"),
                MinhashDedupFilter(input_folder=str(work / "remove_ids")),
                JsonlWriter(str(work / "deduplicated"), compression=None),
            ],
            args.tasks,
        ),
    }
    result: dict[str, Any] = {"steps": {}}
    for name, (pipeline, tasks) in steps.items():
        logs = work / "logs" / name
        executor = LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=args.tasks, logging_dir=str(logs))
        start = time.perf_counter()
        executor.run()
        result["steps"][name] = {"seconds": round(time.perf_counter() - start, 2), "stats": stats(logs)}
    result["seconds"] = round(sum(s["seconds"] for s in result["steps"].values()), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
