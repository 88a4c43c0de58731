"""What the server itself knows about the served model: its tokenizer, its context length,
its eos ids, and how its token stream turns back into text."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tokenizers import Tokenizer

from app.chat_format import ChatFormatter, ChatTemplate

logger = logging.getLogger(__name__)


def _eos_ids(folder: Path, files: TokenizerFiles) -> frozenset[int]:
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
    eos = files.special_tokens.get("eos_token")
    eos_id = files.codec.token_id(eos) if eos else None
    if eos_id is not None:
        ids.add(eos_id)
    return frozenset(ids)


def _context_length(config: dict[str, Any], tokenizer_limit: int | None) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(config.get(key), int):
            return int(config[key])
    # transformers writes a huge sentinel when the tokenizer states no limit.
    return tokenizer_limit if tokenizer_limit is not None and tokenizer_limit < 10**7 else 2048


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


_SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


def clean_up_tokenization(text: str) -> str:
    """transformers' `clean_up_tokenization`, for tokenizers configured to use it."""
    for spaced, joined in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(spaced, joined)
    return text


class Codec(Protocol):
    """Text to token ids and back, the way the model's tokenizer does it."""

    byte_level: bool  # pieces are GPT-2 byte stand-ins rather than text

    def encode(self, text: str, add_special_tokens: bool) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...  # special tokens left out

    def piece(self, token_id: int) -> str: ...

    def token_id(self, token: str) -> int | None: ...

    @property
    def vocab_size(self) -> int: ...


def _is_byte_level(backend: Tokenizer | None) -> bool:
    return "ByteLevel" in repr(getattr(backend, "decoder", None))


class RustCodec:
    """The Rust `tokenizers` library called directly: what transformers' fast tokenizers
    run under their Python layers (tests compare the two)."""

    def __init__(self, backend: Tokenizer, clean_up: bool) -> None:
        self._backend = backend
        self._clean_up = clean_up
        self.byte_level = _is_byte_level(backend)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        text = str(self._backend.decode(list(token_ids), skip_special_tokens=True))
        return clean_up_tokenization(text) if self._clean_up else text

    def piece(self, token_id: int) -> str:
        return str(self._backend.id_to_token(token_id) or "")

    def token_id(self, token: str) -> int | None:
        found = self._backend.token_to_id(token)
        return None if found is None else int(found)

    @property
    def vocab_size(self) -> int:
        return int(self._backend.get_vocab_size(with_added_tokens=True))


class TransformersCodec:
    """A tokenizer as transformers loads it, for files only transformers can read right."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.byte_level = _is_byte_level(backend)
        # Decoding runs twice per streamed token: the Rust decoder called directly skips
        # Python argument handling that costs more than the decoding itself.
        self._fast_decode = (
            RustCodec(backend, bool(getattr(tokenizer, "clean_up_tokenization_spaces", False)))
            if isinstance(backend, Tokenizer)
            else None
        )

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, token_ids: Sequence[int]) -> str:
        if self._fast_decode is not None:
            return self._fast_decode.decode(token_ids)
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def piece(self, token_id: int) -> str:
        return str(self._tokenizer.convert_ids_to_tokens(token_id) or "")

    def token_id(self, token: str) -> int | None:
        if token not in self._tokenizer.get_vocab():
            return None
        return int(self._tokenizer.convert_tokens_to_ids(token))

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)


@dataclass(frozen=True)
class TokenizerFiles:
    """The model folder's tokenizer, its named special tokens and its default chat template."""

    codec: Codec
    special_tokens: dict[str, str]
    chat_template: str | None
    model_max_length: int | None
    source: str


