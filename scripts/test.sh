#!/usr/bin/env bash
# The README's test command: set up (idempotent), then the default test tier and
# the slow tier. Extra arguments go to pytest (e.g. scripts/test.sh -k lmx).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1
PYTEST=(.venv/bin/python -m pytest -p no:cacheprovider)
if [ "$#" -gt 0 ]; then
    exec "${PYTEST[@]}" "$@"
fi
echo "== default tier"
"${PYTEST[@]}" -m "not slow" -q
echo "== slow tier"
"${PYTEST[@]}" -m slow -q -s
