"""What the server itself knows about the served model: its tokenizer, its context length,
its eos ids, and how its token stream turns back into text."""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tokenizers import AddedToken, Tokenizer

from app.chat_format import ChatFormatter, ChatTemplate, Turn
from app.core.hermes import tool_format_for
from app.core.tools import OVCHAT_FORMAT, ToolFormat
from app.prompt_templates import PHI3_ADDED_TOKENS

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


def model_context_length(folder: Path) -> int:
    """The model's context length: its config's, else its tokenizer's stated limit. The one
    source for the server's budget checks and the engine's scheduler checks."""
    config = json.loads((folder / "config.json").read_text())
    limit = _read_json(folder / "tokenizer_config.json").get("model_max_length")
    return _context_length(config, limit if isinstance(limit, int) else None)


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

    def added_tokens(self) -> dict[str, bool]:
        """Every added token's text, and whether the tokenizer marks it special."""
        ...

    def prompt_encoder(self, markers: frozenset[str]) -> PromptEncoder: ...


class PromptEncoder(Protocol):
    def escape(self, content: str) -> str:
        """Message content ready for the template: markers it spells stand in for."""
        ...

    def encode(self, rendered: str) -> list[int]:
        """The rendered prompt's ids: the template's markers special, the rest text."""
        ...


class _StandIns:
    """Markers spelled in message content, swapped for stand-ins before the template
    renders it: strings no client can write (private-use characters around a secret
    number, digits only, so that a template's `upper` or `title` leaves them be)."""

    _stand_ins: dict[str, str]
    _markers: re.Pattern[str] | None

    def escape(self, content: str) -> str:
        if self._markers is None:
            return content
        return self._markers.sub(lambda m: self._stand_ins[m.group()], content)


