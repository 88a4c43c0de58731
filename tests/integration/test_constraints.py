"""choice, regex and grammar (EBNF and llama.cpp's GBNF) on the real default model,
greedy: every output matches its constraint, through the openai SDK's extra_body and raw
HTTP, and what the engine cannot compile is a 400 naming the field before admission."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Server

QUESTIONS = [
    "Is Paris in France?",
    "Name an animal.",
    "Give me a phone number.",
    "What is two plus two?",
]
PHONE = r"\(\d{3}\) \d{3}-\d{4}"
# llama.cpp's GBNF, with what it allows: comments, classes, bounded repetition, groups.
LIST_GBNF = r"""# a short list of lowercase words
root ::= "[" item ("," " "? item){1,2} "]"
item ::= "\"" [a-z]{2,8} "\""  # a quoted word
"""


def chat(server: Server, question: str, **extra: Any) -> str:
    completion = server.client().chat.completions.create(
        model=server.model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=40,
        extra_body=extra,
    )
    return completion.choices[0].message.content or ""


@pytest.mark.parametrize("question", QUESTIONS)
def test_choice_regex_and_grammars_always_match(default_server: Server, question: str) -> None:
    choices = ["yes", "no", "maybe so"]
    assert chat(default_server, question, structured_outputs={"choice": choices}) in choices
    assert chat(default_server, question, guided_choice=choices) in choices
    assert re.fullmatch(PHONE, chat(default_server, question, guided_regex=PHONE))
    assert re.fullmatch(PHONE, chat(default_server, question, structured_outputs={"regex": PHONE}))
    listed = chat(default_server, question, grammar=LIST_GBNF)
    words = json.loads(listed)
    assert 2 <= len(words) <= 3 and all(re.fullmatch("[a-z]{2,8}", w) for w in words)
    ebnf = 'root ::= "The answer is " ("yes" | "no") "."'
    assert chat(default_server, question, guided_grammar=ebnf) in (
        "The answer is yes.",
        "The answer is no.",
    )


def test_greedy_choice_is_deterministic(default_server: Server) -> None:
    answers = {
        chat(default_server, "Is Paris in France?", guided_choice=["yes", "no"]) for _ in range(3)
    }
    assert answers == {"yes"}


def test_legacy_completions_take_them_too(default_server: Server) -> None:
    response = httpx.post(
        f"{default_server.url}/v1/completions",
        json={
            "model": default_server.model,
            "prompt": "My phone number is",
            "temperature": 0,
            "max_tokens": 20,
            "guided_regex": " " + PHONE,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert re.fullmatch(" " + PHONE, response.json()["choices"][0]["text"])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"grammar": "root ::= missing"}, "grammar"),
        ({"structured_outputs": {"grammar": "root ::= ("}}, "structured_outputs.grammar"),
        ({"guided_regex": "(unclosed"}, "guided_regex"),
        ({"guided_regex": "a", "response_format": {"type": "json_object"}}, "guided_regex"),
        ({"guided_choice": ["a"], "logprobs": True, "top_logprobs": 2}, "top_logprobs"),
    ],
)
def test_what_cannot_be_used_is_a_400_naming_the_field(
    default_server: Server, extra: dict[str, Any], param: str
) -> None:
    body = {"model": default_server.model, "messages": [{"role": "user", "content": "Hi"}]}
    response = httpx.post(
        f"{default_server.url}/v1/chat/completions", json=body | extra, timeout=60
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    # The server still serves: a bad grammar never reached a step.
    assert chat(default_server, "Is Paris in France?", guided_choice=["yes", "no"]) == "yes"
