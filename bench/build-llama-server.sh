#!/usr/bin/env bash
# Builds llama.cpp's own C++ server (llama-server) from the llama.cpp sources vendored in
# llama-cpp-python's PyPI sdist: the one place this network (PyPI, Debian, npm) offers
# them. Same llama.cpp as the Python server next to it, CPU-native, static, no web UI.
# Also llama-bench, llama-quantize and the HF-to-GGUF converter, which
# bench/phi3_llamacpp.py uses to run the Phi-3-shaped weights through llama.cpp.
set -euo pipefail
version="$1"
venv="$2"
work="build/llama-server-src"
share="$venv/share/llama.cpp"
if [ -x "$venv/bin/llama-server" ] && [ -x "$venv/bin/llama-bench" ] \
    && [ -x "$venv/bin/llama-quantize" ] && [ -f "$share/convert_hf_to_gguf.py" ]; then
    exit 0
fi
if ! command -v cmake >/dev/null; then
    "$venv/bin/python" -m pip install -q cmake
    PATH="$PWD/$venv/bin:$PATH"
fi
rm -rf "$work"
mkdir -p "$work"
"$venv/bin/python" -m pip download -q --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$work"
tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
# The prebuilt web UI would be fetched from a model hub, which is not reachable.
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
cmake --build "$work/build" --target llama-server llama-bench llama-quantize -j "$(nproc)"
cp "$work/build/bin/llama-server" "$work/build/bin/llama-bench" \
    "$work/build/bin/llama-quantize" "$venv/bin/"
rm -rf "$share"
mkdir -p "$share"
cp -r "$src/convert_hf_to_gguf.py" "$src/conversion" "$src/gguf-py" "$share/"
rm -rf "$work"
