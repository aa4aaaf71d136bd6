#!/usr/bin/env bash
# Idempotent set-up: Debian packages + a virtual environment (.venv) with every
# Python dependency, installed in an order that resolves on these machines
# (see shared/ENVIRONMENT.md). A second run finishes in seconds: it compares a
# stamp of the requirement files with the one written by the last full install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${UNIMUSIC_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
APT_PACKAGES=(fluidsynth fluid-soundfont-gm ffmpeg lilypond chromium chromium-driver)

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- virtual environment ---------------------------------------------------
STAMP_FILE="$VENV/.unimusic-setup-stamp"
stamp="$(cat requirements/*.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$stamp" ]; then
    log "environment up to date ($VENV)"
    exit 0
fi

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
pip_quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }; return "${PIPESTATUS[0]}"; }
# The lock file pins every transitive version; torch is held to the CPU build.
CONSTRAINTS=(-c requirements/lock.txt)

log "stage 1/6: torch (CPU build)"
pip_quiet "${PIP[@]}" "${CONSTRAINTS[@]}" -r requirements/1-torch.txt
log "stage 2/6: ray, fastapi, boto3, moto"
pip_quiet "${PIP[@]}" "${CONSTRAINTS[@]}" -r requirements/2-ray.txt
log "stage 3/6: deepspeed (DS_BUILD_OPS=0)"
DS_BUILD_OPS=0 pip_quiet "${PIP[@]}" "${CONSTRAINTS[@]}" -r requirements/3-deepspeed.txt
log "stage 4/6: music, audio and test libraries"
pip_quiet "${PIP[@]}" "${CONSTRAINTS[@]}" -r requirements/4-music.txt
log "stage 5/6: DAC, audiotools, basic-pitch, transkun (--no-deps)"
pip_quiet "${PIP[@]}" --no-deps "${CONSTRAINTS[@]}" -r requirements/5-nodeps.txt
# The registry's torchaudio is a CUDA build; without its shared libraries it
# runs in pure-Python mode, which is all DAC needs.
rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
log "stage 6/6: unimusic (editable)"
pip_quiet "${PIP[@]}" --no-deps -e .

# Fail here, not in the first test, if anything essential does not import.
"$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as md
import dac, deepspeed, fluidsynth, mir_eval, music21, pretty_midi, ray, torch, verovio  # noqa: F401
print("[setup] ok:", ", ".join(f"{p} {md.version(p)}" for p in ("torch", "ray", "deepspeed", "music21", "verovio", "pretty_midi")))
PYEOF
echo "$stamp" > "$STAMP_FILE"
