#!/usr/bin/env bash
# Build llama.cpp's command-line tools (CPU only, Release) from the source vendored in the pinned
# llama-cpp-python sdist, so benchmarks/llama_cpp.py can run the CPU user's own engine on the embedded pair's GGUFs.
# Cached outside the repository; a second run finds the tools and does nothing. Never part of scripts/test.sh
# (it takes tens of minutes on two cores). Prints the folder that holds the tools.
#   bash scripts/build_llama_cpp.sh            # builds into ${DYNATREE_CACHE:-~/.cache/dynatree}/llama.cpp
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36   # llama-cpp-python release whose sdist vendors the llama.cpp source we build
# The tools benchmarks/llama_cpp.py runs (dynatree_lib.bench.llama_cpp.TOOLS names the same ones, a test checks):
# plain decoding, speculative decoding with a draft model (tree and chain), n-gram lookup drafting, and llama-bench.
TARGETS=(llama-completion llama-speculative llama-speculative-simple llama-lookup llama-bench)

ROOT="${DYNATREE_CACHE:-$HOME/.cache/dynatree}/llama.cpp"
SRC="$ROOT/llama_cpp_python-$VERSION/vendor/llama.cpp"
BUILD="$ROOT/build-$VERSION"
BIN="$BUILD/bin"
PY="${PYTHON:-$(pwd)/.venv/bin/python}"

built() { for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || return 1; done; }
if built; then echo "$BIN"; exit 0; fi

mkdir -p "$ROOT"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    # --no-binary so pip hands over the sdist (the source), --no-deps so it fetches nothing else.
    "$PY" -m pip download --quiet --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$ROOT"
    tar xzf "$ROOT/llama_cpp_python-$VERSION.tar.gz" -C "$ROOT"
fi

# GGML_NATIVE: kernels for this CPU (as a user building it here gets). No server, tests, curl or OpenSSL:
# the tools we run need none of them.
cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
      -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$BUILD" --config Release -j "$(nproc)" --target "${TARGETS[@]}" >&2
built || { echo "build_llama_cpp.sh: the build finished but a tool is missing from $BIN" >&2; exit 1; }
echo "$BIN"
