"""The source manifest: which raw files make up which source, and what is declared about them.

```toml
[[source]]
name = "web"
path = "raw/web/*.jsonl.gz"     # a file, a folder or a glob; relative to this file
format = "jsonl"                # jsonl, parquet, text, html, python-env
text_field = "text"
id_field = "url"                # optional: the record's own stable id
license = "CC-BY-4.0"           # SPDX expression, or license_field = "license"
subject_fields = ["author_email"]
consent = ["pretraining"]
domain = "web"

[[source]]
name = "hh"
path = "hh-rlhf.jsonl.gz"
format = "preference-jsonl"     # chosen/rejected pairs: `millpond preferences build` makes them pairs
chosen_field = "chosen"         # the defaults; prompt_field names a separate prompt when there is one
rejected_field = "rejected"
license = "MIT"
consent = ["preference"]

[[source]]
name = "chats"
path = "demonstrations/"
format = "sft-jsonl"            # OpenAI-style conversations, each ending with the assistant's answer
messages_field = "messages"     # the default: [{"role": "user", "content": "..."}, ...]
license = "CC-BY-4.0"
consent = ["sft"]
```
"""

from __future__ import annotations

import glob
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lineage.catalog import PREFERENCE_DOMAIN, SFT_DOMAIN  # noqa: F401 - re-exported
from lineage.errors import MillpondError

FORMATS = ("jsonl", "preference-jsonl", "sft-jsonl", "parquet", "text", "html", "python-env")
PREFERENCE_FORMAT = "preference-jsonl"
# Demonstrations: a record's text is its conversation rendered with the chat template (lineage.chat).
SFT_FORMAT = "sft-jsonl"
JSONL_FORMATS = ("jsonl", PREFERENCE_FORMAT, SFT_FORMAT)

# File name endings each format picks up when its path is a folder.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson"),
    "preference-jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson"),
    "sft-jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson"),
    "parquet": (".parquet",),
    "text": (),  # every file
    "html": (".html", ".htm"),
}


class ManifestError(MillpondError, ValueError):
    """The manifest is wrong; the message names the file and the source."""


@dataclass(frozen=True)
class Source:
    """One `[[source]]` entry of a manifest."""

    name: str
    format: str
    path: str = ""
    text_field: str = "text"
    id_field: str | None = None
    license: str | None = None
    license_field: str | None = None
    subject_fields: tuple[str, ...] = ()
    consent: tuple[str, ...] = ()
    domain: str | None = None
    # preference-jsonl only: the chosen dialogue is the record's text (`chosen_field`, read as
    # `text_field`), the rejected one and an optional separate prompt sit beside it.
    rejected_field: str = "rejected"
    prompt_field: str | None = None
    # python-env only: which distributions (glob patterns on names) and which files.
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    extensions: tuple[str, ...] = (".py", ".md", ".rst", ".txt")


@dataclass(frozen=True)
class FileTask:
    """One file to read for one source; `relpath` is the stable part of every locator."""

    source: Source
    path: str
    relpath: str
    size: int
    # What the file inherits from where it came from (python-env: its distribution).
    inherited_license: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    subject_ids: tuple[str, ...] = ()
    domain: str | None = None
    # A byte range of a large uncompressed JSON Lines file: the lines that start in
    # [start, end), the first of them being line `first_line` of the file.
    start: int = 0
    end: int | None = None
    first_line: int = 1

    @property
    def bytes_to_read(self) -> int:
        return self.size if self.end is None else self.end - self.start


