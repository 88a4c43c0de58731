"""What the server knows of an embedding model without its engine: the tokenizer it counts
and checks lengths with, the vector size, the length the model was trained for, and the
pooling and normalization sentence-transformers' config gives it (which the engine
applies). Read from the export folder; nothing here runs the model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Pooling = Literal["mean", "cls", "max", "mean_sqrt_len", "lasttoken"]

# sentence-transformers' Pooling config flags, by the mode each turns on.
_POOLING_FLAGS: dict[str, Pooling] = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}
_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"


class EmbeddingModelError(ValueError):
    """The folder is not an embedding model this server can run as its config says."""


def _modules(folder: Path) -> list[dict[str, Any]]:
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError) as exc:
        raise EmbeddingModelError(f"{folder}: unreadable modules.json ({exc})") from exc
    if not isinstance(modules, list):
        raise EmbeddingModelError(f"{folder}: modules.json is not a list of modules")
    return modules


def _pooling_folder(folder: Path) -> Path:
    """Checks the module chain is one we apply exactly: Transformer, Pooling, and an
    optional Normalize. Anything else (a Dense projection, say) would give vectors other
    than the model's, so the model is refused rather than served wrong."""
    types = [str(m.get("type", "")) for m in _modules(folder)]
    if types[:2] != [_TRANSFORMER, _POOLING] or any(t != _NORMALIZE for t in types[2:]):
        raise EmbeddingModelError(
            f"{folder}: unsupported sentence-transformers modules {types}; "
            "supported: Transformer, Pooling, then optionally Normalize"
        )
    return folder / str(_modules(folder)[1].get("path") or "1_Pooling")


def read_pooling(folder: Path) -> tuple[Pooling, int]:
    """The pooling mode and the vector size from the Pooling module's config."""
    config = json.loads((_pooling_folder(folder) / "config.json").read_text())
    modes = [mode for flag, mode in _POOLING_FLAGS.items() if config.get(flag)]
    others = [
        key
        for key, on in config.items()
        if key.startswith("pooling_mode_") and on and key not in _POOLING_FLAGS
    ]
    if len(modes) != 1 or others:
        raise EmbeddingModelError(
            f"{folder}: pooling {modes + others} is not supported; one of "
            f"{', '.join(_POOLING_FLAGS.values())} is"
        )
    return modes[0], int(config["word_embedding_dimension"])


def read_normalized(folder: Path) -> bool:
    """Whether the model ends in sentence-transformers' Normalize (unit vectors)."""
    return any(m.get("type") == _NORMALIZE for m in _modules(folder))


@dataclass(frozen=True)
class EmbeddingModelInfo:
    dimensions: int
    max_tokens: int  # sentence_bert_config's max_seq_length: the length it was trained for
    normalized: bool
    pooling: str
    vocab_size: int  # rows of the model's token embedding: token ids must be below it
    tokenizer: Any = field(repr=False, compare=False)

    def encode(self, text: str) -> list[int]:
        """Token ids with the model's special tokens ([CLS] ... [SEP] for BERT), never
        truncated: the caller compares the count with max_tokens."""
        return list(self.tokenizer.encode(text, add_special_tokens=True).ids)

    @classmethod
    def load(cls, folder: Path) -> EmbeddingModelInfo:
        from tokenizers import Tokenizer

        pooling, dimensions = read_pooling(folder)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # all-MiniLM's tokenizer.json truncates at 128 and pads to 128: lengths are the
        # server's to check and padding the engine's to do.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        config = json.loads((folder / "config.json").read_text())
        positions = int(config.get("max_position_embeddings") or 0)
        st_config = json.loads((folder / "sentence_bert_config.json").read_text())
        max_tokens = int(st_config.get("max_seq_length") or positions)
        if positions:
            max_tokens = min(max_tokens, positions)
        vocab = int(config.get("vocab_size") or tokenizer.get_vocab_size(with_added_tokens=True))
        return cls(
            dimensions=dimensions,
            max_tokens=max_tokens,
            normalized=read_normalized(folder),
            pooling=pooling,
            vocab_size=vocab,
            tokenizer=tokenizer,
        )
