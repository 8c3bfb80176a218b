#!/usr/bin/env bash
# Set up napari-dynaclr on a fresh Debian/Ubuntu machine: system libraries for Xvfb/Qt (napari tests and
# screenshots), a virtual environment at .venv with pinned dependencies, and the package itself.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '[setup] %s\n' "$*"; }

# 1. System packages (Xvfb + the xcb/GL libraries Qt needs). Skipped when not root or without apt.
PKGS="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxkbcommon-x11-0 \
libxcb-render-util0 libxcb-image0 libxcb-shape0 libxcb-randr0 libxcb-xfixes0 libxcb-sync1 libxcb-xkb1 \
libgl1 libegl1 libfontconfig1 libdbus-1-3"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    missing=""
    for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        say "installing system packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
elif ! command -v Xvfb >/dev/null 2>&1; then
    say "warning: Xvfb not found and cannot apt-get install it; napari tests will be skipped"
fi

# 2. Python >= 3.12
PY=""
for cand in python3.12 python3.13 /root/.pyenv/versions/3.12.1/bin/python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        PY="$(command -v "$cand")"; break
    fi
done
if [ -z "$PY" ]; then
    echo "[setup] error: Python >= 3.12 not found (tried python3.12, python3.13, pyenv 3.12.1, python3)" >&2
    exit 1
fi

# 3. Virtual environment with pinned dependencies, then the package (editable)
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $PY"
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import napari_dynaclr, torch, timm, lightning, iohub, anndata, napari' 2>/dev/null \
   || [ requirements.txt -nt .venv/.requirements-installed ]; then
    say "installing pinned dependencies (first time: a few minutes, ~6 GB)"
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -m pip install -q -r requirements.txt 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -m pip install -q --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c 'import napari_dynaclr, torch, timm, lightning, iohub, anndata' \
        || { echo "[setup] error: dependency installation failed" >&2; exit 1; }
    touch .venv/.requirements-installed
fi
say "ready: $(.venv/bin/napari-dynaclr --version)"
