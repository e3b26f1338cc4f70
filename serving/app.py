"""The OpenAI-compatible HTTP API of `millpond serve`, with feedback and durable landing.

Endpoints: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
`POST /v1/feedback`, `GET /health`. A response's `id` is the interaction id that feedback
names. No answer leaves before its events are on disk (`serving.landing`). Prompts and answers
are never logged: they go to the landing files and nowhere else.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from lineage.chat import ROLES, ChatFormatError, render_prompt
from serving.events import FEEDBACK, RATINGS, REQUEST, RESPONSE, event, new_id
from serving.landing import CLOSED, PART, LandingWriter
from serving.model import Generation, Generator, ModelSlot, Sampling, label_of
from serving.settings import ServeSettings

USER_HEADER = "x-millpond-user"


class RequestProblem(Exception):
    """A request the API refuses: HTTP status, message and the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def _error(problem: RequestProblem) -> JSONResponse:
    body = {"error": {"message": problem.message, "type": problem.kind, "param": problem.param, "code": None}}
    return JSONResponse(body, status_code=problem.status)


def load_api_keys(path: str) -> tuple[bytes, ...]:
    keys = tuple(line.strip().encode() for line in Path(path).read_text().splitlines() if line.strip())
    if not keys:
        raise ValueError(f"{path} holds no API key")
    return keys


@dataclass
class Interaction:
    """What feedback needs to know about an interaction this replica (or another) answered."""

    user: str | None
    consent: list[str]
    n: int
    model: dict[str, Any] | None = None  # the model that answered it


