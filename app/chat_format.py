"""OpenAI chat messages to the prompt text a model was trained on."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment


class PromptError(ValueError):
    """The messages cannot be rendered for this model; `param` names the culprit."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Turn:
    """One message as the template reads it. For models whose template renders tool
    traffic itself, an assistant turn carries its calls (name, arguments as a JSON value)
    and a `tool` turn a function's result; for the others the calls and results are
    already text in `content` (app/core/tools.py decides which)."""

    role: str  # system, user, assistant or tool: `developer` arrives here as `system`
    content: str
    calls: tuple[tuple[str, Any], ...] = ()
    name: str | None = None  # the function a `tool` turn answers

    def message(self) -> dict[str, Any]:
        """The turn as transformers' chat templates take messages (OpenAI's shape, with
        a call's arguments as a value, not JSON text)."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.calls:
            message["tool_calls"] = [
                {"type": "function", "function": {"name": name, "arguments": arguments}}
                for name, arguments in self.calls
            ]
        if self.name is not None:
            message["name"] = self.name
        return message


def with_system_text(turns: list[Turn], text: str) -> list[Turn]:
    """`text` (the tools' description) added to the conversation's first system turn, or
    as a system turn of its own: templates know one system message at the start."""
    if turns and turns[0].role == "system":
        return [Turn("system", f"{turns[0].content}\n\n{text}"), *turns[1:]]
    return [Turn("system", text), *turns]


def phi3_prompt(turns: Sequence[Turn], add_generation_prompt: bool = True) -> str:
    """Phi-3's official chat template, as code: byte for byte what the template renders
    (tests hold the two against each other), without a Jinja round trip per request."""
    parts = [f"<|{turn.role}|>\n{turn.content}<|end|>\n" for turn in turns]
    parts.append("<|assistant|>\n" if add_generation_prompt else "<|endoftext|>")
    return "".join(parts)


class ChatTemplate:
    """A model's Jinja chat template, rendered the way transformers' `apply_chat_template`
    renders it (same sandbox, options, `tojson`, `raise_exception` and `strftime_now`, and
    the named special tokens as variables), without importing transformers: its import
    alone took longer than loading the model. Tests hold the two renderings together."""

    def __init__(self, source: str, special_tokens: Mapping[str, str]) -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        self._template = env.from_string(source)
        self._special_tokens = dict(special_tokens)
        self.source = source
        # The variables the template reads from its caller: `tools` among them means it
        # describes tools itself.
        self.variables = frozenset(jinja2.meta.find_undeclared_variables(env.parse(source)))

    def render(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        return self._template.render(
            **self._special_tokens,
            messages=messages,
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
        )


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters, which no chat template wants.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class ChatFormatter:
    """Phi-3 models get the built-in mapping; any other model its own chat template."""

    def __init__(self, model_type: str, template: ChatTemplate | None) -> None:
        self._builtin = model_type == "phi3"
        self._template = template

    @property
    def kind(self) -> str:
        return "built-in Phi-3 mapping" if self._builtin else "the model's chat template"

    @property
    def template(self) -> ChatTemplate | None:
        return None if self._builtin else self._template

    def render(
        self,
        turns: Sequence[Turn],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        if self._builtin:
            return phi3_prompt(turns, add_generation_prompt)
        if self._template is None:
            raise PromptError("this model has no chat template; use /v1/completions", "messages")
        messages = [t.message() for t in turns]
        try:
            return self._template.render(messages, add_generation_prompt, tools)
        except Exception as exc:  # templates raise on conversations they do not support
            raise PromptError(f"the model's chat template rejected the messages: {exc}") from exc