def _tuple(value: Any, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ManifestError(f"{where}: {key!r} must be a string or a list of strings")


def parse_source(entry: dict[str, Any], where: str, base: Path) -> Source:
    """Validate one `[[source]]` table; relative paths are taken from the manifest's folder."""
    known = {f.name for f in fields(Source)} | {"chosen_field", "messages_field"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for required in ("name", "format"):
        if not isinstance(entry.get(required), str) or not entry[required]:
            raise ManifestError(f"{where}: {required!r} is required")
    if entry["format"] not in FORMATS:
        raise ManifestError(f"{where}: format {entry['format']!r} is not one of {', '.join(FORMATS)}")
    if entry["format"] != "python-env" and not entry.get("path"):
        raise ManifestError(f"{where}: 'path' is required for format {entry['format']!r}")
    values: dict[str, Any] = dict(entry)
    for key in ("subject_fields", "consent", "include", "exclude", "extensions"):
        if key in values:
            values[key] = _tuple(values[key], key, where)
    for key in ("text_field", "id_field", "license", "license_field", "domain", "path", "chosen_field",
                "rejected_field", "prompt_field", "messages_field"):  # fmt: skip
        if key in values and not isinstance(values[key], str):
            raise ManifestError(f"{where}: {key!r} must be a string")
    if entry["format"] == PREFERENCE_FORMAT:
        if "text_field" in values:
            raise ManifestError(f"{where}: a preference-jsonl source names 'chosen_field', not 'text_field'")
        values["text_field"] = values.pop("chosen_field", "chosen")
        if values.setdefault("domain", PREFERENCE_DOMAIN) != PREFERENCE_DOMAIN:
            raise ManifestError(f"{where}: a preference-jsonl source has domain {PREFERENCE_DOMAIN!r}")
    elif entry["format"] == SFT_FORMAT:
        if "text_field" in values:
            raise ManifestError(f"{where}: an sft-jsonl source names 'messages_field', not 'text_field'")
        values["text_field"] = values.pop("messages_field", "messages")
        if values.setdefault("domain", SFT_DOMAIN) != SFT_DOMAIN:
            raise ManifestError(f"{where}: an sft-jsonl source has domain {SFT_DOMAIN!r}")
    if entry["format"] != PREFERENCE_FORMAT:
        for key in ("chosen_field", "rejected_field", "prompt_field"):
            if key in values:
                raise ManifestError(f"{where}: {key!r} is for format 'preference-jsonl' only")
        if "messages_field" in values:
            raise ManifestError(f"{where}: 'messages_field' is for format 'sft-jsonl' only")
        if values.get("domain") == PREFERENCE_DOMAIN:
            raise ManifestError(
                f"{where}: domain {PREFERENCE_DOMAIN!r} is kept for format 'preference-jsonl' (pairs, not documents)"
            )
    if values.get("path"):
        path = os.path.expanduser(values["path"])
        values["path"] = path if os.path.isabs(path) else str(base / path)
    return Source(**values)


def load_manifest(path: str | Path) -> list[Source]:
    """All sources of a manifest file, validated; names must be unique."""
    manifest = Path(path).expanduser().resolve()
    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    try:
        parsed = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ManifestError(f"{manifest}: not valid TOML: {err}") from None
    entries = parsed.get("source")
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{manifest}: no [[source]] entries")
    sources = [parse_source(entry, f"{manifest}: source #{i + 1}", manifest.parent) for i, entry in enumerate(entries)]
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ManifestError(f"{manifest}: source names must be unique: {', '.join(duplicates)}")
    return sources


def _is_hidden(relpath: str) -> bool:
    return any(part.startswith(".") for part in Path(relpath).parts)


def _matches(fmt: str, name: str) -> bool:
    return not SUFFIXES[fmt] or name.lower().endswith(SUFFIXES[fmt])


def expand_files(source: Source) -> list[FileTask]:
    """The files of a file-based source, sorted, each with its path relative to the source root."""
    path = source.path
    if glob.has_magic(path):
        prefix = []
        for part in Path(path).parts:
            if glob.has_magic(part):
                break
            prefix.append(part)
        root = Path(*prefix)
        files = sorted(p for p in map(Path, glob.glob(path, recursive=True)) if p.is_file() or p.is_symlink())
    elif Path(path).is_dir():
        root = Path(path)
        files = sorted(
            p
            for p in root.rglob("*")
            if (p.is_file() or p.is_symlink())
            and _matches(source.format, p.name)
            and not _is_hidden(str(p.relative_to(root)))
        )
    elif Path(path).exists() or Path(path).is_symlink():
        root = Path(path).parent
        files = [Path(path)]
    else:
        raise ManifestError(f"source {source.name!r}: path {path} does not exist")
    if not files:
        raise ManifestError(f"source {source.name!r}: path {path} matches no {source.format} files")
    tasks = []
    for file in files:
        try:
            size = file.stat().st_size
        except OSError:
            size = 0  # unreadable: the reader quarantines it with the reason
        tasks.append(
            FileTask(source=source, path=str(file.resolve()), relpath=file.relative_to(root).as_posix(), size=size)
        )
    return tasks
