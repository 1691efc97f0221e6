"""Every suite spec under benchmarks/ and experiments/ loads (with each of its profiles) and expands into runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mcam.suites.protocols import PROTOCOL_FOLDS
from mcam.suites.spec import SuiteSpec, expand_runs

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted([*REPO.glob("benchmarks/*.yaml"), *REPO.glob("experiments/*.yaml")])
CASES = [(p, None) for p in SPECS] + [(p, name) for p in SPECS
                                       for name in (yaml.safe_load(p.read_text()) or {}).get("profiles", {})]


@pytest.mark.parametrize("path, profile", CASES, ids=[f"{p.stem}:{n or 'default'}" for p, n in CASES])
def test_spec_loads_and_expands(path: Path, profile: str | None) -> None:
    spec = SuiteSpec.load(path, profile)
    assert spec.protocol in PROTOCOL_FOLDS and spec.seeds and spec.modes
    assert set(spec.modes) <= {"lam", "gam"}
    runs = expand_runs(spec, ["fold_a", "fold_b"], spec.detectors)
    assert runs and len({r.run_id for r in runs}) == len(runs)
    assert {r.seed for r in runs} == set(spec.seeds)


def test_main_job_spec_meets_the_brief() -> None:
    spec = SuiteSpec.load(REPO / "benchmarks" / "loro.yaml")
    assert spec.protocol == "loro" and set(spec.modes) == {"lam", "gam"} and len(spec.seeds) >= 3
    assert "attention" in spec.models and len(set(spec.models) - {"attention"}) >= 3
