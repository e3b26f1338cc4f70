"""Arrow's block parser gives exactly what the line reader gives, on every kind of line."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from ingestion.bronze import IngestParams, read_bucket
from ingestion.jsonl_blocks import RecordBlock, read_jsonl_blocks
from ingestion.manifest import FileTask, Source
from ingestion.readers import Bad, ReaderParams, Record, read_jsonl

PARAMS = ReaderParams(max_record_bytes=300)

GOOD = [
    {"text": "plain record", "url": "https://example.org/1", "n": 7, "ok": True},
    {"text": "a timestamp Arrow would guess", "date": "2020-01-01T00:00:00", "day": "2020-01-02"},
    {"text": "nulls are left out", "url": None, "n": -3},
    {"text": "unicode: café, 東京, \u0000 and \U0001f600", "ü": "ß"},
    {"id": 5, "text": "an integer id"},
    {"text": "  padded  ", "license": " MIT ", "email": ["Ann@Example.org", " ", "b@c.org"]},
    {"text": "no license", "license": "  ", "email": None},
]

# Lines the line reader quarantines, skips or reads differently: each must come out the same.
ODD = [
    b"",
    b"   \t ",
    b"\x0b",
    b'{"text": "cut',
    b'{"text": "bad \xff bytes"}',
    b'{"body": "no text"}',
    b'{"text": "   "}',
    b'{"text": "\\u2003\\u00a0"}',
    b'{"text": "\\u001c"}',
    b'{"text": 42}',
    b'{"text": null}',
    b"[1, 2]",
    b'{"text": "two"}{"text": "objects"}',
    b'{"text": "dup", "text": "keys"}',
    b'{"text": "nan", "score": NaN}',
    b'{"text": "float", "score": 1.5}',
    b'{"text": "nested", "meta": {"a": [1, 2]}}',
    b'{"text": "a list", "tags": ["x", "y"]}',
    b'{"text": "big", "n": 123456789012345678901234567890}',
    b'{"text": "carriage return"}\r',
    b'{"text": "' + b"x" * 400 + b'"}',
    b'{"text": "lone surrogate \\ud800"}',
    b'{"id": "", "text": "empty id"}',
    b'{"id": [1], "text": "list id"}',
    b'{"text": "subjects", "email": ["a@b.org", 3, true, null], "license": 4}',
]


def write(path: Path, lines: list[bytes], compress: bool = False) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    if compress:
        path = path.with_name(path.name + ".gz")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def task(path: Path, **source: object) -> FileTask:
    """A `jsonl` source whose records name their subjects and license (as GOOD's do)."""
    fields: dict[str, object] = {"subject_fields": ("email",), "license_field": "license"} | source
    src = Source(name="s", format="jsonl", path=str(path.parent), **fields)  # type: ignore[arg-type]
    return FileTask(source=src, path=str(path), relpath=path.name, size=path.stat().st_size)


def good_lines(count: int, start: int = 0) -> list[bytes]:
    return [json.dumps(GOOD[i % len(GOOD)] | {"i": i}).encode() for i in range(start, start + count)]


def expanded(items: list[RecordBlock | Record | Bad]) -> list[tuple[object, ...]]:
    """Blocks row by row, in the shape the line reader's items have."""
    out: list[tuple[object, ...]] = []
    for item in items:
        if isinstance(item, RecordBlock):
            texts = item.table.column("text").to_pylist()
            for line, offset, length, text in zip(
                item.line_numbers, item.byte_offsets, item.byte_lengths, texts, strict=True
            ):
                out.append(("ok", line, text, int(offset), int(length)))
        elif isinstance(item, Record):
            out.append(("ok", int(item.locator.rsplit(":", 1)[1]), item.text, item.byte_offset, item.byte_length))
        else:
            out.append((item.reason, item.locator, item.detail, item.byte_offset, item.byte_length))
    return out


item_path = "f.jsonl"  # written gzip-compressed as f.jsonl.gz


@pytest.mark.parametrize("block_bytes", [64, 1000, 8 << 20])
@pytest.mark.parametrize("compress", [False, True])
def test_blocks_give_the_line_reader_s_items_whatever_the_block_size(
    tmp_path: Path, block_bytes: int, compress: bool
) -> None:
    lines = good_lines(40)
    for i, odd in enumerate(ODD):
        lines.insert(1 + i * 3, odd)
    path = write(tmp_path / item_path, [b"\xef\xbb\xbf" + lines[0], *lines[1:]], compress)
    t = task(path, id_field=None)
    assert expanded(list(read_jsonl_blocks(t, PARAMS, block_bytes))) == expanded(list(read_jsonl(t, PARAMS)))


def test_clean_files_are_read_as_blocks_and_bad_blocks_line_by_line(tmp_path: Path) -> None:
    lines = good_lines(200)
    lines[150] = b'{"text": 1}'
    t = task(write(tmp_path / item_path, lines))
    items = list(read_jsonl_blocks(t, PARAMS, block_bytes=4096))
    blocks = [i for i in items if isinstance(i, RecordBlock)]
    # only the block holding the bad line (4 KB: at most 4096 // 42 lines) is read line by line
    assert sum(b.rows for b in blocks) >= 199 - 4096 // 42
    assert [i.reason for i in items if isinstance(i, Bad)] == ["non_string_text"]
    assert expanded(items) == expanded(list(read_jsonl(t, PARAMS)))


def test_byte_ranges_read_each_line_once(tmp_path: Path) -> None:
    path = write(tmp_path / item_path, good_lines(300))
    size = path.stat().st_size
    whole = expanded(list(read_jsonl(task(path), PARAMS)))
    for range_bytes in (997, 4096, 20000):
        pieces = []
        for start in range(0, size, range_bytes):
            # the line numbers a range starts at come from a newline count (see split_large_files)
            first_line = path.read_bytes()[: max(start - 1, 0)].count(b"\n") + (2 if start else 1)
            ranged = FileTask(
                **{
                    **task(path).__dict__,
                    "start": start,
                    "end": min(start + range_bytes, size),
                    "first_line": first_line,
                }
            )
            blocks = expanded(list(read_jsonl_blocks(ranged, PARAMS, block_bytes=1500)))
            assert blocks == expanded(list(read_jsonl(ranged, PARAMS)))
            pieces += blocks
        assert pieces == whole


def test_a_cut_gzip_file_is_read_up_to_the_damage(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in good_lines(3000)))[:-200])
    t = task(path)
    items = list(read_jsonl_blocks(t, PARAMS, block_bytes=4096))
    assert isinstance(items[-1], Bad) and items[-1].reason == "corrupt_file"
    assert expanded(items) == expanded(list(read_jsonl(t, PARAMS)))


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_an_empty_file_is_quarantined_as_the_line_reader_does(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / item_path
    path.write_bytes(content)
    t = task(path)
    assert expanded(list(read_jsonl_blocks(t, PARAMS))) == expanded(list(read_jsonl(t, PARAMS)))


def rows(batches: list[pa.RecordBatch]) -> list[dict[str, object]]:
    table = pa.Table.from_batches(batches)
    return sorted(table.to_pylist(), key=lambda r: (r["file_index"], r["seq"]))


@pytest.mark.parametrize(
    ("source", "in_blocks"),
    [
        ({}, True),
        ({"id_field": "i"}, True),
        ({"license": "CC0-1.0", "consent": ("pretraining",), "domain": "web", "license_field": None}, True),
        ({"subject_fields": ()}, False),  # email lists are then metadata, which only the line reader writes
    ],
)
def test_bronze_rows_from_blocks_equal_the_line_reader_s(
    tmp_path: Path, source: dict[str, object], in_blocks: bool
) -> None:
    clean = write(tmp_path / "clean.jsonl", good_lines(120))
    odd = write(tmp_path / "odd.jsonl", good_lines(30) + ODD + good_lines(30, start=30))
    metadata = (("shard", "7"), ("url", "from the file"))
    tasks = [(i, FileTask(**{**task(p, **source).__dict__, "metadata": metadata})) for i, p in enumerate([clean, odd])]
    assert any(isinstance(i, RecordBlock) for i in read_jsonl_blocks(tasks[0][1], PARAMS)) == in_blocks
    fast = rows(list(read_bucket(tasks, IngestParams(max_record_bytes=300))))
    slow = rows(list(read_bucket(tasks, IngestParams(max_record_bytes=300, arrow_jsonl=False))))
    assert fast == slow
    assert sum(r["kind"] == "document" for r in fast) >= 180
