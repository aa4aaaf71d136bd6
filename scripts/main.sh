#!/usr/bin/env bash
# The README's main-job command on the embedded default (local Ray, the bundled music21
# corpus, shipped tokenizers, offline): corpus build -> tokenize -> train the tiny
# multitask translator -> eval table; prints where every artifact is.
#   bash scripts/main.sh                  # the default size (about 20 minutes on 2 cores)
#   bash scripts/main.sh --size small     # bigger presets: small, full
#   bash scripts/main.sh --serve          # keep serving the trained model at the end
#   bash scripts/main.sh out=s3://bucket/run1 train.workers=2   # any PipelineConfig override
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled
OUT="${UNIMUSIC_OUT:-artifacts}"
exec .venv/bin/unimusic pipeline "out=$OUT/pipeline" "$@"
