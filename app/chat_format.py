"""OpenAI chat messages to the prompt text a model was trained on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class PromptError(ValueError):
    """The messages cannot be rendered for this model; `param` names the culprit."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Turn:
    role: str  # system, user or assistant: `developer` arrives here as `system`
    content: str


def phi3_prompt(turns: Sequence[Turn], add_generation_prompt: bool = True) -> str:
    """Phi-3's official chat template, as code: byte for byte what the template renders
    (tests hold the two against each other), without a Jinja round trip per request."""
    parts = [f"<|{turn.role}|>\n{turn.content}<|end|>\n" for turn in turns]
    parts.append("<|assistant|>\n" if add_generation_prompt else "<|endoftext|>")
    return "".join(parts)


class ChatFormatter:
    """Phi-3 models get the built-in mapping; any other model its own chat template."""

    def __init__(self, model_type: str, tokenizer: Any) -> None:
        self._builtin = model_type == "phi3"
        self._tokenizer = tokenizer
        self.available = self._builtin or bool(getattr(tokenizer, "chat_template", None))

    @property
    def kind(self) -> str:
        return "built-in Phi-3 mapping" if self._builtin else "the model's chat template"

    def render(self, turns: Sequence[Turn], add_generation_prompt: bool = True) -> str:
        if self._builtin:
            return phi3_prompt(turns, add_generation_prompt)
        if not self.available:
            raise PromptError("this model has no chat template; use /v1/completions", "messages")
        messages = [{"role": t.role, "content": t.content} for t in turns]
        try:
            rendered = self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception as exc:  # templates raise on conversations they do not support
            raise PromptError(f"the model's chat template rejected the messages: {exc}") from exc
        return str(rendered)
