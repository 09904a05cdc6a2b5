"""Shared by the ``pkpd run`` tests: the study specs and a simulated trial on disk."""

from __future__ import annotations

from pathlib import Path

from pkpd.study import simulate_trial

ROOT = Path(__file__).resolve().parents[2]
SPEC_A = ROOT / "models" / "ct103a_selinexor.toml"
SPEC_B = ROOT / "models" / "bcma_car_nk.toml"


def write_trial(tmp: Path, spec, subjects: int, seed: int) -> tuple[Path, object]:
    """Simulate a virtual trial of ``spec`` and write it under ``tmp/data``."""
    trial = simulate_trial(spec, seed=seed, subjects=subjects)
    path = tmp / "data" / "trial.csv"
    trial.write(path)
    return path, trial
