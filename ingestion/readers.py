"""Format readers: one file in, records and quarantine entries out, in file order.

Pure Python and Spark-free, so each bad-input case is unit-testable; Spark runs them on its
executors (see `ingestion.bronze`). A reader never raises on bad input: it yields a `Bad`
with the reason and the location, and carries on with the rest of the file where it can.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from ingestion.manifest import PREFERENCE_FORMAT, SFT_FORMAT, FileTask


class Reason:
    """Why a record went to quarantine (the `reason` column)."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_UTF8 = "invalid_utf8"
    MISSING_TEXT = "missing_text"
    EMPTY_TEXT = "empty_text"
    NON_STRING_TEXT = "non_string_text"
    MISSING_ID = "missing_id"
    MISSING_REJECTED = "missing_rejected"  # preference-jsonl: no rejected dialogue beside the chosen one
    BAD_MESSAGES = "bad_messages"  # sft-jsonl: not a conversation of role/content messages ending with an answer
    DUPLICATE_RECORD_ID = "duplicate_record_id"
    RECORD_TOO_LARGE = "record_too_large"
    CORRUPT_FILE = "corrupt_file"
    UNREADABLE_FILE = "unreadable_file"
    EMPTY_FILE = "empty_file"


MAX_RECORD_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ReaderParams:
    """The `[ingest]` settings the readers obey."""

    max_record_bytes: int = MAX_RECORD_BYTES


class Record(NamedTuple):
    """A readable record: its text, its own id (if the source names an id field) and its fields."""

    locator: str
    text: str
    record_key: str | None
    fields: dict[str, Any]
    byte_offset: int | None
    byte_length: int | None


class Bad(NamedTuple):
    """A record or file that could not be read, and where it is."""

    reason: str
    detail: str
    locator: str
    byte_offset: int | None
    byte_length: int | None


Item = Record | Bad


