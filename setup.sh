#!/usr/bin/env bash
# Set up napari-dynaclr on a fresh Debian/Ubuntu machine: system libraries for Xvfb/Qt (napari tests and
# screenshots), a virtual environment at .venv, and the package itself (editable) with its dependencies and
# the napari, test, bench and cpu (OpenVINO: the fastest exact CPU encoder) extras, plus a Qt binding for napari
# (PyQt6: the plugin's extras name none, as napari's plugin guidance asks), at the versions pinned in
# requirements.txt (used as constraints).
# Idempotent: re-running installs only when something is missing or requirements.txt/pyproject.toml changed.
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

# 2. Python >= 3.12 (with venv and ensurepip): $PYTHON when set; else pyenv's versions (3.12 first: the
# pinned versions are tested on it), python3.12 / python3.13 on PATH, uv's Python, python3
py_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
candidates() {
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root)"
        pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])\.[0-9]+$' | sort -t. -k2,2n -k3,3nr \
            | while read -r v; do echo "$root/versions/$v/bin/python"; done
    fi
    echo python3.12
    echo python3.13
    if command -v uv >/dev/null 2>&1; then uv python find '>=3.12' 2>/dev/null || true; fi
    echo python3
}
PY=""
if [ -n "${PYTHON:-}" ]; then
    py_ok "$PYTHON" || { echo "[setup] error: PYTHON=$PYTHON is not a Python >= 3.12 with venv and ensurepip" >&2; exit 1; }
    PY="$PYTHON"
else
    while read -r cand; do
        if command -v "$cand" >/dev/null 2>&1 && py_ok "$cand"; then PY="$cand"; break; fi
    done < <(candidates)
fi
if [ -z "$PY" ]; then
    echo "[setup] error: no Python >= 3.12 with venv and ensurepip found (tried pyenv's versions, python3.12 and" \
         "python3.13 on PATH, 'uv python find', python3). Install one (pyenv install 3.12, uv python install" \
         "3.12, or your system's python3.12 with python3.12-venv), or give it as PYTHON=/path/to/python ./setup.sh" >&2
    exit 1
fi
PY="$("$PY" -c 'import sys; print(sys.executable)')"  # the interpreter itself, not a shim

# 3. Virtual environment, then the package (editable) with its dependencies, pinned by requirements.txt
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $PY"
    "$PY" -m venv .venv
fi
# pip, without the "WARNING: Location ... is ignored" lines of local indexes; fails when pip fails
pip_q() {
    .venv/bin/python -m pip "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
}
STAMP=.venv/.requirements-installed
NEED_GB=10  # .venv: 7.3 GB when done, 8.5 GB at the peak of a first install (measured with --no-cache-dir)
free_gb() { df -Pk "$1" | awk 'NR == 2 { print int($4 / 1048576) }'; }
CHECK='import napari_dynaclr, torch, timm, lightning, iohub, anndata, napari, skimage, pytest, xdist, psutil, openvino
from PyQt6 import QtCore'
if ! .venv/bin/python -c "$CHECK" 2>/dev/null \
   || [ ! -x .venv/bin/ruff ] || [ requirements.txt -nt "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    say "installing the package with pinned dependencies (first time: a few minutes, ~7.3 GB)"
    free="$(free_gb .venv)"
    if [ "$free" -lt "$NEED_GB" ]; then
        say "warning: $free GB free on the disk of .venv; a first install needs about $NEED_GB GB (PyTorch's" \
            "CUDA wheels from PyPI: ~5.5 GB)"
    fi
    # --no-cache-dir: no second copy of the ~3 GB of wheels in pip's cache (re-runs install only what changed)
    pip_q install -q --no-cache-dir --upgrade pip \
        || { echo "[setup] error: upgrading pip failed" >&2; exit 1; }
    pip_q install -q --no-cache-dir -c requirements.txt -e ".[napari,test,bench,cpu]" PyQt6 \
        || { echo "[setup] error: dependency installation failed ($(free_gb .venv) GB free on the disk of .venv;" \
                  "a first install needs about $NEED_GB GB)" >&2; exit 1; }
    .venv/bin/python -c "$CHECK" || { echo "[setup] error: dependency installation failed" >&2; exit 1; }
    touch "$STAMP"
fi
say "ready: $(.venv/bin/napari-dynaclr --version)"
