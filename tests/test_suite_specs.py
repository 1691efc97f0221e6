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
    assert spec.protocol == "loro" and spec.modes == ["lam"] and spec.source_region == "western_posed"
    assert len(spec.seeds) >= 3 and len(spec.detector_seeds) >= 3  # fusion and detector-training replicates
    assert "attention" in spec.models and len(set(spec.models) - {"attention"}) >= 3
    gam = SuiteSpec.load(REPO / "experiments" / "loro_gam.yaml")
    assert set(gam.modes) == {"lam", "gam"} and gam.detector_seeds == spec.detector_seeds


def test_spec_errors_name_the_field(tmp_path: Path) -> None:
    from mcam.suites.spec import SpecError

    path = tmp_path / "bad.yaml"
    path.write_text("seedz: [1]\n")
    with pytest.raises(SpecError, match="seedz"):
        SuiteSpec.load(path)
    path.write_text("seeds: abc\n")
    with pytest.raises(SpecError, match="seeds"):
        SuiteSpec.load(path)
    with pytest.raises(SpecError, match="no profile 'nope'"):
        SuiteSpec.load(REPO / "benchmarks" / "loro.yaml", "nope")
    assert SuiteSpec.load(REPO / "benchmarks" / "loro.yaml", None, ["--seeds", "[0,1]"]).seeds == [0, 1]
    with pytest.raises(SpecError, match="workers"):
        SuiteSpec.load(REPO / "benchmarks" / "loro.yaml", None, ["--workers", "0"])
