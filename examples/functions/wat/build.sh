#!/bin/sh
# Compiles each .wat here to a .wasm next to it. Needs wat2wasm (apt-get install -y wabt).
set -eu
cd "$(dirname "$0")"
for f in *.wat; do
    wat2wasm "$f" -o "${f%.wat}.wasm"
    echo "built $(pwd)/${f%.wat}.wasm"
done