class _ZstdReader(io.RawIOBase):
    """Decompresses zstd frames one after another and, unlike zstandard's stream_reader,
    raises on a stream that ends inside a frame (a cut file), so it cannot pass for a short one."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        import zstandard

        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = self._dctx.decompressobj()
        self._in_frame = False
        self._out = bytearray()
        self._pos = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._pos >= len(self._out) and not self._done:
            self._out, self._pos = bytearray(), 0
            chunk = self._raw.read(1 << 20)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ends inside a frame: the file is truncated")
                self._done = True
                break
            self._feed(chunk)
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _feed(self, data: bytes) -> None:
        while data:
            self._in_frame = True
            self._out += self._frame.decompress(data)
            if not self._frame.eof:
                return
            data = self._frame.unused_data
            self._frame = self._dctx.decompressobj()
            self._in_frame = False

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_stream(path: str) -> io.BufferedIOBase:
    lower = path.lower()
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller through the wrapper
    if lower.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if lower.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(raw), buffer_size=1 << 20)  # type: ignore[return-value]
    return raw  # type: ignore[return-value]


def _corruption_errors() -> tuple[type[BaseException], ...]:
    import zstandard

    return (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError, OSError)


def lookup_field(obj: dict[str, Any], field: str) -> tuple[bool, Any]:
    """A field by exact name, else by dotted path into nested objects."""
    if field in obj:
        return True, obj[field]
    current: Any = obj
    for part in field.split("."):
        if not isinstance(current, dict) or part not in current:
            return False, None
        current = current[part]
    return True, current


def record_from_object(
    task: FileTask, obj: Any, locator: str, byte_offset: int | None, byte_length: int | None
) -> Item:
    """Check one parsed object (a JSON line, a Parquet row) and turn it into a Record or a Bad."""
    source = task.source
    if not isinstance(obj, dict):
        return Bad(
            Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}", locator, byte_offset, byte_length
        )
    found, text = lookup_field(obj, source.text_field)
    if source.format == SFT_FORMAT and found and text is not None:
        text, problem = conversation_text(text)
        if problem:
            return Bad(Reason.BAD_MESSAGES, f"{source.text_field!r}: {problem}", locator, byte_offset, byte_length)
    if not found or text is None:
        return Bad(Reason.MISSING_TEXT, f"no {source.text_field!r} field", locator, byte_offset, byte_length)
    if not isinstance(text, str):
        return Bad(
            Reason.NON_STRING_TEXT,
            f"{source.text_field!r} is {type(text).__name__}, not a string",
            locator,
            byte_offset,
            byte_length,
        )
    if not text.strip():
        return Bad(Reason.EMPTY_TEXT, f"{source.text_field!r} is empty", locator, byte_offset, byte_length)
    if source.format == PREFERENCE_FORMAT:
        found, rejected = lookup_field(obj, source.rejected_field)
        if not found or not isinstance(rejected, str) or not rejected.strip():
            return Bad(
                Reason.MISSING_REJECTED,
                f"no {source.rejected_field!r} text beside {source.text_field!r}",
                locator,
                byte_offset,
                byte_length,
            )
    record_key = None
    if source.id_field:
        found, value = lookup_field(obj, source.id_field)
        if not found or value is None or value == "":
            return Bad(Reason.MISSING_ID, f"no {source.id_field!r} field", locator, byte_offset, byte_length)
        record_key = value if isinstance(value, str) else orjson.dumps(value).decode()
    return Record(locator, text, record_key, obj, byte_offset, byte_length)


def conversation_text(messages: Any) -> tuple[str | None, str | None]:
    """(an sft-jsonl record's conversation rendered with the chat template `millpond serve` and SFT
    use, what is wrong with it)."""
    from lineage.chat import ChatFormatError, render_conversation

    if not isinstance(messages, list) or not messages:
        return None, f"expected a list of messages, got {type(messages).__name__}"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return None, f"message {i} is not an object with text 'content'"
    try:
        return render_conversation(messages), None
    except ChatFormatError as err:
        return None, str(err)


def _skip_to_line_start(stream: io.BufferedIOBase, start: int) -> int:
    """Position `stream` at the first line that starts at or after `start`; bytes skipped past it."""
    stream.seek(start - 1)
    if stream.read(1) == b"\n":
        return 0
    skipped = 0
    while True:  # the rest of a line that belongs to the previous range
        chunk = stream.readline(1 << 20)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def count_newlines(path: str, start: int, end: int) -> int:
    """Line ends in bytes [start - 1, end - 1) of a file (from 0 for the first range).

    Summed over the ranges before a range, they number its first line: see `first_line_numbers`.
    """
    count = 0
    with open(path, "rb") as handle:
        handle.seek(max(start - 1, 0))
        remaining = end - 1 - max(start - 1, 0)
        while remaining > 0:
            chunk = handle.read(min(remaining, 8 << 20))
            if not chunk:
                break
            count += chunk.count(b"\n")
            remaining -= len(chunk)
    return count


def first_line_numbers(starts: list[int], newline_counts: list[int]) -> list[int]:
    """The number of the first line that starts in each consecutive byte range of one file.

    A range that does not start the file begins at the line after the first line end at or
    after `start - 1`; that line end is the only one past the counted prefix, hence the 2.
    """
    numbers, seen = [], 0
    for start, count in zip(starts, newline_counts, strict=True):
        numbers.append(1 if start == 0 else seen + 2)
        seen += count
    return numbers


@dataclass
class LineCursor:
    """Where a JSON Lines reader is: the byte offset of the next line in the (decompressed)
    stream, the number of the last line read, and the records (good or bad) yielded so far."""

    offset: int
    line_no: int
    records: int = 0

    @classmethod
    def at_start_of(cls, task: FileTask) -> LineCursor:
        return cls(offset=task.start, line_no=task.first_line - 1)


def read_jsonl(task: FileTask, params: ReaderParams) -> Iterator[Item]:
    """JSON Lines, plain or gzip/zstd compressed; locators are `relpath:line`.

    A task with a byte range reads the lines that start inside it (the last one to its end).
    """
    yield from read_jsonl_from(task, params, LineCursor.at_start_of(task))


def read_jsonl_from(task: FileTask, params: ReaderParams, cursor: LineCursor) -> Iterator[Item]:
    """The rest of a JSON Lines file from `cursor` (a line start, or the task's start), then the
    file's own problems: a cut or damaged stream, or no records at all."""
    try:
        stream = _open_stream(task.path)
    except OSError as err:
        yield Bad(Reason.UNREADABLE_FILE, f"{type(err).__name__}: {err.strerror or err}", task.relpath, None, None)
        return
    with stream:
        try:
            if cursor.offset == task.start and task.start > 0:
                cursor.offset += _skip_to_line_start(stream, task.start)
            else:
                _advance(stream, cursor.offset)
            yield from read_jsonl_lines(task, params, stream, cursor)
        except _corruption_errors() as err:
            yield corrupt_file(task, cursor, err)
    yield from empty_file(task, cursor)


def corrupt_file(task: FileTask, cursor: LineCursor, err: BaseException) -> Bad:
    cursor.records += 1
    return Bad(
        Reason.CORRUPT_FILE,
        f"{type(err).__name__}: {err} (the file is cut or damaged after line {cursor.line_no}; "
        f"{cursor.line_no} lines before it were read)",
        f"{task.relpath}:{cursor.line_no + 1}",
        cursor.offset,
        None,
    )


def empty_file(task: FileTask, cursor: LineCursor) -> Iterator[Bad]:
    if cursor.records == 0 and task.end is None:
        detail = "0 bytes" if cursor.offset == 0 else "no records, only blank lines"
        yield Bad(Reason.EMPTY_FILE, detail, task.relpath, 0, cursor.offset)


def _advance(stream: io.BufferedIOBase, offset: int) -> None:
    """Move a fresh stream to `offset` (a compressed stream decompresses its way there)."""
    if stream.seekable():
        stream.seek(offset)
        return
    while offset > 0:
        skipped = len(stream.read(min(offset, 8 << 20)))
        if not skipped:
            return
        offset -= skipped


def read_jsonl_lines(
    task: FileTask, params: ReaderParams, stream: io.BufferedIOBase, cursor: LineCursor
) -> Iterator[Item]:
    """Line by line from `stream`, which stands at `cursor`: to its end, or for a task with a
    byte range until a line starts at or past the range's end. Advances `cursor`."""
    limit = params.max_record_bytes
    ranged = task.end is not None
    while not ranged or cursor.offset < task.end:  # type: ignore[operator]
        raw = stream.readline(limit + 2)
        if not raw:
            break
        cursor.line_no += 1
        start = cursor.offset
        locator = f"{task.relpath}:{cursor.line_no}"
        if not raw.endswith(b"\n") and len(raw) > limit:
            total = len(raw)
            while True:  # skip the rest of an oversized line without holding it
                chunk = stream.readline(1 << 20)
                total += len(chunk)
                if not chunk or chunk.endswith(b"\n"):
                    break
            cursor.offset += total
            cursor.records += 1
            yield Bad(
                Reason.RECORD_TOO_LARGE,
                f"line of {total} bytes exceeds max_record_bytes={limit}",
                locator,
                start,
                total,
            )
            continue
        cursor.offset += len(raw)
        content = raw.rstrip(b"\r\n")
        if cursor.line_no == 1 and content.startswith(BOM):
            content = content[3:]
        if not content.strip():
            continue  # blank lines separate records; they are not records
        cursor.records += 1
        if len(content) > limit:
            yield Bad(
                Reason.RECORD_TOO_LARGE,
                f"line of {len(content)} bytes exceeds max_record_bytes={limit}",
                locator,
                start,
                len(content),
            )
            continue
        try:
            decoded = content.decode("utf-8")
        except UnicodeDecodeError as err:
            yield Bad(Reason.INVALID_UTF8, f"byte {err.start}: {err.reason}", locator, start, len(content))
            continue
        try:
            obj = orjson.loads(decoded)
        except orjson.JSONDecodeError as err:
            yield Bad(Reason.MALFORMED_JSON, str(err), locator, start, len(content))
            continue
        yield record_from_object(task, obj, locator, start, len(content))


BOM = b"\xef\xbb\xbf"


def read_parquet(task: FileTask, params: ReaderParams, batch_rows: int = 4096) -> Iterator[Item]:
    """Parquet files; locators are `relpath#row=N` (0-based)."""
    import pyarrow.parquet as pq

    try:
        handle = open(task.path, "rb")  # noqa: SIM115 - closed by the with block below
    except OSError as err:
        yield Bad(Reason.UNREADABLE_FILE, f"{type(err).__name__}: {err.strerror or err}", task.relpath, None, None)
        return
    with handle:
        if task.size == 0:
            yield Bad(Reason.EMPTY_FILE, "0 bytes", task.relpath, 0, 0)
            return
        try:
            parquet = pq.ParquetFile(handle)
        except Exception as err:  # pyarrow raises ArrowInvalid for a damaged or foreign file
            yield Bad(Reason.CORRUPT_FILE, f"{type(err).__name__}: {err}", task.relpath, None, None)
            return
        if parquet.metadata.num_rows == 0:
            yield Bad(Reason.EMPTY_FILE, "0 rows", task.relpath, None, None)
            return
        row = 0
        try:
            for batch in parquet.iter_batches(batch_size=batch_rows):
                for obj in batch.to_pylist():
                    locator = f"{task.relpath}#row={row}"
                    item = record_from_object(task, obj, locator, None, None)
                    if isinstance(item, Record) and len(item.text.encode("utf-8")) > params.max_record_bytes:
                        detail = f"text exceeds max_record_bytes={params.max_record_bytes}"
                        item = Bad(Reason.RECORD_TOO_LARGE, detail, locator, None, None)
                    row += 1
                    yield item
        except Exception as err:
            detail = f"{type(err).__name__}: {err} (after row {row})"
            yield Bad(Reason.CORRUPT_FILE, detail, f"{task.relpath}#row={row}", None, None)


def _read_whole_file(task: FileTask, params: ReaderParams) -> bytes | Bad:
    try:
        with open(task.path, "rb") as handle:
            data = handle.read(params.max_record_bytes + 1)
    except OSError as err:
        return Bad(Reason.UNREADABLE_FILE, f"{type(err).__name__}: {err.strerror or err}", task.relpath, None, None)
    if len(data) > params.max_record_bytes:
        return Bad(
            Reason.RECORD_TOO_LARGE,
            f"file exceeds max_record_bytes={params.max_record_bytes}",
            task.relpath,
            0,
            task.size,
        )
    if not data:
        return Bad(Reason.EMPTY_FILE, "0 bytes", task.relpath, 0, 0)
    return data


def read_text(task: FileTask, params: ReaderParams) -> Iterator[Item]:
    """One document per file, strict UTF-8; the locator is the relative path."""
    data = _read_whole_file(task, params)
    if isinstance(data, Bad):
        yield data
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        yield Bad(Reason.INVALID_UTF8, f"byte {err.start}: {err.reason}", task.relpath, 0, len(data))
        return
    text = text.removeprefix("\ufeff")
    if not text.strip():
        yield Bad(Reason.EMPTY_TEXT, "only whitespace", task.relpath, 0, len(data))
        return
    yield Record(task.relpath, text, None, {}, 0, len(data))


def read_html(task: FileTask, params: ReaderParams) -> Iterator[Item]:
    """One document per HTML file: the main text, without navigation and boilerplate (trafilatura)."""
    import trafilatura

    data = _read_whole_file(task, params)
    if isinstance(data, Bad):
        yield data
        return
    try:
        extracted = trafilatura.bare_extraction(data, with_metadata=True, include_comments=False)
    except Exception as err:  # the extractor's parser failing is a property of this file
        yield Bad(
            Reason.CORRUPT_FILE, f"HTML extraction failed: {type(err).__name__}: {err}", task.relpath, 0, len(data)
        )
        return
    text = getattr(extracted, "text", None) if extracted is not None else None
    if not text or not text.strip():
        yield Bad(Reason.EMPTY_TEXT, "no main text found in the HTML", task.relpath, 0, len(data))
        return
    fields = {k: v for k in ("title", "url", "date", "language") if (v := getattr(extracted, k, None))}
    yield Record(task.relpath, text, None, fields, 0, len(data))


READERS = {
    "jsonl": read_jsonl,
    PREFERENCE_FORMAT: read_jsonl,
    SFT_FORMAT: read_jsonl,
    "parquet": read_parquet,
    "text": read_text,
    "html": read_html,
    "python-env": read_text,
}


def read_file(task: FileTask, params: ReaderParams) -> Iterator[Item]:
    """Every record and quarantine entry of one file, in file order."""
    return READERS[task.source.format](task, params)
