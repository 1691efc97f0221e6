"""Every YAML under configs/ parses: LightningCLI groups with the fusion CLI's parser, the rest as YAML."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mcam.fusion.cli import FusionCLI, run_lightning_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CLI_GROUPS = ("model", "data", "trainer", "mode", "experiment")
ALL = sorted(CONFIGS.rglob("*.yaml"))


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(CONFIGS)) for p in ALL])
def test_config_parses(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    if path.relative_to(CONFIGS).parts[0] not in CLI_GROUPS:
        return
    # parse and validate only: no data is read, nothing instantiated
    monkeypatch.setattr(FusionCLI, "instantiate_classes", lambda self: None)
    monkeypatch.setattr("sys.argv", ["mcam"])
    args = ["--config", str(CONFIGS / "model/attention.yaml"), "--config", str(path)]
    cli = run_lightning_cli(args, run=False)
    network = cli.config["model"]["network"]["class_path"]
    assert network.startswith("mcam.fusion.networks.")
