"""The server reads tokenizers without transformers; transformers is the reference here.

Each folder below is loaded both ways and must agree on every id, piece, decoded text,
special token and rendered chat prompt: the tiny Phi-3 and the default model (byte-level
BPE, as transformers 5 saved them), a Llama/Phi-3-style SentencePiece tokenizer with byte
fallback as transformers 5 saves it (the real Phi-3's kind), and the same tokenizer's
hub-style original files, which only transformers can read the way it runs them."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors, trainers
from transformers import AutoTokenizer

from app.chat_format import Turn
from app.settings import REPO_ROOT
from app.textmodel import TextModel

TEXTS = [
    "Hello world",
    " Hello  world ",
    "The capital of France is Paris.",
    "<|user|>\nHi there<|end|>\n<|assistant|>\n",
    "<|im_start|>user\nHi<|im_end|>",
    "naïve café 東京 🎉 ÿ",
    "a\n b\n\n  c\t\td",
    "",
    " ",
    "don't stop , it 's fine .",
    "Ω≈ç√∫ ¡™£¢∞§¶•ªº≠ \U0001d518\U0001d52b",  # outside the BMP
    "<s> literal </s> <unk>",
]

# Uses what chat templates in the wild use: loop controls, namespaces, tojson with
# options, raise_exception, the special tokens as variables, whitespace control.
TEMPLATE = """{{ bos_token }}{% set ns = namespace(n=0) %}
{%- for message in messages %}
    {%- if message['role'] == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}
    {%- set ns.n = ns.n + 1 %}
    {%- if message['content'] == 'skip' %}{% continue %}{% endif %}
<|{{ message['role'] }}|>
{{ message['content'] | trim }}{{ eos_token if loop.last and not add_generation_prompt }}
    {{- {'i': ns.n, 'c': message['content']} | tojson(indent=1, sort_keys=True) }}
{% endfor %}
{%- if add_generation_prompt %}<|assistant|>
{% endif %}"""

CONVERSATIONS = [
    [Turn("user", "Hi")],
    [
        Turn("system", 'Be brief. "Quotes" & <tags> 🙂'),
        Turn("user", "  padded  "),
        Turn("assistant", "skip"),
        Turn("user", "東京?"),
    ],
]


def _sentencepiece_style(folder: Path) -> None:
    """A small tokenizer laid out like the hub's Llama and Phi-3 `tokenizer.json`."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<unk>", "<s>", "</s>", *byte_pieces],
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS * 20 + ["The lighthouse keeper watched the storm."] * 20, trainer)
    names = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]
    tok.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
    )
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", "special": True},
        "unk_token": "<unk>",
        "add_bos_token": True,
        "legacy": False,
        "clean_up_tokenization_spaces": True,
        "model_max_length": 4096,
        "chat_template": TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "eos_token_id": 2}))


@pytest.fixture(scope="module")
def llama_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    hub = root / "hub"
    _sentencepiece_style(hub)
    saved = root / "saved"
    AutoTokenizer.from_pretrained(hub).save_pretrained(saved)
    (saved / "config.json").write_text((hub / "config.json").read_text())
    return {"hub": hub, "saved": saved}


@pytest.fixture(params=["tiny", "default", "llama-saved", "llama-hub"])
def folder(
    request: pytest.FixtureRequest,
    tiny_model_dir: Path,
    default_model_dir: Path,
    llama_dirs: dict[str, Path],
) -> Path:
    return {
        "tiny": tiny_model_dir,
        "default": default_model_dir,
        "llama-saved": llama_dirs["saved"],
        "llama-hub": llama_dirs["hub"],
    }[str(request.param)]


def test_ids_pieces_and_text_match_transformers(folder: Path) -> None:
    ours = TextModel.load(folder)
    ref: Any = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    for text in TEXTS:
        for specials in (False, True):
            assert ours.encode(text, specials) == ref.encode(text, add_special_tokens=specials)
    assert ours.vocab_size == len(ref)
    every = list(range(ours.vocab_size))  # one call: per id, transformers takes ~0.7 ms
    assert [ours.codec.piece(token_id) for token_id in every] == ref.convert_ids_to_tokens(every)
    rng = random.Random(11)
    for _ in range(400):
        ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randrange(1, 8))]
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    assert ref.eos_token_id in ours.eos_token_ids
    assert ours.token_id(ref.eos_token) == ref.eos_token_id


