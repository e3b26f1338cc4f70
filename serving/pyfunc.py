"""A trained model as an MLflow model: the `python_function` flavor around the Hugging Face folder a
run saves, answering with the chat template and generation `millpond serve` uses.

Every training run logs one (`jobs.train.log_model`), so MLflow's runs table shows it in the
Model column, its registered versions link to it, and `mlflow.pyfunc.load_model(uri)` or `mlflow
models serve` answer prompts the way the server does (loading needs millpond installed: the
class below is imported, not pickled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

from lineage.chat import render_prompt
from serving.model import HF_ARTIFACT as ARTIFACT


class ChatModel(mlflow.pyfunc.PythonModel):
    """Prompts (a `prompt` column of user texts, or a `messages` column of conversations) in, the
    assistant's answers out; `params`: `max_tokens` (64), `temperature` (0: greedy)."""

    def load_context(self, context: Any) -> None:
        from serving.model import Generator

        self.generator = Generator(Path(context.artifacts[ARTIFACT]))

    # No hint on `model_input`: MLflow validates inputs against it, and the declared signature says it.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> list[str]:  # noqa: ANN001
        from serving.model import Sampling

        params = params or {}
        sampling = Sampling(
            max_tokens=int(params.get("max_tokens", 64)), temperature=float(params.get("temperature", 0.0))
        )
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        answers = []
        for row in rows:
            if isinstance(row, str):
                row = {"prompt": row}
            messages = row.get("messages")
            if messages is None:
                messages = [{"role": "user", "content": str(row.get("prompt", ""))}]
            answers.append(self.generator.generate(render_prompt(list(messages)), sampling).texts[0])
        return answers


def signature() -> Any:
    """What the model takes and gives, declared (inferring it would load and run the model)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec("max_tokens", "long", 64), ParamSpec("temperature", "double", 0.0)]),
    )


def requirements() -> list[str]:
    """The installed versions the model runs with (stated, so that MLflow does not spend seconds
    importing the model in a subprocess to infer them)."""
    from importlib import metadata

    return [f"{name}=={metadata.version(name)}" for name in ("torch", "transformers", "tokenizers", "mlflow")]
