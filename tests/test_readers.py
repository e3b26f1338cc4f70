"""Each reader on bad input: the reason, the location, and the good records around it kept."""

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from ingestion.manifest import FileTask, Source
from ingestion.python_env import distribution_license, python_env_files
from ingestion.readers import Bad, ReaderParams, Reason, Record, read_file

PARAMS = ReaderParams(max_record_bytes=200)


def task(path: Path, fmt: str = "jsonl", **source: object) -> FileTask:
    src = Source(name="s", format=fmt, path=str(path.parent), **source)  # type: ignore[arg-type]
    return FileTask(source=src, path=str(path), relpath=path.name, size=path.stat().st_size if path.exists() else 0)


def outcomes(items: list[object]) -> list[tuple[str, str]]:
    return [("ok", i.locator) if isinstance(i, Record) else (i.reason, i.locator) for i in items]  # type: ignore[union-attr]


def test_jsonl_every_bad_line_kind_and_good_lines_kept(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"text": "first good"}).encode(),
        b'{"text": "cut',
        b'{"text": "bad \xff\xfe bytes"}',
        json.dumps({"body": "no text field"}).encode(),
        json.dumps({"text": "   "}).encode(),
        json.dumps({"text": 42}).encode(),
        b"[1, 2, 3]",
        json.dumps({"text": "x" * 500}).encode(),
        b"",
        json.dumps({"text": "last good", "url": "https://e.x/1"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    got = outcomes(list(read_file(task(path), PARAMS)))
    assert got == [
        ("ok", "mixed.jsonl:1"),
        (Reason.MALFORMED_JSON, "mixed.jsonl:2"),
        (Reason.INVALID_UTF8, "mixed.jsonl:3"),
        (Reason.MISSING_TEXT, "mixed.jsonl:4"),
        (Reason.EMPTY_TEXT, "mixed.jsonl:5"),
        (Reason.NON_STRING_TEXT, "mixed.jsonl:6"),
        (Reason.NOT_AN_OBJECT, "mixed.jsonl:7"),
        (Reason.RECORD_TOO_LARGE, "mixed.jsonl:8"),
        ("ok", "mixed.jsonl:10"),
    ]


def test_jsonl_byte_offsets_point_at_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "a"}\n{oops\n')
    bad = [i for i in read_file(task(path), PARAMS) if isinstance(i, Bad)][0]
    raw = path.read_bytes()
    assert raw[bad.byte_offset : bad.byte_offset + bad.byte_length] == b"{oops"


def test_oversized_line_is_skipped_without_losing_the_next(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"text": "y" * 5000}) + "\n" + json.dumps({"text": "after"}) + "\n")
    items = list(read_file(task(path), PARAMS))
    assert outcomes(items) == [(Reason.RECORD_TOO_LARGE, "big.jsonl:1"), ("ok", "big.jsonl:2")]
    assert items[0].byte_length > 5000  # type: ignore[union-attr]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_compressed_file_keeps_what_precedes_the_damage(tmp_path: Path, suffix: str) -> None:
    rng = random.Random(7)  # incompressible enough to span several compressed blocks
    payload = b"".join(
        json.dumps({"text": " ".join(str(rng.random()) for _ in range(12))}).encode() + b"\n" for i in range(4000)
    )
    packed = gzip.compress(payload) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(payload)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(packed[: len(packed) // 2])
    items = list(read_file(task(path), ReaderParams()))
    good = [i for i in items if isinstance(i, Record)]
    assert 0 < len(good) < 4000
    assert [i.text for i in good] == [json.loads(line)["text"] for line in payload.splitlines()[: len(good)]]
    assert isinstance(items[-1], Bad) and items[-1].reason == Reason.CORRUPT_FILE
    assert items[-1].locator == f"cut{suffix}:{len(good) + 1}"


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert outcomes(list(read_file(task(empty), PARAMS))) == [(Reason.EMPTY_FILE, "empty.jsonl")]
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n\n  \n")
    assert outcomes(list(read_file(task(blank), PARAMS))) == [(Reason.EMPTY_FILE, "blank.jsonl")]
    dangling = tmp_path / "gone.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")
    assert outcomes(list(read_file(task(dangling), PARAMS))) == [(Reason.UNREADABLE_FILE, "gone.jsonl")]
    not_gzip = tmp_path / "fake.jsonl.gz"
    not_gzip.write_bytes(b'{"text": "plain, not gzip"}\n')
    assert [r for r, _ in outcomes(list(read_file(task(not_gzip), PARAMS)))] == [Reason.CORRUPT_FILE]


def test_id_field_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    path.write_text(json.dumps({"id": 7, "text": "a"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    items = list(read_file(task(path, id_field="id"), PARAMS))
    assert isinstance(items[0], Record) and items[0].record_key == "7"
    assert isinstance(items[1], Bad) and items[1].reason == Reason.MISSING_ID


def test_parquet_rows_and_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["one", None, "", "four"], "n": [1, 2, 3, 4]}), path)
    got = outcomes(list(read_file(task(path, "parquet"), PARAMS)))
    assert got == [
        ("ok", "p.parquet#row=0"),
        (Reason.MISSING_TEXT, "p.parquet#row=1"),
        (Reason.EMPTY_TEXT, "p.parquet#row=2"),
        ("ok", "p.parquet#row=3"),
    ]
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet at all")
    assert [r for r, _ in outcomes(list(read_file(task(junk, "parquet"), PARAMS)))] == [Reason.CORRUPT_FILE]


def test_text_and_html_files(tmp_path: Path) -> None:
    good = tmp_path / "a.txt"
    good.write_text("plain document\n")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert outcomes(list(read_file(task(good, "text"), PARAMS))) == [("ok", "a.txt")]
    assert outcomes(list(read_file(task(binary, "text"), PARAMS))) == [(Reason.INVALID_UTF8, "b.txt")]
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>T</title></head><body><nav>Home | About</nav><article><h1>Heading</h1>"
        + "<p>"
        + "The main story of this page is told in this paragraph. " * 6
        + "</p></article>"
        + "<footer>Copyright</footer></body></html>"
    )
    items = list(read_file(task(page, "html"), ReaderParams()))
    assert isinstance(items[0], Record)
    assert "main story" in items[0].text and "Home | About" not in items[0].text
    nav_only = tmp_path / "nav.html"
    nav_only.write_text("<html><body></body></html>")
    assert [r for r, _ in outcomes(list(read_file(task(nav_only, "html"), ReaderParams())))] == [Reason.EMPTY_TEXT]


