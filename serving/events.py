"""The interaction event: one schema for what the server lands and what the stream reads.

Every request, response and feedback is one event, a JSON object on one line. The server
writes them (`serving.landing`); `jobs/stream_interactions.py` reads them into
`bronze.interactions` and sends whatever breaks this schema to quarantine with the reason
`problem()` gives. `schema_version` lets a later server add fields without breaking the stream.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1
REQUEST, RESPONSE, FEEDBACK = "request", "response", "feedback"
EVENT_TYPES = (REQUEST, RESPONSE, FEEDBACK)
RATINGS = ("up", "down")
# One event line may not exceed this (the server's body limit keeps real events well below it).
MAX_EVENT_BYTES = 4 * 1024 * 1024


def new_id(prefix: str) -> str:
    """A random, unguessable id: `chatcmpl-...` for an interaction, `evt-...` for an event."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event(event_type: str, interaction_id: str, **fields: Any) -> dict[str, Any]:
    """An event with its envelope (id, type, schema version, time) and the given fields."""
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": new_id("evt"),
        "event_type": event_type,
        "interaction_id": interaction_id,
        "created_at": now_iso(),
        **fields,
    }


def problem(record: Any) -> str | None:
    """Why a parsed line is not a valid event (a quarantine reason), or None when it is one."""
    if not isinstance(record, dict):
        return "not_an_object"
    version = record.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        return "missing_schema_version"
    if version > SCHEMA_VERSION:
        return "unsupported_schema_version"
    for name in ("event_id", "interaction_id"):
        value = record.get(name)
        if not isinstance(value, str) or not value:
            return f"missing_{name}"
    if record.get("event_type") not in EVENT_TYPES:
        return "unknown_event_type"
    created = record.get("created_at")
    if not isinstance(created, str) or _timestamp(created) is None:
        return "bad_created_at"
    if record["event_type"] == FEEDBACK:
        feedback = record.get("feedback")
        if not isinstance(feedback, dict) or not any(feedback.get(k) is not None for k in ("rating", "choice", "edit")):
            return "empty_feedback"
        if feedback.get("rating") is not None and feedback["rating"] not in RATINGS:
            return "bad_rating"
    for name, kind in (("messages", list), ("responses", list), ("consent", list), ("model", dict)):
        if record.get(name) is not None and not isinstance(record[name], kind):
            return f"bad_{name}"
    return None


def _timestamp(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def created_at(record: dict[str, Any]) -> datetime:
    """The event's time as an aware datetime (call after `problem()` said it is valid)."""
    stamp = _timestamp(record["created_at"])
    assert stamp is not None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
