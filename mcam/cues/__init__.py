"""MCAM cues."""