class _Meta(dict):
    def get_all(self, key: str) -> list[str] | None:
        value = self.get(key)
        return value if isinstance(value, list) else None


def test_distribution_licenses_become_spdx() -> None:
    assert distribution_license(_Meta({"License-Expression": "MIT OR Apache-2.0"})) == "MIT OR Apache-2.0"
    assert distribution_license(_Meta({"License": "Apache License 2.0"})) == "Apache-2.0"
    assert distribution_license(_Meta({"License": "BSD-3-Clause"})) == "BSD-3-Clause"
    classifiers = ["License :: OSI Approved :: MIT License", "License :: OSI Approved :: Apache Software License"]
    assert distribution_license(_Meta({"License": "Dual License", "Classifier": classifiers})) == "MIT OR Apache-2.0"
    assert distribution_license(_Meta({"License": "see LICENSE.txt for the full text"})) is None


def test_python_env_corpus_is_license_tagged() -> None:
    tasks = python_env_files(Source(name="py", format="python-env", include=("click",)))
    assert tasks and all(t.inherited_license == "BSD-3-Clause" for t in tasks)
    assert any(t.relpath == "click/click/core.py" for t in tasks)
    assert any(t.relpath == "click/METADATA" for t in tasks)
    with pytest.raises(ValueError, match="no installed distribution"):
        python_env_files(Source(name="py", format="python-env", include=("no-such-dist-*",)))


def test_python_env_corpus_is_the_same_from_every_clone(tmp_path: Path) -> None:
    """Installed editable, millpond's import hook names the clone's folder: as the `millpond`
    command sees the environment (from another folder), that file is not part of the corpus."""
    listing = (
        "import json; from ingestion.manifest import Source; from ingestion.python_env import python_env_files; "
        "print(json.dumps([t.path for t in python_env_files(Source(name='py', format='python-env', "
        "include=('millpond',)))]))"
    )
    found = subprocess.run([sys.executable, "-P", "-c", listing], cwd=tmp_path, capture_output=True, text=True,
                           check=True)  # fmt: skip
    paths = json.loads(found.stdout)
    clone = str(Path(__file__).resolve().parents[1])
    assert paths and not [p for p in paths if "__editable__" in p]
    assert not [p for p in paths if clone in Path(p).read_text(encoding="utf-8", errors="replace")]


def test_concatenated_zstd_frames_read_whole(tmp_path: Path) -> None:
    compressor = zstandard.ZstdCompressor()
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(b"".join(compressor.compress(json.dumps({"text": f"t{i}"}).encode() + b"\n") for i in range(5)))
    assert [i.text for i in read_file(task(path), PARAMS)] == [f"t{i}" for i in range(5)]  # type: ignore[union-attr]


def test_byte_ranges_of_a_large_file_read_like_the_whole_file(tmp_path: Path) -> None:
    from dataclasses import replace

    from ingestion.readers import count_newlines, first_line_numbers

    rng = random.Random(5)
    lines = [json.dumps({"text": "r" * rng.randint(1, 300)}) for _ in range(500)]
    lines[37] = "{broken"
    lines[200] = ""
    lines[201] = json.dumps({"text": "z" * 900})  # longer than the range size below
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines) + "\n")
    whole = task(path)
    expected = [(type(i).__name__, i.locator, i.byte_offset) for i in read_file(whole, ReaderParams(2000))]
    for step in (1, 7, 256, 999, 5000):
        starts = list(range(0, whole.size, step))
        ends = [min(s + step, whole.size) for s in starts]
        counts = [count_newlines(str(path), s, e) for s, e in zip(starts, ends, strict=True)]
        got = []
        for start, end, first in zip(starts, ends, first_line_numbers(starts, counts), strict=True):
            piece = replace(whole, start=start, end=end, first_line=first)
            got += [(type(i).__name__, i.locator, i.byte_offset) for i in read_file(piece, ReaderParams(2000))]
        assert got == expected, step