def create_app(settings: ServeSettings, slot: ModelSlot, landing: LandingWriter) -> FastAPI:
    """The FastAPI application; on shutdown it closes the landing writer (its open file rolls)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(landing.close)

    app = FastAPI(title="millpond serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else ()
    recent: OrderedDict[str, Interaction] = OrderedDict()  # interaction id -> what feedback checks

    def remember(interaction_id: str, seen: Interaction) -> None:
        recent[interaction_id] = seen
        while len(recent) > 100_000:
            recent.popitem(last=False)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if request.url.path != "/health" and keys:
            given = request.headers.get("authorization", "")
            token = given[7:].strip().encode() if given[:7].lower() == "bearer " else b""
            if not any(hmac.compare_digest(token, k) for k in keys):  # every key compared: constant time
                return _error(RequestProblem(401, "missing or wrong API key", kind="authentication_error"))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return _error(RequestProblem(413, f"request body over {settings.max_body_bytes} bytes"))
        return await call_next(request)

    @app.exception_handler(RequestProblem)
    async def refuse(request: Request, problem: RequestProblem) -> Response:
        return _error(problem)

    async def body_of(request: Request) -> dict[str, Any]:
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > settings.max_body_bytes:
                raise RequestProblem(413, f"request body over {settings.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestProblem(400, f"malformed JSON body: {err}") from None
        if not isinstance(body, dict):
            raise RequestProblem(400, "the body must be a JSON object")
        return body

    def who(request: Request, body: dict[str, Any]) -> tuple[str | None, list[str], dict[str, str]]:
        user = body.get("user") or request.headers.get(USER_HEADER) or None
        if user is not None and not isinstance(user, str):
            raise RequestProblem(400, "user must be a string", "user")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise RequestProblem(400, "metadata must be an object of strings", "metadata")
        stated = metadata.get("consent")
        consent = [c.strip() for c in stated.split(",") if c.strip()] if stated is not None else None
        if user is None:
            consent = []  # no subject, no training consent
        elif consent is None:
            consent = list(settings.default_consent)
        return user, consent, metadata

    def sampling_of(body: dict[str, Any]) -> Sampling:
        def number(name: str, kind: type, default: Any, low: float, high: float) -> Any:
            value = body.get(name)
            if value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
                raise RequestProblem(400, f"{name} must be a {kind.__name__}", name)
            if not low <= value <= high:
                raise RequestProblem(400, f"{name} must be between {low} and {high}", name)
            return kind(value)

        stop = body.get("stop")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        if not all(isinstance(s, str) for s in stops) or len(stops) > 4:
            raise RequestProblem(400, "stop must be a string or up to 4 strings", "stop")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise RequestProblem(400, "max_tokens must be a positive integer", "max_tokens")
        if limit is not None and limit > settings.max_tokens:
            raise RequestProblem(400, f"max_tokens over this server's limit of {settings.max_tokens}", "max_tokens")
        return Sampling(
            max_tokens=limit or min(64, settings.max_tokens),
            temperature=number("temperature", float, 1.0, 0.0, 2.0),
            top_p=number("top_p", float, 1.0, 0.0, 1.0),
            seed=number("seed", int, None, -(2**63), 2**63 - 1),
            stop=stops,
            n=number("n", int, 1, 1, settings.max_n),
        )

    async def answer(
        request: Request, body: dict[str, Any], prompt: str, messages: list[dict[str, str]] | None
    ) -> tuple[str, Generation, Sampling, int, Generator]:
        started = time.perf_counter()
        generator = slot.current  # this request's model, even if a promotion swaps another in meanwhile
        served = generator.served
        user, consent, metadata = who(request, body)
        sampling = sampling_of(body)
        if generator.count_tokens(prompt) > settings.max_prompt_tokens:
            raise RequestProblem(400, f"the prompt is over {settings.max_prompt_tokens} tokens", "messages")
        interaction_id = new_id("chatcmpl" if messages is not None else "cmpl")
        generation = await run_in_threadpool(generator.generate, prompt, sampling)
        common = {"user": user, "consent": consent, "model": served.as_event(), "replica": landing.replica,
                  "conversation_id": metadata.get("conversation_id") or interaction_id}  # fmt: skip
        params = {"max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
                  "seed": sampling.seed, "stop": list(sampling.stop), "n": sampling.n}  # fmt: skip
        extra = {k: v for k, v in metadata.items() if k not in ("consent", "conversation_id")}
        asked = event(REQUEST, interaction_id, **common, messages=messages, prompt=None if messages else prompt,
                      params=params, metadata=extra)  # fmt: skip
        latency = round((time.perf_counter() - started) * 1000, 3)
        answered = event(RESPONSE, interaction_id, **common, responses=generation.texts,
                         finish_reasons=generation.finish_reasons, latency_ms=latency,
                         usage={"prompt_tokens": generation.prompt_tokens,
                                "completion_tokens": generation.completion_tokens})  # fmt: skip
        await asyncio.wrap_future(landing.submit([asked, answered]))
        remember(interaction_id, Interaction(user, consent, sampling.n, served.as_event()))
        return interaction_id, generation, sampling, int(time.time()), generator

    def usage(generation: Generation) -> dict[str, int]:
        return {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
                "total_tokens": generation.prompt_tokens + generation.completion_tokens}  # fmt: skip

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await body_of(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestProblem(400, "messages must be a non-empty list", "messages")
        plain = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise RequestProblem(400, f"messages[{i}] needs a role ({', '.join(ROLES)}) and text content",
                                     f"messages[{i}]")  # fmt: skip
            plain.append({"role": m["role"], "content": m["content"]})
        try:
            prompt = render_prompt(plain)
        except ChatFormatError as err:
            raise RequestProblem(400, str(err), "messages") from None
        interaction_id, generation, sampling, created, generator = await answer(request, body, prompt, plain)
        model_label, served = label_of(generator.served), generator.served
        if body.get("stream"):
            return StreamingResponse(
                _chat_chunks(interaction_id, created, model_label, generation, generator),
                media_type="text/event-stream",
            )
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                    "logprobs": None}
                   for i, (text, reason) in enumerate(zip(generation.texts, generation.finish_reasons, strict=True))]  # fmt: skip
        return JSONResponse({"id": interaction_id, "object": "chat.completion", "created": created,
                             "model": model_label, "system_fingerprint": served.run_id, "choices": choices,
                             "usage": usage(generation)})  # fmt: skip

    @app.post("/v1/completions")
    async def complete(request: Request) -> Response:
        body = await body_of(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise RequestProblem(400, "prompt must be a string", "prompt")
        if body.get("stream"):
            raise RequestProblem(400, "stream is supported on /v1/chat/completions only", "stream")
        interaction_id, generation, _, created, generator = await answer(request, body, prompt, None)
        model_label, served = label_of(generator.served), generator.served
        choices = [{"index": i, "text": text, "finish_reason": reason, "logprobs": None}
                   for i, (text, reason) in enumerate(zip(generation.texts, generation.finish_reasons, strict=True))]  # fmt: skip
        return JSONResponse({"id": interaction_id, "object": "text_completion", "created": created,
                             "model": model_label, "system_fingerprint": served.run_id, "choices": choices,
                             "usage": usage(generation)})  # fmt: skip

    @app.get("/v1/models")
    async def models() -> Response:
        return JSONResponse({"object": "list", "data": [{"id": slot.label, "object": "model", "created": 0,
                                                         "owned_by": "millpond"}]})  # fmt: skip

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse({"status": "ok", "model": slot.label, "replica": landing.replica,
                             "events_landed": landing.events_written})  # fmt: skip

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        body = await body_of(request)
        interaction_id = body.get("interaction_id")
        if not isinstance(interaction_id, str) or not interaction_id:
            raise RequestProblem(400, "interaction_id is required", "interaction_id")
        rating, choice, edit, comment = (body.get(k) for k in ("rating", "choice", "edit", "comment"))
        if rating is not None and rating not in RATINGS:
            raise RequestProblem(400, f"rating must be one of {', '.join(RATINGS)}", "rating")
        for name, value in (("edit", edit), ("comment", comment)):
            if value is not None and not isinstance(value, str):
                raise RequestProblem(400, f"{name} must be a string", name)
        if rating is None and choice is None and edit is None:
            raise RequestProblem(400, "feedback needs a rating, a choice or an edit", "rating")
        seen = recent.get(interaction_id)
        if seen is None:
            seen = await run_in_threadpool(_find_interaction, landing.folder, interaction_id)
        if seen is None:
            raise RequestProblem(404, f"no interaction {interaction_id!r}", "interaction_id", kind="not_found_error")
        if choice is not None and (not isinstance(choice, int) or isinstance(choice, bool) or not 0 <= choice < seen.n):
            raise RequestProblem(400, f"choice must be an index below {seen.n}", "choice")
        given = event(FEEDBACK, interaction_id, user=seen.user, consent=seen.consent, model=seen.model,
                      replica=landing.replica, feedback={"rating": rating, "choice": choice, "edit": edit,
                                                         "comment": comment})  # fmt: skip
        await asyncio.wrap_future(landing.submit([given]))
        return JSONResponse({"id": given["event_id"], "object": "feedback", "interaction_id": interaction_id})

    return app


async def _chat_chunks(
    interaction_id: str, created: int, model: str, generation: Generation, generator: Generator
) -> AsyncIterator[bytes]:
    """Server-sent events in OpenAI's chunk format; the events are already durable."""

    def chunk(index: int, delta: dict[str, Any], finish: str | None) -> bytes:
        body = {"id": interaction_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}  # fmt: skip
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    for index, (text, reason) in enumerate(zip(generation.texts, generation.finish_reasons, strict=True)):
        yield chunk(index, {"role": "assistant", "content": ""}, None)
        for piece in generator.chunks(text):
            yield chunk(index, {"content": piece}, None)
        yield chunk(index, {}, reason)
    yield b"data: [DONE]\n\n"


def _find_interaction(folder: Path, interaction_id: str) -> Interaction | None:
    """An interaction another replica (or an earlier run) answered: its response event on disk."""
    needle = json.dumps(interaction_id).encode()
    for path in sorted(folder.glob(f"*{CLOSED}")) + sorted(folder.glob(f"*{PART}")):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # rolled meanwhile: its .jsonl is read next time
        if needle not in data:
            continue
        for line in data.splitlines():
            if needle in line and b'"response"' in line:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("interaction_id") == interaction_id and record.get("event_type") == RESPONSE:
                    return Interaction(
                        record.get("user"), record.get("consent") or [], len(record["responses"]), record.get("model")
                    )
    return None
