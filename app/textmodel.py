"""What the server itself knows about the served model: its tokenizer, its context length,
its eos ids, and how its token stream turns back into text."""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.chat_format import ChatFormatter

logger = logging.getLogger(__name__)


def _eos_ids(folder: Path, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(int(v) for v in value)
            if ids:
                break
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _context_length(config: dict[str, Any], tokenizer: Any) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(config.get(key), int):
            return int(config[key])
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and limit < 10**7 else 2048


def context_length_of(folder: Path) -> int:
    """The context length from the model's config alone (no tokenizer load)."""
    return _context_length(json.loads((folder / "config.json").read_text()), None)


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for raw bytes, reversed."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


@dataclass
class TextModel:
    tokenizer: Any
    formatter: ChatFormatter
    eos_token_ids: frozenset[int]
    context_length: int
    model_type: str

    @property
    def _byte_level(self) -> bool:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        return "ByteLevel" in repr(getattr(backend, "decoder", None))

    @classmethod
    def load(cls, folder: Path) -> TextModel:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        config = json.loads((folder / "config.json").read_text())
        model_type = str(config.get("model_type", ""))
        model = cls(
            tokenizer=tokenizer,
            formatter=ChatFormatter(model_type, tokenizer),
            eos_token_ids=_eos_ids(folder, tokenizer),
            context_length=_context_length(config, tokenizer),
            model_type=model_type,
        )
        logger.info(
            "Tokenizer loaded: %s model, context %d, eos ids %s, chat prompts via %s",
            model_type or "unknown",
            model.context_length,
            sorted(model.eos_token_ids),
            model.formatter.kind,
        )
        return model

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        # Templates write their own special tokens; by default no BOS is added.
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes a token stands for, also when it is only part of a UTF-8
        character: what OpenAI's logprobs `bytes` carry so clients can reassemble text."""
        piece = str(self.tokenizer.convert_ids_to_tokens(token_id))
        byte_fallback = _BYTE_TOKEN.fullmatch(piece)
        if byte_fallback:
            return bytes([int(byte_fallback.group(1), 16)])
        if self._byte_level:
            table = _byte_decoder()
            if all(ch in table for ch in piece):
                return bytes(table[ch] for ch in piece)
        return piece.replace("\u2581", " ").encode("utf-8")

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    def decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self.tokenizer)


class IncrementalDecoder:
    """Token ids in, text out, one delta at a time.

    Decoding a window that starts a few tokens back keeps word-initial spaces right (for
    SentencePiece and byte-level BPE alike), and a window that ends in U+FFFD is held back
    until the rest of its UTF-8 sequence arrives, so emoji and CJK are never split."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        # Fast tokenizers: their Rust decoder, called directly, is what decode() runs
        # after several layers of Python argument handling that cost more than the
        # decoding itself at two calls per token.
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._clean_up = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        if self._backend is None:
            return str(self._tokenizer.decode(ids, skip_special_tokens=True))
        text = str(self._backend.decode(ids, skip_special_tokens=True))
        return str(self._tokenizer.clean_up_tokenization(text)) if self._clean_up else text

    def push(self, token_ids: tuple[int, ...] | list[int]) -> str:
        self._ids.extend(token_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        if final:
            self._prefix = self._read = len(self._ids)
        return ""