class MarkerEncoder(_StandIns):
    """Encodes chat prompts so that only the template's own markers become special tokens:
    in message content `<|im_end|>` is the ten characters it spells, never the end of a
    turn, whatever role the message has.

    Before rendering, each marker spelled in content is replaced by a stand-in, a string
    no client can write (private-use characters around a secret number): the template
    renders content as it always does (trims, conditions, tojson), and afterwards the only
    marker text left in the prompt is the template's. For encoding, the tokenizer is
    copied with every marker disabled (marked special, special tokens not parsed) and an
    alias added per marker (also unwritable, with the marker's own lstrip, rstrip and
    single_word, mapped back to its id): the template's markers become aliases, stand-ins
    become their marker's plain text again, and the whole prompt is encoded in one pass.
    The text is split and normalized exactly where the original tokenizer splits it, so a
    prompt whose content spells no marker gets the very ids it always got."""

    def __init__(self, backend: Tokenizer, markers: frozenset[str]) -> None:
        data = json.loads(backend.to_str())
        added = [entry for entry in data.get("added_tokens", []) if entry["content"] in markers]
        for entry in added:
            entry["special"] = True
        self._tokenizer = Tokenizer.from_str(json.dumps(data))
        self._tokenizer.encode_special_tokens = True
        # Digits only: a template's `upper` or `title` leaves them as they are.
        secret = secrets.randbelow(10**12)
        self._stand_ins: dict[str, str] = {}  # marker -> its stand-in in content
        self._encoded: dict[str, str] = {}  # marker or stand-in -> what is encoded
        self._ids: dict[int, int] = {}  # alias id -> marker id
        # A single-word marker is a token only between word boundaries; the check is made
        # here, on the marker's own neighbours, since its alias has none of the same.
        self._single_word = {e["content"] for e in added if e.get("single_word", False)}
        for i, entry in enumerate(added):
            marker = entry["content"]
            alias = f"\ue000{secret}:{i}\ue001"
            stand_in = f"\ue002{secret}:{i}\ue003"
            self._tokenizer.add_tokens(
                [
                    AddedToken(
                        alias,
                        single_word=False,
                        lstrip=entry.get("lstrip", False),
                        rstrip=entry.get("rstrip", False),
                        normalized=entry.get("normalized", False),
                        special=False,
                    )
                ]
            )
            self._ids[int(self._tokenizer.token_to_id(alias))] = int(entry["id"])
            self._stand_ins[marker] = stand_in
            self._encoded[marker] = alias
            self._encoded[stand_in] = marker
        # Longest first: at one position the longest marker wins, as the tokenizer's own
        # matching does (`<|endoftext|>` over `<|end|>`).
        self._markers = _alternation(self._stand_ins)
        self._rendered = _alternation(self._encoded)

    def encode(self, rendered: str) -> list[int]:
        if self._rendered is not None:
            rendered = self._rendered.sub(self._replacement, rendered)
        ids = self._tokenizer.encode(rendered, add_special_tokens=False).ids
        return [self._ids.get(i, i) for i in ids]

    def _replacement(self, match: re.Match[str]) -> str:
        found = match.group()
        if found in self._single_word:
            text, start, end = match.string, match.start(), match.end()
            if (start > 0 and _word_char(text[start - 1])) or (
                end < len(text) and _word_char(text[end])
            ):
                return found  # not a word of its own: plain text, as the tokenizer has it
        return self._encoded[found]


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _alternation(strings: dict[str, str]) -> re.Pattern[str] | None:
    ordered = sorted(strings, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


class PartEncoder(_StandIns):
    """The same contract for tokenizers only transformers' Python code runs (slow-only):
    the rendered prompt is encoded around the stand-ins, each marker a stand-in holds as
    plain text. Tokens never span a stand-in's border there, so a prompt whose content
    spells a marker may get a few other ids at those borders than whole-text encoding
    would give; one that spells none is encoded whole, as always."""

    def __init__(self, tokenizer: Any, markers: frozenset[str]) -> None:
        self._tokenizer = tokenizer
        secret = secrets.randbelow(10**12)
        ordered = sorted(markers, key=len, reverse=True)
        self._stand_ins = {m: f"\ue002{secret}:{i}\ue003" for i, m in enumerate(ordered)}
        self._markers_of = {s: m for m, s in self._stand_ins.items()}
        self._markers = _alternation(self._stand_ins)
        self._split = _alternation(self._markers_of)

    def encode(self, rendered: str) -> list[int]:
        if self._split is None or not self._split.search(rendered):
            return list(self._tokenizer.encode(rendered, add_special_tokens=False))
        ids: list[int] = []
        position = 0
        for match in self._split.finditer(rendered):
            ids += self._tokenizer.encode(
                rendered[position : match.start()], add_special_tokens=False
            )
            ids += self._tokenizer.encode(
                self._markers_of[match.group()], add_special_tokens=False, split_special_tokens=True
            )
            position = match.end()
        ids += self._tokenizer.encode(rendered[position:], add_special_tokens=False)
        return ids


def _is_byte_level(backend: Tokenizer | None) -> bool:
    return "ByteLevel" in repr(getattr(backend, "decoder", None))


class RustCodec:
    """The Rust `tokenizers` library called directly: what transformers' fast tokenizers
    run under their Python layers (tests compare the two)."""

    def __init__(self, backend: Tokenizer, clean_up: bool) -> None:
        self._backend = backend
        self._clean_up = clean_up
        self.byte_level = _is_byte_level(backend)
        # Read once: tokenizers builds the whole vocabulary map to count it (16 ms for
        # SmolLM2's 49k tokens), and requests with token ids check against it.
        self._vocab_size = int(backend.get_vocab_size(with_added_tokens=True))

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
        return self._vocab_size

    def added_tokens(self) -> dict[str, bool]:
        return {
            t.content: bool(t.special) for t in self._backend.get_added_tokens_decoder().values()
        }

    def prompt_encoder(self, markers: frozenset[str]) -> PromptEncoder:
        return MarkerEncoder(self._backend, markers)


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

    def added_tokens(self) -> dict[str, bool]:
        decoder = getattr(self._tokenizer, "added_tokens_decoder", {})
        return {str(t): bool(getattr(t, "special", True)) for t in decoder.values()}

    def prompt_encoder(self, markers: frozenset[str]) -> PromptEncoder:
        backend = getattr(self._tokenizer, "backend_tokenizer", None)
        if isinstance(backend, Tokenizer):
            return MarkerEncoder(backend, markers)
        return PartEncoder(self._tokenizer, markers)


@dataclass(frozen=True)
class TokenizerFiles:
    """The model folder's tokenizer, its named special tokens and its default chat template."""

    codec: Codec
    special_tokens: dict[str, str]
    chat_template: str | None
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
        return TokenizerFiles(
            codec=RustCodec(
                Tokenizer.from_file(str(tokenizer_json)),
                bool(config.get("clean_up_tokenization_spaces", False)),
            ),
            special_tokens=tokens,
            chat_template=template,
            source="tokenizer.json",
        )
    return _read_with_transformers(folder)


def _read_with_transformers(folder: Path) -> TokenizerFiles:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    return TokenizerFiles(
        codec=TransformersCodec(tokenizer),
        special_tokens={str(k): str(v) for k, v in tokenizer.special_tokens_map.items()},
        chat_template=_default_template(getattr(tokenizer, "chat_template", None)),
        source=f"transformers {type(tokenizer).__name__}",
    )


# Markup-looking tokens: `<tool_call>`, `<|im_start|>`, `[INST]`; not whitespace or words.
_MARKUP = re.compile(r"<[^\s<>]{1,64}>|\[/?[A-Z_]{2,32}\]")


def template_markers(files: TokenizerFiles, model_type: str) -> frozenset[str]:
    """The added tokens that only a chat template may write: the special ones, the named
    special tokens, and a markup-looking added token the template itself writes (Qwen's
    `<tool_call>` is not marked special, yet it is the template's). A token the template
    splits content on (`content.split('</think>')`) is content's to hold, and stays text."""
    added = files.codec.added_tokens()
    template = PHI3_ADDED_TOKENS if model_type == "phi3" else ()
    source = files.chat_template or ""

    def written_by_template(text: str) -> bool:
        if not (_MARKUP.fullmatch(text) and text in source):
            return False
        return f"split('{text}')" not in source and f'split("{text}")' not in source

    return frozenset(
        text
        for text, special in added.items()
        if special
        or text in files.special_tokens.values()
        or text in template
        or written_by_template(text)
    )


@dataclass
class TextModel:
    codec: Codec
    formatter: ChatFormatter
    eos_token_ids: frozenset[int]
    context_length: int
    model_type: str
    prompt_encoder: PromptEncoder
    # How the model is told about tools and writes its calls (app/core/tools.py): chosen
    # from its chat template, never by its name.
    tool_format: ToolFormat = OVCHAT_FORMAT

    @classmethod
    def load(cls, folder: Path) -> TextModel:
        files = read_tokenizer(folder)
        config = json.loads((folder / "config.json").read_text())
        model_type = str(config.get("model_type", ""))
        template = (
            ChatTemplate(files.chat_template, files.special_tokens) if files.chat_template else None
        )
        formatter = ChatFormatter(model_type, template)
        model = cls(
            codec=files.codec,
            formatter=formatter,
            eos_token_ids=_eos_ids(folder, files),
            context_length=model_context_length(folder),
            model_type=model_type,
            prompt_encoder=files.codec.prompt_encoder(template_markers(files, model_type)),
            tool_format=tool_format_for(formatter.template),
        )
        logger.info(
            "Tokenizer loaded from %s: %s model, context %d, eos ids %s, chat prompts via %s, "
            "tool calls in %s format",
            files.source,
            model_type or "unknown",
            model.context_length,
            sorted(model.eos_token_ids),
            model.formatter.kind,
            model.tool_format.name,
        )
        return model

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Raw text as the tokenizer encodes it, special tokens parsed: a completions prompt,
        whose caller writes the template. By default no BOS is added."""
        return self.codec.encode(text, add_special_tokens)

    def encode_chat(
        self,
        turns: Sequence[Turn],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        """A conversation as the model was trained on it, message content kept as text:
        also the calls' names and arguments and the tools' specs (`tools`, for a template
        that describes them), whose strings a client wrote as well."""
        escape = self.prompt_encoder.escape
        escaped = [
            Turn(
                t.role,
                escape(t.content),
                tuple((escape(name), _escaped(args, escape)) for name, args in t.calls),
                None if t.name is None else escape(t.name),
            )
            for t in turns
        ]
        rendered = self.formatter.render(
            escaped, add_generation_prompt, _escaped(tools, escape) if tools else None
        )
        return self.prompt_encoder.encode(rendered)

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


def _escaped(value: Any, escape: Callable[[str], str]) -> Any:
    """Every string in a JSON value (keys too) escaped: the template renders them as
    text, through `tojson` or as they are."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, list):
        return [_escaped(item, escape) for item in value]
    if isinstance(value, dict):
        return {escape(str(k)): _escaped(v, escape) for k, v in value.items()}
    return value


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
