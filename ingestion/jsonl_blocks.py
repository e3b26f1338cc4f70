"""JSON Lines a block at a time: Arrow's JSON parser reads megabytes of lines in one call, in C++.

The line-by-line reader (`ingestion.readers.read_jsonl`) spends about 13 microseconds of Python
on every record; Arrow parses a block of thousands in a fraction of that. The parser is only
trusted where it gives exactly what the line reader would: a block is kept when every line in
it is a readable record (one JSON object per line, valid UTF-8, a non-blank string text, an id
where the source wants one, no record over `max_record_bytes`) and every field the bronze row
keeps is of a type whose text the line reader would write the same way (strings, integers,
booleans; timestamps Arrow guessed are parsed again as strings). Any other block, and whatever
follows a read error, is read again by the line reader, so quarantine reasons, locators and
byte offsets stay what they were. `tests/test_jsonl_blocks.py` compares both on every kind of
line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from ingestion.manifest import FileTask
from ingestion.readers import (
    BOM,
    Item,
    LineCursor,
    ReaderParams,
    _corruption_errors,
    _open_stream,
    _skip_to_line_start,
    empty_file,
    read_jsonl_from,
    read_jsonl_lines,
)

BLOCK_BYTES = 8 << 20

# str.strip()'s whitespace: a text of only these is empty
_PYTHON_SPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
_BLANK_TEXT = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PYTHON_SPACE) + "]*$"


@dataclass(frozen=True)
class RecordBlock:
    """Consecutive records of one file, parsed column by column: row i is the object on line
    `line_numbers[i]`, whose content (without the line end) is `byte_lengths[i]` bytes from
    `byte_offsets[i]` of the (decompressed) file."""

    table: pa.Table
    line_numbers: np.ndarray
    byte_offsets: np.ndarray
    byte_lengths: np.ndarray

    @property
    def rows(self) -> int:
        return self.table.num_rows


def block_readable(task: FileTask) -> bool:
    """Plain `jsonl` sources: preference and sft records are shaped by the line reader."""
    return task.source.format == "jsonl"


def read_jsonl_blocks(
    task: FileTask, params: ReaderParams, block_bytes: int = BLOCK_BYTES
) -> Iterator[RecordBlock | Item]:
    """The records of a JSON Lines file (or of its byte range) as `RecordBlock`s where Arrow can
    vouch for a whole block, as the line reader's items elsewhere; together, in file order,
    exactly the line reader's records and quarantine entries."""
    try:
        stream = _open_stream(task.path)
    except OSError:
        yield from read_jsonl_from(task, params, LineCursor.at_start_of(task))
        return
    cursor = LineCursor.at_start_of(task)
    handed_over = False
    as_strings: set[str] = set()
    with stream:
        try:
            if task.start > 0:
                cursor.offset += _skip_to_line_start(stream, task.start)
            pending = b""
            while True:
                chunk = stream.read(block_bytes)
                data = pending + chunk if pending else chunk
                if not data:
                    break
                cut = data.rfind(b"\n") + 1 if chunk else len(data)
                if cut == 0:  # a line longer than a block: the line reader skips it without holding it
                    handed_over = True
                    break
                block, pending = data[:cut], data[cut:]
                block, finished = _within_range(task, cursor, block)
                parsed = _parse_block(task, params, cursor, block, as_strings)
                if parsed is None:
                    yield from read_jsonl_lines(task, params, BytesIO(block), cursor)
                else:
                    yield parsed
                if finished or not chunk:
                    break
        except _corruption_errors():
            handed_over = True  # the line reader reads up to the damage and says where it is
    if handed_over:
        yield from read_jsonl_from(task, params, cursor)
    else:
        yield from empty_file(task, cursor)


def _within_range(task: FileTask, cursor: LineCursor, block: bytes) -> tuple[bytes, bool]:
    """The block's lines that start before the task's byte range ends, and whether the range
    ends in this block (its last line is read to its end, past the range if need be)."""
    if task.end is None:
        return block, False
    end = task.end - cursor.offset  # where the range ends, in the block
    if end <= 0:
        return b"", True
    if len(block) < end:
        return block, False
    last_line_end = block.find(b"\n", end - 1)
    return (block if last_line_end < 0 else block[: last_line_end + 1]), True


