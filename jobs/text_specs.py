"""Texts named on the command line: a file (JSONL, text, Parquet) or a lakehouse table with a filter.

`SPEC` forms: `path/to/file.jsonl` (one JSON object per line, `.gz` too), `file.txt` (one text per
non-empty line), `file.parquet`, or `table:silver.documents?source=python-docs&lang=en` (equality
filters, applied as data, never pasted into SQL).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from lineage.catalog import table as table_spec
from lineage.errors import MillpondError
from lineage.tables import read_table


class TextSpecError(MillpondError, ValueError):
    """A text source on the command line is wrong; the message names the file and line."""


@dataclass(frozen=True)
class Text:
    text: str
    source_uri: str
    locator: str


def _joined(record: dict[str, Any], fields: tuple[str, ...], where: str) -> str:
    parts = []
    for name in fields:
        if name not in record:
            raise TextSpecError(f"{where}: no field {name!r} (fields: {', '.join(sorted(record))})")
        value = record[name]
        parts.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return "\n".join(parts)


def _from_file(path: Path, fields: tuple[str, ...]) -> list[Text]:
    if not path.is_file():
        raise TextSpecError(f"no such file: {path}")
    name = path.name.lower()
    uri = path.resolve().as_uri()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return [Text(_joined(r, fields, f"{path}#row={i}"), uri, f"{path.name}#row={i}") for i, r in enumerate(rows)]
    opener = gzip.open if name.endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            if ".jsonl" in name or ".ndjson" in name:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise TextSpecError(f"{where}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise TextSpecError(f"{where}: expected a JSON object")
                out.append(Text(_joined(record, fields, where), uri, f"{path.name}:{number}"))
            else:
                out.append(Text(line.rstrip("\n"), uri, f"{path.name}:{number}"))
    return out


def _from_table(spec: str, lakehouse: str | Path) -> list[Text]:
    name, _, query = spec.removeprefix("table:").partition("?")
    try:
        table = table_spec(name)
    except KeyError as err:
        raise TextSpecError(str(err.args[0])) from None
    filters = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)) if query else []
    columns = table.schema.fieldNames()
    for column, _ in filters:
        if column not in columns:
            raise TextSpecError(f"{spec}: {name} has no column {column!r}")
    data = read_table(table, lakehouse)
    if data is None:
        raise TextSpecError(f"{spec}: table {name} does not exist yet")
    rows = [r for r in data.to_pylist() if all(str(r[c]) == v for c, v in filters)]
    key = table.key[0]
    return [Text(r["text"], table.path(lakehouse), f"{name}:{r[key]}") for r in rows]


def read_texts(spec: str, lakehouse: str | Path, fields: tuple[str, ...] = ("text",)) -> list[Text]:
    """The texts a SPEC names, in file or table order."""
    if spec.startswith("table:"):
        return _from_table(spec, lakehouse)
    return _from_file(Path(spec).expanduser(), fields)
