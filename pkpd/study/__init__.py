"""Study specifications (TOML) and virtual trials.

- :func:`load_spec` reads and validates a spec (``models/*.toml``) into a
  :class:`StudySpec`; errors are :class:`SpecError` naming the key path;
- :func:`simulate_trial` turns a spec and a seed into a :class:`VirtualTrial`: the
  event table, the subject-level endpoints, the AE listing and the truth
  (``pkpd simulate SPEC -o data.csv``);
- :func:`score_qlq_c30` and :func:`score_qlq_my20` turn EORTC item responses into the
  published 0-100 scale scores (HRQoL endpoints of study A).

The schema is documented in ``docs/study/spec.md``.
"""

from pkpd.study.qol import score_qlq_c30, score_qlq_my20
from pkpd.study.simulate import VirtualTrial, output_paths, simulate_trial
from pkpd.study.spec import (
    UNITS,
    AdverseEventSpec,
    ArmSpec,
    CovariateSpec,
    DoseSpec,
    EndpointSpec,
    ModelSpec,
    ObjectiveSpec,
    SamplingSpec,
    SimulationSpec,
    SpecError,
    StudyInfo,
    StudySpec,
    TreatmentSpec,
    load_spec,
    parse_spec,
    spec_hash,
)

__all__ = [
    "UNITS",
    "AdverseEventSpec",
    "ArmSpec",
    "CovariateSpec",
    "DoseSpec",
    "EndpointSpec",
    "ModelSpec",
    "ObjectiveSpec",
    "SamplingSpec",
    "SimulationSpec",
    "SpecError",
    "StudyInfo",
    "StudySpec",
    "TreatmentSpec",
    "VirtualTrial",
    "load_spec",
    "output_paths",
    "parse_spec",
    "score_qlq_c30",
    "score_qlq_my20",
    "simulate_trial",
    "spec_hash",
]
