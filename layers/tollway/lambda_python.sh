#!/usr/bin/env bash
# Print the path of a CPython 3.13 interpreter (the Lambda runtime's version), or nothing.
#
# The layer build uses it only to compile bytecode for the runtime (wheels are chosen with pip's
# --platform flags and need no 3.13). Looked for: $LAMBDA_PYTHON_BIN, python3.13 on PATH, then
# pyenv's and the usual install locations (a pyenv shim on PATH may refuse to run it).
set -u
want='import sys; raise SystemExit(sys.version_info[:2] != (3, 13))'
pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
for candidate in "${LAMBDA_PYTHON_BIN:-}" python3.13 "$pyenv_root"/versions/3.13*/bin/python3.13 \
    /usr/local/bin/python3.13 /usr/bin/python3.13; do
  [ -n "$candidate" ] || continue
  path=$(command -v "$candidate" 2>/dev/null) || continue
  if "$path" -c "$want" >/dev/null 2>&1; then
    echo "$path"
    exit 0
  fi
done
exit 0