def _line_spans(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (before the line end) of every line of a block of whole lines."""
    ends = np.flatnonzero(data == 10)
    if len(data) and data[-1] != 10:
        ends = np.append(ends, len(data))
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    ends = ends.copy()
    while True:  # rstrip(b"\r\n"): carriage returns before the line end are not content
        strip = (ends > starts) & (data[np.maximum(ends - 1, 0)] == 13)
        if not strip.any():
            return starts, ends
        ends[strip] -= 1


def _parse_block(
    task: FileTask, params: ReaderParams, cursor: LineCursor, block: bytes, as_strings: set[str]
) -> RecordBlock | None:
    """The block as records, advancing `cursor`, or None (and `cursor` untouched) when the line
    reader must read it. `as_strings`: the file's fields Arrow took for times (see
    `_parse_as_written`)."""
    if not block or (cursor.line_no == 0 and block.startswith(BOM)):
        return None
    data = np.frombuffer(block, dtype=np.uint8)
    starts, ends = _line_spans(data)
    lengths = ends - starts
    # a line that starts with "{" is not blank; the few others are looked at one by one
    records = (lengths > 0) & (data[np.minimum(starts, len(data) - 1)] == ord("{"))
    for line in np.flatnonzero(~records & (lengths > 0)).tolist():
        records[line] = bool(block[starts[line] : ends[line]].strip())
    if not records.any() or int(lengths[records].max()) > params.max_record_bytes:
        return None
    table = _parse_as_written(block, as_strings)
    if table is None or table.num_rows != int(records.sum()) or not _all_records(task, table):
        return None
    line_numbers = cursor.line_no + 1 + np.flatnonzero(records)
    parsed = RecordBlock(
        table=table,
        line_numbers=line_numbers,
        byte_offsets=cursor.offset + starts[records],
        byte_lengths=lengths[records],
    )
    cursor.line_no += len(starts)
    cursor.offset += len(block)
    cursor.records += parsed.rows
    return parsed


def _parse_as_written(block: bytes, as_strings: set[str]) -> pa.Table | None:
    """The block parsed, with the strings Arrow would read as times (`2020-01-01`) kept as
    written, as the line reader keeps them. The fields found so are remembered in `as_strings`,
    so that the file's next blocks are parsed once rather than twice."""
    if as_strings:
        table = _parse(block, _strings(as_strings))
        if table is not None and not _times(table):
            return table
    table = _parse(block)
    guessed = _times(table) if table is not None else set()
    if not guessed:
        return table
    as_strings.update(guessed)
    return _parse(block, _strings(guessed))


def _times(table: pa.Table) -> set[str]:
    return {f.name for f in table.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)}


def _strings(names: set[str]) -> pa.Schema:
    return pa.schema([(name, pa.string()) for name in sorted(names)])


def _parse(block: bytes, strings: pa.Schema | None = None) -> pa.Table | None:
    options = pajson.ReadOptions(use_threads=False, block_size=len(block) + 1)
    parse = pajson.ParseOptions(explicit_schema=strings, unexpected_field_behavior="infer") if strings else None
    try:
        return pajson.read_json(BytesIO(block), read_options=options, parse_options=parse)
    except (pa.ArrowException, ValueError):  # malformed JSON, invalid UTF-8 (a ValueError), not objects
        return None


def _scalar(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_int64(t) or pa.types.is_boolean(t) or pa.types.is_null(t)


def _all_records(task: FileTask, table: pa.Table) -> bool:
    """Whether the line reader would take every row as a record and write each kept field as
    Arrow holds it (orjson writes an integer or a boolean as Arrow casts it to a string)."""
    source = task.source
    names = set(table.column_names)
    if source.text_field not in names:
        return False
    text = table.column(source.text_field)
    if not pa.types.is_string(text.type) or text.null_count:
        return False
    if pc.any(pc.match_substring_regex(text, _BLANK_TEXT)).as_py():
        return False
    if source.id_field:
        if source.id_field not in names:
            return False
        ids = table.column(source.id_field)
        if not _scalar(ids.type) or pa.types.is_null(ids.type) or ids.null_count:
            return False
        if pa.types.is_string(ids.type) and pc.any(pc.equal(ids, "")).as_py():
            return False
    subjects = set(source.subject_fields)
    for field in table.schema:
        if field.name in subjects:
            kind = field.type.value_type if pa.types.is_list(field.type) else field.type
            if not _scalar(kind):
                return False
        elif field.name not in (source.text_field, source.id_field, source.license_field) and not _scalar(field.type):
            return False
    return True
