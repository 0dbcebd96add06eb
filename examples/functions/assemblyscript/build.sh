#!/bin/sh
# Builds build/reverse.wasm. Needs Node.js and npm (Debian: apt-get install -y nodejs npm);
# installs AssemblyScript (a devDependency, pinned by package-lock.json) into node_modules first.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm run build
echo "built $(pwd)/build/reverse.wasm"
