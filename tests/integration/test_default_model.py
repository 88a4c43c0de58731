"""The embedded default model, where real text matters."""

from __future__ import annotations

from tests.integration.conftest import Server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_paris(default_server: Server) -> None:
    client = default_server.client()
    completion = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        temperature=0,
    )
    answer = completion.choices[0].message.content or ""
    assert "Paris" in answer
    # The repaired tokenizer stops on <|im_end|> and decodes spaces as spaces.
    assert completion.choices[0].finish_reason == "stop"
    assert "<|im_end|>" not in answer and "▁" not in answer and "Ġ" not in answer
    stream = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer


def test_stop_string_across_tokens(default_server: Server) -> None:
    client = default_server.client()
    full = (
        client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,
            temperature=0,
        )
        .choices[0]
        .message.content
        or ""
    )
    cut = full.index("Paris") + 2  # "Pa|ris": the stop string starts inside a token
    stop = full[cut - 4 : cut + 3]
    for stream in (False, True):
        response = client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,
            temperature=0,
            stop=[stop],
            stream=stream,
        )
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in response if c.choices)
        else:
            text = response.choices[0].message.content
        assert text == full[: full.index(stop)]
