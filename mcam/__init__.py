"""MCAM: cross-regional facial emotion recognition by multi-cue attention fusion."""
import os as _os

# cuBLAS needs this set before CUDA starts for deterministic matrix products (torch's reproducibility notes);
# setting it here, on import, is early enough for every entry point.
_os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# MKL chooses matrix kernels by memory alignment, so the same product can differ in the last bit with where its
# operands lie; strict conditional numerical reproducibility makes a member of a fusion stack (mcam.fusion.ensemble)
# compute exactly what its single run does. MKL reads this on its first call.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


def analyze(*inputs, model, **options):  # noqa: ANN001, ANN002, ANN003, ANN201 - see mcam.apply.run.analyze
    """Apply a trained MCAM (bundle or run folder) to photos, folders, videos or a camera: one row per face per
    frame, as an `Analysis` (a Predictions with column groups, `plot_timeline()`, `annotate()`); see
    `mcam.apply.run.analyze` for the options. Imported on first use (`import mcam` stays light)."""
    from mcam.apply.run import analyze as _analyze

    return _analyze(*inputs, model=model, **options)
