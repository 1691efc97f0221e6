"""Lightning's banners and known library noise kept out of MCAM's output (suites, detector training, benchmarks)."""
from __future__ import annotations

import logging
import warnings

# Library warnings a user can do nothing about (the suite passes LightningCLI its arguments on purpose;
# Lightning's own deprecation notes; batch indices that MCAM's predictions do not use; detector training
# reads faces in the main process on purpose: decoding is done, and workers would change nothing but speed).
LIBRARY_NOISE = ("LightningCLI's args parameter is intended", r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                 "Couldn't infer the batch indices", "The number of training batches .* is smaller than the logging",
                 "You passed in a `val_dataloader` but have no `validation_step`",
                 "The 'train_dataloader' does not have many workers")


def quiet_lightning() -> None:
    """Keep Lightning's per-run banners (GPU available, tips) and known library noise out of MCAM's output."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=message)
