"""MCAM suites."""
