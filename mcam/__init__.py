"""MCAM: cross-regional facial emotion recognition by multi-cue attention fusion."""
