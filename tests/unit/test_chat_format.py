from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
from transformers import AutoTokenizer

from app.chat_format import ChatFormatter, ChatTemplate, PromptError, Turn, phi3_prompt
from app.prompt_templates import PHI3_CHAT_TEMPLATE
from app.textmodel import TextModel

CONVERSATION = [
    Turn("system", "You are a helpful AI assistant."),
    Turn("user", "can you introduce yourself?"),
    Turn("assistant", "I am Phi-3.\nAsk me anything."),
    Turn("user", "What is 2+2? Answer with {{ braces }} and <|tags|>."),
]


def official(turns: list[Turn], add_generation_prompt: bool) -> str:
    template = jinja2.Environment().from_string(PHI3_CHAT_TEMPLATE)
    return template.render(
        messages=[{"role": t.role, "content": t.content} for t in turns],
        add_generation_prompt=add_generation_prompt,
        eos_token="<|endoftext|>",
    )


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_phi3_mapping_equals_official_template_byte_for_byte(add_generation_prompt: bool) -> None:
    ours = phi3_prompt(CONVERSATION, add_generation_prompt)
    assert ours.encode() == official(CONVERSATION, add_generation_prompt).encode()


def test_phi3_mapping_equals_shipped_tokenizer_template(
    text_model: TextModel, tiny_model_dir: Path
) -> None:
    messages = [{"role": t.role, "content": t.content} for t in CONVERSATION]
    tokenizer: Any = AutoTokenizer.from_pretrained(tiny_model_dir)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text_model.formatter.render(CONVERSATION) == rendered
    assert text_model.formatter.kind == "built-in Phi-3 mapping"


def test_system_message_is_kept() -> None:
    assert phi3_prompt([Turn("system", "S"), Turn("user", "U")]) == (
        "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\n"
    )


def test_other_models_use_their_own_template() -> None:
    template = ChatTemplate("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}", {})
    formatter = ChatFormatter("llama", template)
    assert formatter.render([Turn("user", "hi")]) == "[user]hi"


def test_model_without_template_is_refused() -> None:
    formatter = ChatFormatter("gpt2", None)
    with pytest.raises(PromptError):
        formatter.render([Turn("user", "hi")])
