from __future__ import annotations

import random

import pytest

from app.textmodel import TextModel

SAMPLES = [
    "Hello world, this is plain text.",
    "Emoji 🙂🚀 and CJK 東京 and accents café naïve.",
    "  leading spaces\nand\ttabs",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_incremental_decoding_rebuilds_text_without_replacement_chars(
    text_model: TextModel, text: str
) -> None:
    ids = text_model.encode(text)
    decoder = text_model.decoder()
    pieces = [decoder.push([token]) for token in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_special_tokens_are_not_shown(text_model: TextModel) -> None:
    ids = text_model.encode("Hi") + text_model.tokenizer.convert_tokens_to_ids(["<|end|>"])
    decoder = text_model.decoder()
    assert "".join(decoder.push([t]) for t in ids) + decoder.flush() == "Hi"


def test_tiny_phi3_facts(text_model: TextModel) -> None:
    assert text_model.model_type == "phi3"
    assert text_model.context_length == 4096
    names = ["<|endoftext|>", "<|assistant|>", "<|end|>"]
    assert text_model.eos_token_ids == frozenset(text_model.tokenizer.convert_tokens_to_ids(names))


def test_window_decoding_equals_the_tokenizers_own_decode(text_model: TextModel) -> None:
    # The decoder calls the Rust backend directly; any id window must read exactly as
    # transformers' decode() reads it, special and byte-fallback tokens included.
    rng = random.Random(7)
    decoder = text_model.decoder()
    for _ in range(500):
        ids = [rng.randrange(text_model.vocab_size) for _ in range(rng.randrange(1, 6))]
        assert decoder._decode(ids) == text_model.decode(ids)
