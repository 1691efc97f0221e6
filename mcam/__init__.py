"""MCAM: cross-regional facial emotion recognition by multi-cue attention fusion."""
import os as _os

# cuBLAS needs this set before CUDA starts for deterministic matrix products (torch's reproducibility notes);
# setting it here, on import, is early enough for every entry point.
_os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
