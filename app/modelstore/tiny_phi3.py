"""A Phi-3-shaped model small enough to build in seconds, for tests and for performance
work at the real sizes (random weights: the content is noise, the shapes and the speed are
Phi-3's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.modelstore.imprint import SEED, build_tiny, imprint_reply, reply_chain, train_bpe
from app.prompt_templates import PHI3_ADDED_TOKENS, PHI3_CHAT_TEMPLATE, PHI3_EOS_TOKENS

# What the tiny model answers to every chat prompt, greedily, then `<|end|>`. Its tokens
# must be distinct (see `imprint.reply_chain`); it spans multi-byte characters on purpose,
# so streaming tests see UTF-8 sequences split across tokens.
TINY_REPLY = "Hello! I am a helpful test model: the capital of France is Paris, café 🙂"


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
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe(shape.base_vocab, ["<unk>", "<s>", "</s>"])
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
        # The generation prompt ends in "\n", which leads into TINY_REPLY and then
        # `<|end|>` (one of Phi-3's three eos ids).
        chain = reply_chain(tokenizer, "\n", TINY_REPLY, "<|end|>")
        imprint_reply(model, chain, shape.hidden_size, len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    GenerationConfig(
        bos_token_id=token_id("<s>"),
        eos_token_id=[token_id(t) for t in PHI3_EOS_TOKENS],
        pad_token_id=eot,
    ).save_pretrained(folder)


def build(store_dir: Path, shape: Phi3Shape = TINY, *, force: bool = False) -> Path:
    return build_tiny(store_dir, shape.name, lambda hf: build_hf_folder(shape, hf), force=force)
