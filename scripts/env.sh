#!/usr/bin/env bash
# Create or reuse the project's environment in .venv (idempotent; reinstalls only when pyproject.toml changed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "[mcam] creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.mcam-install-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[mcam] installing mcam and its dependencies into .venv (first time: a few minutes)"
  # torch/torchvision are pinned (torch==2.14.1, torchvision==0.29.1) in pyproject.toml.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import mcam, mcam_detectors, torch, lightning, cv2, feat" \
    || { echo "[mcam] install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
