#!/bin/sh
# Builds wrap_json.wasm next to this script. Needs Debian's clang, lld, wasi-libc and
# libclang-rt-dev-wasm32 (apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32).
set -eu
cd "$(dirname "$0")"
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor \
    -Wl,--export=freshet_alloc -Wl,--export=freshet_handle \
    -Wl,--strip-all -o wrap_json.wasm wrap_json.c
echo "built $(pwd)/wrap_json.wasm"
