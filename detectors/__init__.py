"""MCAM's built-in detector plugins (installed as `mcam_detectors`), registered under `mcam.detectors`."""
