#!/usr/bin/env bash
# The README's main-job command on the embedded default (local, offline).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled
exec .venv/bin/unimusic demo "$@"