def _token_text(value: Any) -> str | None:
    # Special tokens are saved as strings or as serialized AddedTokens.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _default_template(value: Any) -> str | None:
    if isinstance(value, list):  # named templates, saved as [{"name", "template"}]
        value = {item.get("name"): item.get("template") for item in value}
    if isinstance(value, dict):
        value = value.get("default")
    return value if isinstance(value, str) and value else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def read_tokenizer(folder: Path) -> TokenizerFiles:
    """The tokenizer straight from `tokenizer.json` when transformers 5 wrote the files:
    it saves the very pipeline it runs, model-specific rebuilds included (for Llama and
    Phi-3 it replaces the hub's legacy normalizer with a Metaspace pre-tokenizer). Files
    from elsewhere (the hub's originals, transformers 4, remote code, slow-only
    tokenizers) go through transformers, as the pipeline it builds from them is the
    reference and may differ from the JSON."""
    config = _read_json(folder / "tokenizer_config.json")
    tokenizer_json = folder / "tokenizer.json"
    if (
        tokenizer_json.is_file()
        and config.get("backend") == "tokenizers"
        and "auto_map" not in config
    ):
        special = _read_json(folder / "special_tokens_map.json")
        tokens = {
            name: text
            for name in _SPECIAL_TOKEN_NAMES
            if (text := _token_text(config.get(name, special.get(name)))) is not None
        }
        # As transformers 5 saves them: the default template in its own file, named
        # ones beside it; files take priority over the config's entry.
        template_files = [
            path
            for path in (
                folder / "chat_template.jinja",
                folder / "additional_chat_templates" / "default.jinja",
            )
            if path.is_file()
        ]
        template = (
            template_files[0].read_text(encoding="utf-8")
            if template_files
            else _default_template(config.get("chat_template"))
        )
        limit = config.get("model_max_length")
        return TokenizerFiles(
            codec=RustCodec(
                Tokenizer.from_file(str(tokenizer_json)),
                bool(config.get("clean_up_tokenization_spaces", False)),
            ),
            special_tokens=tokens,
            chat_template=template,
            model_max_length=limit if isinstance(limit, int) else None,
            source="tokenizer.json",
        )
    return _read_with_transformers(folder)


def _read_with_transformers(folder: Path) -> TokenizerFiles:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    limit = getattr(tokenizer, "model_max_length", None)
    return TokenizerFiles(
        codec=TransformersCodec(tokenizer),
        special_tokens={str(k): str(v) for k, v in tokenizer.special_tokens_map.items()},
        chat_template=_default_template(getattr(tokenizer, "chat_template", None)),
        model_max_length=limit if isinstance(limit, int) else None,
        source=f"transformers {type(tokenizer).__name__}",
    )


@dataclass
class TextModel:
    codec: Codec
    formatter: ChatFormatter
    eos_token_ids: frozenset[int]
    context_length: int
    model_type: str

    @classmethod
    def load(cls, folder: Path) -> TextModel:
        files = read_tokenizer(folder)
        config = json.loads((folder / "config.json").read_text())
        model_type = str(config.get("model_type", ""))
        template = (
            ChatTemplate(files.chat_template, files.special_tokens) if files.chat_template else None
        )
        model = cls(
            codec=files.codec,
            formatter=ChatFormatter(model_type, template),
            eos_token_ids=_eos_ids(folder, files),
            context_length=_context_length(config, files.model_max_length),
            model_type=model_type,
        )
        logger.info(
            "Tokenizer loaded from %s: %s model, context %d, eos ids %s, chat prompts via %s",
            files.source,
            model_type or "unknown",
            model.context_length,
            sorted(model.eos_token_ids),
            model.formatter.kind,
        )
        return model

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        # Templates write their own special tokens; by default no BOS is added.
        return self.codec.encode(text, add_special_tokens)

    def token_id(self, token: str) -> int:
        """The id of a token given by its text, such as a special token's name."""
        found = self.codec.token_id(token)
        if found is None:
            raise KeyError(f"the tokenizer has no token {token!r}")
        return found

    @property
    def vocab_size(self) -> int:
        return self.codec.vocab_size

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes a token stands for, also when it is only part of a UTF-8
        character: what OpenAI's logprobs `bytes` carry so clients can reassemble text."""
        piece = self.codec.piece(token_id)
        byte_fallback = _BYTE_TOKEN.fullmatch(piece)
        if byte_fallback:
            return bytes([int(byte_fallback.group(1), 16)])
        if self.codec.byte_level:
            table = _byte_decoder()
            if all(ch in table for ch in piece):
                return bytes(table[ch] for ch in piece)
        return piece.replace("\u2581", " ").encode("utf-8")

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.codec.decode(token_ids)

    def decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self.codec)


class IncrementalDecoder:
    """Token ids in, text out, one delta at a time.

    Decoding a window that starts a few tokens back keeps word-initial spaces right (for
    SentencePiece and byte-level BPE alike), and a window that ends in U+FFFD is held back
    until the rest of its UTF-8 sequence arrives, so emoji and CJK are never split."""

    def __init__(self, codec: Codec) -> None:
        self._decode = codec.decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

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
