"""The one chat template: how a conversation becomes text, for `millpond serve`, the tables and SFT.

Serving and training must format a conversation alike, or a tuned model is served a format it
never saw; the tables store conversations in it (`silver.preferences` prompts, `sft-jsonl`
demonstrations), so it sits at the bottom of the layout where every layer may read it. Role markers are plain text (the tokenizer is trained on the corpus and has no
special chat tokens); a turn ends with a newline, and the model's turn starts after
`<|assistant|>` and a newline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ROLES = ("system", "user", "assistant")
ASSISTANT_PROMPT = "<|assistant|>\n"
# Where a generated answer stops at the latest: the start of the next turn.
TURN_START = "\n<|"


class ChatFormatError(ValueError):
    """A message the template cannot render (unknown role, content not text)."""


def render_turn(role: str, content: str) -> str:
    if role not in ROLES:
        raise ChatFormatError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return f"<|{role}|>\n{content}\n"


def render_prompt(messages: Iterable[Mapping[str, str]]) -> str:
    """The conversation so far, ending where the assistant's answer begins."""
    parts = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str):
            raise ChatFormatError("every message needs text content")
        parts.append(render_turn(str(message.get("role")), content))
    return "".join(parts) + ASSISTANT_PROMPT


def cut_answer(generated: str, stops: Iterable[str] = ()) -> tuple[str, str]:
    """The answer up to the first stop string or next turn, and the finish reason."""
    cut = len(generated)
    for stop in (TURN_START, *stops):
        if stop and (at := generated.find(stop)) != -1:
            cut = min(cut, at)
    return generated[:cut], ("stop" if cut < len(generated) else "length")


def render_conversation(messages: Iterable[Mapping[str, str]]) -> str:
    """A whole conversation ending with the assistant's answer, as a demonstration's text: exactly
    `render_prompt(all but the answer) + answer + "\\n"`, so `split_answer` gives both back."""
    messages = list(messages)
    if not messages or messages[-1].get("role") != "assistant":
        raise ChatFormatError("a demonstration ends with the assistant's answer")
    prompt = render_prompt(messages[:-1])  # checks every role
    if not any(m.get("role") == "user" for m in messages[:-1]):
        raise ChatFormatError("a demonstration has a user turn before the answer")
    answer = messages[-1].get("content")
    if not isinstance(answer, str) or not answer.strip():
        raise ChatFormatError("the assistant's answer is empty")
    return prompt + answer + "\n"


def split_answer(text: str) -> tuple[str, str] | None:
    """(prompt, answer) of a rendered conversation: the answer is the last assistant turn; None
    when the text is not a conversation in the template."""
    at = text.rfind(ASSISTANT_PROMPT)
    if at == -1 or not text.startswith("<|"):
        return None
    prompt, answer = text[: at + len(ASSISTANT_PROMPT)], text[at + len(ASSISTANT_PROMPT) :]
    answer = answer[:-1] if answer.endswith("\n") else answer
    return (prompt, answer) if answer.strip() else None
