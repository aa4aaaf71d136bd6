#!/usr/bin/env bash
# The README's main-job command on the embedded default (local Ray, bundled
# music21 corpus, offline). Stages so far: codec round trips, then the
# multimodal corpus build (Ray Data) with a contact sheet. Later stages
# (tokenize, train, eval, serve) are appended here as they land.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled
OUT="${UNIMUSIC_OUT:-artifacts}"
PIECES="${UNIMUSIC_PIECES:-24}"
echo "== 1/2 codecs over bundled pieces"
.venv/bin/unimusic demo --pieces "$PIECES" --out "$OUT/demo"
echo "== 2/2 corpus build (Ray Data): engrave, synthesize, align per system"
.venv/bin/unimusic corpus build music21 --limit "$PIECES" --out "$OUT/corpus" \
    --contact-sheet "$OUT/corpus/contact_sheet.png"
echo "artifacts under $OUT/: demo/summary.md, corpus/manifest.json, corpus/shards/*.parquet, corpus/contact_sheet.png"
