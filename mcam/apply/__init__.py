"""Applying a trained MCAM to media: model bundles (`mcam export`) and streaming analysis (`mcam analyze`).

bundle: a fusion run's checkpoint, detectors (weights found by fingerprint), normalisation and face settings as
one folder, loaded with every fingerprint checked. media: photos, folders, videos and cameras as a stream of
frames decoded in a background thread. tracking: face ids across frames. pipeline: frames -> faces -> detectors
(batched across frames) -> fusion -> rows, written as they are made. results: the rows as a `Predictions` with
their column groups, a timeline plot and annotated frames.
"""
