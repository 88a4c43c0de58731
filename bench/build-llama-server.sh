#!/usr/bin/env bash
# Builds llama.cpp's own C++ server (llama-server) from the llama.cpp sources vendored in
# llama-cpp-python's PyPI sdist: the one place this network (PyPI, Debian, npm) offers
# them. Same llama.cpp as the Python server next to it, CPU-native, static, no web UI.
set -euo pipefail
version="$1"
venv="$2"
work="build/llama-server-src"
if [ -x "$venv/bin/llama-server" ]; then
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
cmake --build "$work/build" --target llama-server -j "$(nproc)"
cp "$work/build/bin/llama-server" "$venv/bin/llama-server"
rm -rf "$work"
