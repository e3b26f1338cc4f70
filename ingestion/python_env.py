"""The `python-env` source: documentation and source files of the installed Python distributions.

Every machine that runs millpond has this corpus offline, and each file carries the license
its distribution declares, which makes it a real, license-tagged corpus for the demo and tests.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
from email.utils import getaddresses
from pathlib import Path

from ingestion.manifest import FileTask, ManifestError, Source

# Common free-text `License:` values and trove classifiers, as SPDX identifiers.
_ALIASES = {
    "mit": "MIT",
    "mit license": "MIT",
    "the mit license": "MIT",
    "mit-0": "MIT-0",
    "apache": "Apache-2.0",
    "apache 2": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "apache-2": "Apache-2.0",
    "apache license 2.0": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0",
    "apache license version 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0",
    "asl 2": "Apache-2.0",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd 3-clause": "BSD-3-Clause",
    "bsd 3-clause license": "BSD-3-Clause",
    "3-clause bsd": "BSD-3-Clause",
    "modified bsd": "BSD-3-Clause",
    "modified bsd license": "BSD-3-Clause",
    "new bsd": "BSD-3-Clause",
    "new bsd license": "BSD-3-Clause",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd 2-clause": "BSD-2-Clause",
    "simplified bsd": "BSD-2-Clause",
    "bsd": "LicenseRef-BSD",
    "bsd license": "LicenseRef-BSD",
    "isc": "ISC",
    "isc license": "ISC",
    "isc license (iscl)": "ISC",
    "mpl-2.0": "MPL-2.0",
    "mpl 2.0": "MPL-2.0",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0",
    "psf": "PSF-2.0",
    "psf-2.0": "PSF-2.0",
    "python software foundation license": "PSF-2.0",
    "lgpl": "LicenseRef-LGPL",
    "gnu lesser general public license v2 or later (lgplv2+)": "LGPL-2.0-or-later",
    "gnu lesser general public license v3 (lgplv3)": "LGPL-3.0-only",
    "gnu lesser general public license v3 or later (lgplv3+)": "LGPL-3.0-or-later",
    "gnu general public license v2 (gplv2)": "GPL-2.0-only",
    "gnu general public license v2 or later (gplv2+)": "GPL-2.0-or-later",
    "gnu general public license v3 (gplv3)": "GPL-3.0-only",
    "gnu general public license v3 or later (gplv3+)": "GPL-3.0-or-later",
    "the unlicense (unlicense)": "Unlicense",
    "unlicense": "Unlicense",
    "public domain": "LicenseRef-Public-Domain",
    "zope public license": "ZPL-2.1",
    "academic free license (afl)": "AFL-3.0",
}
_SPDX_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
_KNOWN_IDS = {v for v in _ALIASES.values()} | {"CNRI-Python", "Unicode-DFS-2016", "0BSD", "Zlib", "CC0-1.0"}


def _spdx_expression(value: str) -> str | None:
    """`value` itself if it is an SPDX expression over known identifiers."""
    tokens = value.replace("(", " ").replace(")", " ").split()
    if not tokens:
        return None
    ids = [t for t in tokens if t not in ("AND", "OR", "WITH")]
    if ids and all(_SPDX_TOKEN.match(t) and (t in _KNOWN_IDS or t.startswith("LicenseRef-")) for t in ids):
        return " ".join(value.split())
    return None


def distribution_license(metadata: importlib.metadata.PackageMetadata) -> str | None:
    """The SPDX expression a distribution declares: License-Expression, License, or classifiers."""
    expression = (metadata.get("License-Expression") or "").strip()
    if expression:
        return expression
    declared = (metadata.get("License") or "").strip()
    if declared and "\n" not in declared and len(declared) <= 80:
        alias = _ALIASES.get(declared.lower().rstrip("."))
        if alias:
            return alias
        spdx = _spdx_expression(declared)
        if spdx:
            return spdx
    licenses = []
    for classifier in metadata.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            alias = _ALIASES.get(classifier.split("::")[-1].strip().lower())
            if alias and alias not in licenses:
                licenses.append(alias)
    return " OR ".join(licenses) if licenses else None


def _emails(metadata: importlib.metadata.PackageMetadata) -> tuple[str, ...]:
    fields = [metadata.get(k) or "" for k in ("Author-email", "Maintainer-email")]
    found = {addr.strip().lower() for _, addr in getaddresses(fields) if "@" in addr}
    return tuple(sorted(found))


def _selected(name: str, source: Source) -> bool:
    norm = name.lower().replace("_", "-")
    matches = lambda patterns: any(fnmatch.fnmatch(norm, p.lower().replace("_", "-")) for p in patterns)  # noqa: E731
    return matches(source.include) and not matches(source.exclude)


def _written_by_installer(rel: str) -> bool:
    """An editable install's import hook (`__editable___<name>_finder.py`) names the folder the
    project was cloned to: the installer wrote it for this machine, its authors did not, and a
    corpus that took it in would differ from one clone to the next."""
    return Path(rel).name.startswith("__editable__")


def python_env_files(source: Source) -> list[FileTask]:
    """The selected distributions' doc and source files, plus each one's METADATA (its README)."""
    seen: set[str] = set()
    tasks: list[FileTask] = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = dist.metadata["Name"]
        if not name or name.lower() in seen or not _selected(name, source):
            continue
        seen.add(name.lower())
        license_expr = distribution_license(dist.metadata)
        version = dist.version
        for file in sorted(dist.files or [], key=str):
            rel = file.as_posix()
            is_metadata = rel.endswith(".dist-info/METADATA")
            if "__pycache__" in rel or _written_by_installer(rel):
                continue
            if not (is_metadata or rel.lower().endswith(source.extensions)):
                continue
            located = Path(str(dist.locate_file(file))).resolve()
            try:
                size = located.stat().st_size
            except OSError:
                continue  # listed in RECORD but not installed: not part of this environment
            if size == 0:
                continue  # an empty __init__.py is neither documentation nor source
            tasks.append(
                FileTask(
                    source=source,
                    path=str(located),
                    relpath=f"{name}/{'METADATA' if is_metadata else rel}",
                    size=size,
                    inherited_license=license_expr,
                    metadata=(("distribution", name), ("version", version), ("file", rel)),
                    subject_ids=_emails(dist.metadata) if is_metadata else (),
                    domain=source.domain or ("code" if rel.endswith(".py") else "docs"),
                )
            )
    if not tasks:
        raise ManifestError(f"source {source.name!r}: no installed distribution matches include={list(source.include)}")
    return tasks
