"""Phi-3-mini-shaped single-stream decode: ovchat's engine against llama.cpp, as shares of
the same run's bandwidth ceiling. It answers whether the 0.80-of-ceiling target is a limit
of ovchat or of this machine's cores.

Both read the same random Phi-3-mini-sized weights (`tiny_phi3.PHI3_MINI`, seed fixed):
ovchat's int4 export in model_store/phi3-shaped, and the same checkpoint converted by
llama.cpp's own converter and quantized to Q4_0 (4.5 bits a weight, its plainest 4-bit
format). Decode only, one stream, the two taken in turns, order reversed every round.

Needs llama.cpp's converter and its llama-bench and llama-quantize, which
`make bench-llamacpp` builds into .venv-llamacpp; then, with model_store/phi3-shaped built
(`ovchat model build phi3-shaped`):

    .venv/bin/python bench/phi3_llamacpp.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import measure_bandwidth, weights_read_per_token  # noqa: E402

DECODE_TOKENS = 48

# Runs in a child: llama.cpp's converter with the vocabulary replaced. The shaped model's
# tokenizer is synthesized BPE without the tokenizer.model file llama.cpp's Phi-3 path
# reads; decode speed does not depend on token text, so placeholder SentencePiece pieces
# do (bytes for its newline lookup, <|endoftext|> for its Phi-3 attribute rules).
CONVERT = """
import runpy, sys
src, hf, out = sys.argv[1:4]
sys.path[:0] = [src, src + "/gguf-py"]
from conversion import phi
from conversion.base import SentencePieceTokenTypes as T

def set_vocab(self):
    n = self.hparams["vocab_size"]
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    tokens += [f"\\u2581t{i}".encode() for i in range(len(tokens), n)]
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL] + [T.BYTE] * 256
    types += [T.NORMAL] * (n - len(types))
    tokens[32000], types[32000] = b"<|endoftext|>", T.CONTROL
    w = self.gguf_writer
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

phi.Phi3MiniModel.set_vocab = set_vocab
sys.argv = ["convert", hf, "--outtype", "f16", "--outfile", out]
runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def build_gguf(llama_src: Path, llama_bin: Path, work: Path) -> Path:
    from app.modelstore import tiny_phi3

    hf = work / "hf"
    tiny_phi3.build_hf_folder(tiny_phi3.PHI3_MINI, hf)
    f16 = work / "phi3-shaped-f16.gguf"
    subprocess.run(
        [sys.executable, "-c", CONVERT, str(llama_src), str(hf), str(f16)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    q4 = work / "phi3-shaped-q4_0.gguf"
    subprocess.run(
        [str(llama_bin / "llama-quantize"), str(f16), str(q4), "Q4_0", "2"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    f16.unlink()
    return q4


def gguf_bytes_per_token(llama_src: Path, gguf_file: Path) -> int:
    """The tensors one decode step reads: all but the embedding table, only looked up."""
    sys.path.insert(0, str(llama_src / "gguf-py"))
    import gguf

    reader = gguf.GGUFReader(str(gguf_file))
    return sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    venv = ROOT / ".venv-llamacpp"  # where make bench-llamacpp puts them
    parser.add_argument("--llama-src", type=Path, default=venv / "share" / "llama.cpp")
    parser.add_argument("--llama-bin", type=Path, default=venv / "bin")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    import openvino_genai as ov_genai

    from app.engine.genai_worker import WorkerConfig, scheduler_config
    from app.modelstore import store
    from app.settings import Settings

    model = store.model_dir(ROOT / "model_store", "phi3-shaped")
    bandwidth = [measure_bandwidth()]
    with tempfile.TemporaryDirectory(prefix="phi3-llamacpp-") as tmp:
        q4 = build_gguf(args.llama_src, args.llama_bin, Path(tmp))
        # ovchat's own defaults, as its engine process builds them.
        cfg = WorkerConfig.from_settings(Settings(), str(model), "CPU")
        pipe = ov_genai.ContinuousBatchingPipeline(
            str(model), scheduler_config(cfg), "CPU", cfg.properties
        )
        decode = ov_genai.GenerationConfig(max_new_tokens=DECODE_TOKENS, ignore_eos=True)
        first = ov_genai.GenerationConfig(max_new_tokens=1, ignore_eos=True)
        prompt = "Tell me a long story about a cat and a dog."
        pipe.generate([prompt], [first])  # compiles

        def ovchat() -> float:
            # Decode only: the same prompt's one-token run is taken off.
            started = time.perf_counter()
            pipe.generate([prompt], [first])
            one = time.perf_counter() - started
            started = time.perf_counter()
            pipe.generate([prompt], [decode])
            return (DECODE_TOKENS - 1) / (time.perf_counter() - started - one)

        def llama() -> float:
            cmd = [str(args.llama_bin / "llama-bench"), "-m", str(q4), "-p", "0"]
            cmd += ["-n", str(DECODE_TOKENS), "-t", "2", "-r", "1", "-o", "json"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            return float(json.loads(out)[0]["avg_ts"])

        runs: dict[str, list[float]] = {"ovchat-genai": [], "llama.cpp Q4_0": []}
        order = [("ovchat-genai", ovchat), ("llama.cpp Q4_0", llama)]
        for round_ in range(args.rounds):
            for name, fn in order if round_ % 2 == 0 else order[::-1]:
                runs[name].append(fn())
        llama_bytes = gguf_bytes_per_token(args.llama_src, q4)
    bandwidth.append(measure_bandwidth())
    best_bw = max(bandwidth) * 1e9
    read = {"ovchat-genai": weights_read_per_token(model), "llama.cpp Q4_0": llama_bytes}
    result: dict[str, Any] = {"bandwidth_gbs": [round(b, 1) for b in bandwidth], "rows": {}}
    print(f"bandwidth {max(bandwidth):.1f} GB/s (best of the run's start and end)")
    print("| engine | MB read per token | ceiling tok/s | decode tok/s (median) | share |")
    print("|---|---|---|---|---|")
    for name, values in runs.items():
        tok_s = statistics.median(values)
        ceiling = best_bw / read[name]
        print(
            f"| {name} | {read[name] / 1e6:.0f} | {ceiling:.1f} | {tok_s:.2f} "
            f"({', '.join(f'{v:.2f}' for v in values)}) | {tok_s / ceiling:.2f} |"
        )
        result["rows"][name] = {"tok_s": values, "mb_per_token": read[name] / 1e6}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
