"""A Phi-3-shaped model small enough to build in seconds, for tests and for performance
work at the real sizes (random weights: the content is noise, the shapes and the speed are
Phi-3's)."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.modelstore import store
from app.modelstore.export import SAMPLE_GROUP_SIZE, export_model
from app.prompt_templates import PHI3_ADDED_TOKENS, PHI3_CHAT_TEMPLATE, PHI3_EOS_TOKENS

logger = logging.getLogger(__name__)

SEED = 1234

# What the tiny model answers to every chat prompt, greedily, then `<|end|>`. Its tokens
# must be distinct (see `_successors`); it spans multi-byte characters on purpose, so
# streaming tests see UTF-8 sequences split across tokens.
TINY_REPLY = "Hello! I am a helpful test model: the capital of France is Paris, café 🙂"
# Logit of the intended next token, in units where the others spread with std ~1/16 of it:
# wide enough that bf16 vs f32 kernels never flip the argmax, narrow enough that sampling
# at temperature 2 still wanders.
_MARGIN = 10.0

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


@dataclass(frozen=True)
class Phi3Shape:
    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    base_vocab: int
    # The model's vocabulary: Phi-3's embedding and lm_head have 32064 rows, more than its
    # tokenizer has tokens; 0 means exactly the tokenizer's size.
    model_vocab: int = 0
    # Phi-3-mini's 3.8 B parameters in float32 would take 15 GB before export: bfloat16,
    # as Phi-3 itself is published, halves that.
    dtype: str = "float32"
    sliding_window: int = 2047  # Phi-3-mini-4k's
    # The imprint makes the tiny model answer from the last token alone, by wide margins.
    # Without it, random weights at a large scale make every token depend on all the
    # tokens the model attends, which is what a test of the attention window needs.
    imprint: bool = True
    initializer_range: float = 0.02


TINY = Phi3Shape("tiny-phi3", 256, 512, 2, 4, base_vocab=1024)
# Attends 64 tokens back, so a test sees KV blocks leave the window within a short prompt.
TINY_WINDOW = Phi3Shape(
    "tiny-phi3-window",
    256,
    512,
    2,
    4,
    base_vocab=1024,
    sliding_window=64,
    imprint=False,
    initializer_range=0.5,
)
# The real Phi-3-mini sizes (see the reference notes): same speed, random content.
PHI3_MINI = Phi3Shape(
    "phi3-shaped", 3072, 8192, 32, 32, base_vocab=32000, model_vocab=32064, dtype="bfloat16"
)


def build_tokenizer(shape: Phi3Shape) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=shape.base_vocab,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(PHI3_ADDED_TOKENS[1:]),
        chat_template=PHI3_CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    fast.add_special_tokens({"eos_token": "<|endoftext|>"})
    # Phi-3 numbers its added tokens consecutively after the base vocabulary.
    ids = fast.convert_tokens_to_ids(list(PHI3_ADDED_TOKENS))
    if ids != list(range(ids[0], ids[0] + len(PHI3_ADDED_TOKENS))):
        raise RuntimeError(f"Phi-3 added tokens are not consecutive: {ids}")
    return fast


def build_hf_folder(shape: Phi3Shape, folder: Path) -> None:
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    tokenizer = build_tokenizer(shape)
    vocab = max(len(tokenizer), shape.model_vocab)
    token_id = tokenizer.convert_tokens_to_ids
    eot = token_id("<|endoftext|>")
    config = Phi3Config(
        vocab_size=vocab,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_attention_heads,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        sliding_window=shape.sliding_window,
        initializer_range=shape.initializer_range,
        bos_token_id=token_id("<s>"),
        eos_token_id=eot,
        pad_token_id=eot,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, shape.dtype))  # allocate in it, not convert later
    try:
        model = Phi3ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    if shape.imprint:
        _imprint_reply(model, tokenizer, shape.hidden_size, len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    GenerationConfig(
        bos_token_id=token_id("<s>"),
        eos_token_id=[token_id(t) for t in PHI3_EOS_TOKENS],
        pad_token_id=eot,
    ).save_pretrained(folder)


def _successors(tokenizer: Any, vocab: int, rng: Any) -> list[int]:
    """A permutation of the vocabulary: token -> the token the model should emit next.

    The generation prompt ends in "\n", which leads into TINY_REPLY and then `<|end|>`
    (one of Phi-3's three eos ids); every other token follows a fixed random cycle."""
    import torch

    encode = tokenizer.encode
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    chain = [*encode("\n"), *encode(TINY_REPLY), end]
    if len(set(chain)) != len(chain):
        raise RuntimeError("TINY_REPLY must tokenize into distinct tokens")
    nxt = [-1] * vocab
    for here, there in zip(chain, chain[1:] + chain[:1], strict=True):
        nxt[here] = there
    rest = [t for t in range(vocab) if nxt[t] < 0]
    order = torch.randperm(len(rest), generator=rng).tolist()
    cycle = [rest[i] for i in order]
    for here, there in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        nxt[here] = there
    return nxt


def _imprint_reply(model: Any, tokenizer: Any, hidden: int, tokens: int) -> None:
    """Turn the random model into a near-bigram model with wide logit margins.

    Large random embeddings dominate the residual stream (the random layers only add
    noise of about a tenth of their size), and the lm_head row of each token's successor
    is that token's embedding, so argmax(logits) is the successor by a wide margin. This
    gives tests exact, readable expected text that every backend and precision agrees on."""
    import torch

    rng = torch.Generator().manual_seed(SEED)
    embed = model.get_input_embeddings().weight
    vocab = embed.shape[0]
    with torch.no_grad():
        table = torch.randn(vocab, hidden, generator=rng)
        # Rows past the tokenizer's tokens stay zero: no greedy step can pick an id that
        # has no text.
        head = torch.zeros_like(table)
        successors = _successors(tokenizer, tokens, rng)
        head[successors] = table[:tokens] * (_MARGIN / hidden)
        embed.copy_(table)
        model.get_output_embeddings().weight.copy_(head)


def build(store_dir: Path, shape: Phi3Shape = TINY, *, force: bool = False) -> Path:
    out = store.model_dir(store_dir, shape.name)
    if not force and store.has_manifest(out) and store.is_complete(out):
        logger.info("%s already built at %s", shape.name, out)
        return out
    if out.exists():
        logger.warning("%s at %s is incomplete or forced: rebuilding", shape.name, out)
    with tempfile.TemporaryDirectory(prefix=f"{shape.name}-hf-") as tmp:
        hf = Path(tmp)
        logger.info("[1/2] Creating %s (random weights, seed %d) in %s", shape.name, SEED, hf)
        build_hf_folder(shape, hf)
        logger.info("[2/2] Exporting with the sample's flags")
        return export_model(
            hf,
            out,
            group_size=SAMPLE_GROUP_SIZE,
            trust_remote_code=True,
            recipe={"model": shape.name, "seed": SEED},
        )
