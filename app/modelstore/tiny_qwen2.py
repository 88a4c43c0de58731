"""A Qwen2-shaped model small enough to build in seconds, for the tests of models whose
chat template describes tools: Qwen2.5's added tokens (`<|im_start|>`, `<|im_end|>`,
`<tool_call>`, ... as single tokens, numbered consecutively after the base vocabulary),
its eos ids, and Qwen2.5-Coder-1.5B-Instruct's exact chat template. Random weights,
imprinted as tiny-phi3's are: greedy decoding answers every chat prompt with REPLY, and
never writes whitespace of its own, so that a forced call's JSON ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.modelstore.imprint import SEED, build_tiny, imprint_reply, reply_chain, train_bpe
from app.prompt_templates import (
    QWEN25_ADDED_TOKENS,
    QWEN25_CODER_CHAT_TEMPLATE,
    QWEN25_EOS_TOKENS,
)

NAME = "tiny-qwen2"
BASE_VOCAB = 1024  # at most: the corpus has merges for fewer
HIDDEN = 256
CONTEXT = 4096
# What greedy decoding answers to every chat prompt, then `<|im_end|>`: distinct tokens,
# multi-byte characters split across them, and no token that is whitespace alone (those
# are quiet, see `imprint.imprint_reply`).
REPLY = "Hello! I am a helpful test model: the capital of France is Paris, café🙂"


def build_tokenizer() -> Any:
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(BASE_VOCAB, []),
        chat_template=QWEN25_CODER_CHAT_TEMPLATE,
        model_max_length=CONTEXT,
        clean_up_tokenization_spaces=False,
    )
    # One at a time, in Qwen's order, so their ids follow the base vocabulary as Qwen's do
    # (151643 on); `<tool_call>` and `</tool_call>` are added tokens but not special.
    for text, special in QWEN25_ADDED_TOKENS:
        fast.add_tokens(
            [AddedToken(text, special=special, normalized=False)], special_tokens=special
        )
    fast.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    texts = [text for text, _ in QWEN25_ADDED_TOKENS]
    ids = fast.convert_tokens_to_ids(texts)
    if ids != list(range(len(fast) - len(texts), len(fast))):
        raise RuntimeError(f"Qwen2.5's added tokens are not consecutive after the base: {ids}")
    return fast


def build_hf_folder(folder: Path) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    token_id = tokenizer.convert_tokens_to_ids
    eos = [token_id(t) for t in QWEN25_EOS_TOKENS]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as Qwen2.5's 12 heads share 2
        max_position_embeddings=CONTEXT,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        bos_token_id=token_id("<|endoftext|>"),
        eos_token_id=eos[0],
        pad_token_id=token_id("<|endoftext|>"),
        # The imprint needs a head of its own (Qwen2.5-1.5B ties it to the embedding).
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config).eval()
    # The generation prompt ends in `<|im_start|>assistant\n`: its "\n" leads into the
    # reply, which ends with `<|im_end|>`.
    chain = reply_chain(tokenizer, "\n", REPLY, "<|im_end|>")
    quiet = [i for i in range(len(tokenizer)) if _whitespace(tokenizer.decode([i]))]
    imprint_reply(model, chain, HIDDEN, len(tokenizer), quiet=quiet)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    GenerationConfig(
        bos_token_id=token_id("<|endoftext|>"),
        eos_token_id=eos,
        pad_token_id=token_id("<|endoftext|>"),
    ).save_pretrained(folder)


def build(store_dir: Path, *, force: bool = False) -> Path:
    return build_tiny(store_dir, NAME, build_hf_folder, force=force)


def _whitespace(text: str) -> bool:
    return bool(text) and not text.strip()
