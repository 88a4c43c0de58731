"""What makes a random tiny model answer deterministically: a byte-level BPE tokenizer
trained on a small corpus, and weights imprinted so that greedy decoding follows a fixed
chain of tokens. Shared by the tiny test models (tiny_phi3, tiny_qwen2), which differ only
in their architecture, their added tokens and their chat template."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.modelstore import store
from app.modelstore.export import SAMPLE_GROUP_SIZE, export_model

logger = logging.getLogger(__name__)

SEED = 1234

# Logit of the intended next token, in units where the others spread with std ~1/16 of it:
# wide enough that bf16 vs f32 kernels never flip the argmax, narrow enough that sampling
# at temperature 2 still wanders.
_MARGIN = 10.0
# How far every embedding moves along the quiet tokens' direction: their logits are then
# about -_MARGIN * _QUIET_SHIFT, while the successor's stays near +_MARGIN.
_QUIET_SHIFT = 4.0

# Text the tiny tokenizer learns its merges from: varied enough that ordinary English
# prompts tokenize into words rather than bytes. Byte-level BPE covers every other string.
_CORPUS = """\
The capital of France is Paris. The capital of Germany is Berlin.
What is the capital of Italy? Rome is the capital of Italy.
You are a helpful AI assistant. Can you introduce yourself?
I am an assistant that answers questions about science, history and code.
Write a short poem about the sea and the wind and the stars at night.
def add(a, b): return a + b  # Python functions return values.
The quick brown fox jumps over the lazy dog while the cat sleeps.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 2.71 42.
Hello world! How are you today? I am fine, thank you very much.
Please summarise the following text in one sentence.
JSON objects look like {"name": "value", "count": 3, "items": [1, 2, 3]}.
Machine learning models predict the next token from the previous tokens.
OpenVINO runs neural networks fast on Intel CPUs and GPUs.
Tell me a joke about programmers and computers and coffee.
The weather today is sunny with a light breeze from the west.
"""


def train_bpe(vocab_size: int, special_tokens: Sequence[str]) -> Any:
    """A GPT-2-style byte-level BPE tokenizer (`tokenizers.Tokenizer`) learnt from the
    corpus, deterministic for a given size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    return tok


def reply_chain(tokenizer: Any, lead: str, reply: str, end: str) -> list[int]:
    """The tokens greedy decoding walks: the generation prompt's last token (`lead`), the
    reply, then the turn's end token. They must be distinct, since each token has one
    successor."""
    chain = [
        *tokenizer.encode(lead),
        *tokenizer.encode(reply),
        tokenizer.convert_tokens_to_ids(end),
    ]
    if len(set(chain)) != len(chain):
        raise RuntimeError(f"the reply {reply!r} must tokenize into distinct tokens")
    return list(chain)


def _successors(chain: list[int], vocab: int, rng: Any) -> list[int]:
    """A permutation of the vocabulary: token -> the token the model should emit next.
    The chain's tokens lead into each other (the last back to the first); every other
    token follows a fixed random cycle."""
    import torch

    nxt = [-1] * vocab
    for here, there in zip(chain, chain[1:] + chain[:1], strict=True):
        nxt[here] = there
    rest = [t for t in range(vocab) if nxt[t] < 0]
    order = torch.randperm(len(rest), generator=rng).tolist()
    cycle = [rest[i] for i in order]
    for here, there in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        nxt[here] = there
    return nxt


def imprint_reply(
    model: Any, chain: list[int], hidden: int, tokens: int, quiet: Sequence[int] = ()
) -> None:
    """Turn the random model into a near-bigram model with wide logit margins.

    Large random embeddings dominate the residual stream (the random layers only add
    noise of about a tenth of their size), and the lm_head row of each token's successor
    is that token's embedding, so argmax(logits) is the successor by a wide margin. This
    gives tests exact, readable expected text that every backend and precision agrees on.

    `quiet` tokens (whitespace) are ones the model should never choose when it has a
    choice: under a JSON grammar, whitespace is always allowed, and a near-bigram model
    that prefers it among the few tokens the grammar leaves writes it until the budget
    runs out. Every embedding then shares one direction, which their lm_head rows oppose,
    so their logits sit far below every other token's for any input."""
    import torch

    rng = torch.Generator().manual_seed(SEED)
    embed = model.get_input_embeddings().weight
    vocab = embed.shape[0]
    with torch.no_grad():
        table = torch.randn(vocab, hidden, generator=rng)
        # Rows past the tokenizer's tokens stay zero: no greedy step can pick an id that
        # has no text.
        head = torch.zeros_like(table)
        successors = _successors(chain, tokens, rng)
        head[successors] = table[:tokens] * (_MARGIN / hidden)
        if quiet:
            emitted = set(chain[1:])
            if emitted.intersection(quiet):
                raise RuntimeError("a token of the reply cannot be quiet")
            direction = torch.randn(hidden, generator=rng)
            direction /= direction.norm()
            table += _QUIET_SHIFT * direction
            head[list(quiet)] = -_MARGIN * direction
        embed.copy_(table)
        model.get_output_embeddings().weight.copy_(head)


def build_tiny(
    store_dir: Path, name: str, build_hf: Callable[[Path], None], *, force: bool = False
) -> Path:
    """A tiny model built into the store: its HF folder by `build_hf`, then exported with
    the sample's flags, as a user's model would be."""
    out = store.model_dir(store_dir, name)
    if not store.needs_build(out, name, force):
        return out
    with tempfile.TemporaryDirectory(prefix=f"{name}-hf-") as tmp:
        hf = Path(tmp)
        logger.info("[1/2] Creating %s (random weights, seed %d) in %s", name, SEED, hf)
        build_hf(hf)
        logger.info("[2/2] Exporting with the sample's flags")
        return export_model(
            hf,
            out,
            group_size=SAMPLE_GROUP_SIZE,
            trust_remote_code=True,
            recipe={"model": name, "seed": SEED},
        )
