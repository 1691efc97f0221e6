"""MCAM fusion."""
