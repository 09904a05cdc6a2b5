"""Parameters computed from other parameters (vectorised over intervals).

Reads :data:`pkpd.nca.registry.PARAMETERS` in order (dependencies come first)
and evaluates each derived spec's function on whole columns. A NaN result
inherits the reason of the first input that is NaN, or gets a specific one
(dose unknown, AUC not positive, Cmin zero).
"""

from __future__ import annotations

import numpy as np

from pkpd.nca import _codes as C
from pkpd.nca.registry import INTERVAL_INPUTS, PARAMETERS

__all__ = ["compute_derived"]


def compute_derived(
    values: dict[str, np.ndarray],
    reasons: dict[str, np.ndarray],
    interval_inputs: dict[str, np.ndarray],
) -> None:
    """Add every derived parameter to ``values``/``reasons`` (in place).

    Parameters
    ----------
    values, reasons
        Primary parameter columns by PPTESTCD code, with int8 reason codes.
    interval_inputs
        ``DOSE``, ``DURATION`` (infusion duration) and ``TAU`` per interval.
    """
    n = len(next(iter(values.values())))
    for spec in PARAMETERS:
        if spec.function is None:
            continue
        args = []
        for name in spec.inputs:
            args.append(interval_inputs[name] if name in INTERVAL_INPUTS else values[name])
        with np.errstate(all="ignore"):
            result = np.asarray(spec.function(*args), dtype=float)
        result = np.broadcast_to(result, (n,)).copy()
        reason = np.zeros(n, dtype=np.int8)
        missing = np.isnan(result)
        if missing.any():
            for name, arg in zip(spec.inputs, args, strict=True):
                if name in INTERVAL_INPUTS:
                    bad = missing & (reason == 0) & ~(arg > 0) & (name != "DURATION")
                    reason[bad] = C.R_DOSE if name == "DOSE" else C.R_INFINITE_END
                    continue
                bad = missing & (reason == 0) & np.isnan(arg)
                inherited = reasons[name][bad]
                reason[bad] = np.where(inherited != 0, inherited, C.R_DEPENDENCY)
            rest = missing & (reason == 0)
            if rest.any():
                reason[rest] = _specific_reason(spec.code)
        # a value computed from a caveated input (e.g. 0 when all BLQ) keeps the caveat
        for name in spec.inputs:
            if name not in INTERVAL_INPUTS:
                carry = ~missing & (reason == 0) & (reasons[name] == C.R_ALL_BLQ)
                reason[carry] = C.R_ALL_BLQ
        values[spec.code] = result
        reasons[spec.code] = reason


def _specific_reason(code: str) -> int:
    if code in ("SWING", "PTR"):
        return C.R_CMIN_NOT_POSITIVE
    if code in (
        "CLFO",
        "CLFP",
        "CLO",
        "CLP",
        "MRTEVIFO",
        "MRTEVIFP",
        "MRTIVIFO",
        "MRTIVIFP",
        "AUCPEO",
        "AUCPEP",
        "FLUCP",
        "VZFO",
        "VZFP",
        "VZO",
        "VZP",
        "VSSO",
        "VSSP",
    ):
        return C.R_AUC_NOT_POSITIVE
    return C.R_DEPENDENCY