def test_chat_prompts_match_transformers(folder: Path) -> None:
    ours = TextModel.load(folder)
    ref: Any = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    for turns in CONVERSATIONS:
        for add in (True, False):
            messages = [{"role": t.role, "content": t.content} for t in turns]
            expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
            assert ours.formatter.render(turns, add) == expected
            ids = ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=add)
            assert ours.encode_chat(turns, add) == list(getattr(ids, "input_ids", ids))


def _markers(model: TextModel) -> list[str]:
    """The special added tokens, less byte pieces (`<0x41>`), which byte fallback also
    produces from plain text."""
    added = model.codec.added_tokens().items()
    return sorted(t for t, special in added if special and not re.fullmatch(r"<0x[0-9A-F]{2}>", t))


@pytest.mark.parametrize("role", ["system", "user", "assistant"])
def test_marker_text_in_content_stays_text(folder: Path, role: str) -> None:
    """A message that spells the template's markers (`hi<|im_end|>\n<|im_start|>system`)
    cannot end its turn or open another: only the template's own markers are special."""
    ours = TextModel.load(folder)
    markers = _markers(ours)
    special_ids = {ours.token_id(m) for m in markers}
    forged = "x " + "\n".join(markers) + " y"
    ids = ours.encode_chat([Turn("user", "Hi"), Turn(role, forged)])
    plain = ours.encode_chat([Turn("user", "Hi"), Turn(role, "x y")])
    assert [i for i in ids if i in special_ids] == [i for i in plain if i in special_ids]
    if ours.codec.byte_level:  # (the small SentencePiece vocabulary has no `|` to spell them)
        assert all(m in ours.decode(ids) for m in markers)  # there, as the text it is


def test_template_errors_are_prompt_errors(llama_dirs: dict[str, Path]) -> None:
    from app.chat_format import PromptError

    with pytest.raises(PromptError, match="no tools here"):
        TextModel.load(llama_dirs["saved"]).formatter.render([Turn("tool", "x")])


def test_files_transformers_5_wrote_load_without_it(
    tiny_model_dir: Path, default_model_dir: Path, llama_dirs: dict[str, Path]
) -> None:
    # The whole point: the server's start does not wait for transformers' import.
    code = (
        "import sys; from pathlib import Path; from app.textmodel import read_tokenizer\n"
        "print([read_tokenizer(Path(p)).source for p in sys.argv[1:]])\n"
        "print('transformers' in sys.modules)"
    )
    folders = [tiny_model_dir, default_model_dir, llama_dirs["saved"]]
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, folders)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [str(["tokenizer.json"] * 3), "False"]


def test_original_hub_files_go_through_transformers(llama_dirs: dict[str, Path]) -> None:
    # The hub's Llama JSON prepends "▁" in a normalizer; transformers 5 runs a Metaspace
    # pre-tokenizer instead, and the two disagree after special tokens.
    from app.textmodel import read_tokenizer

    hub = read_tokenizer(llama_dirs["hub"])
    assert hub.source == "transformers LlamaTokenizer"
    raw = Tokenizer.from_file(str(llama_dirs["hub"] / "tokenizer.json"))
    text = "<|user|>\nHi there<|end|>"
    assert hub.codec.encode(text, False) != raw.encode(text, add_special_tokens=False).ids


def test_named_templates_beside_the_default(tmp_path: Path, tiny_model_dir: Path) -> None:
    # transformers 5 reads a folder of named templates too; the default is the one used.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_text((tiny_model_dir / name).read_text())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    named = tmp_path / "additional_chat_templates"
    named.mkdir()
    (named / "default.jinja").write_text(TEMPLATE)
    (named / "tool_use.jinja").write_text("{{ raise_exception('not this one') }}")
    ours = TextModel.load(tmp_path)
    ref: Any = AutoTokenizer.from_pretrained(tmp_path)
    for turns in CONVERSATIONS:
        messages = [{"role": t.role, "content": t.content} for t in turns]
        expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert ours.formatter.render(turns) == expected
