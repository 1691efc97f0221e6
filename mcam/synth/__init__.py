"""Synthetic regional faces: AU-defined expressions rendered under regional display rules."""
