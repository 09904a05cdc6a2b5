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
    codes: set[str] | None = None,
) -> None:
    """Add every derived parameter to ``values``/``reasons`` (in place).

    Parameters
    ----------
    values, reasons
        Primary parameter columns by PPTESTCD code, with int8 reason codes.
    interval_inputs
        ``DOSE``, ``DURATION`` (infusion duration) and ``TAU`` per interval.
    codes
        Compute only these derived parameters and what they depend on (default: all).
    """
    needed = None
    if codes is not None:
        needed = set(codes)
        for spec in reversed(PARAMETERS):
            if spec.code in needed:
                needed.update(i for i in spec.inputs if i not in INTERVAL_INPUTS)
    n = len(next(iter(values.values())))
    # intervals with every concentration BLQ: values computed from them keep the caveat
    all_blq = np.flatnonzero(reasons["CLST"] == C.R_ALL_BLQ) if "CLST" in reasons else None
    for spec in PARAMETERS:
        if spec.function is None or (needed is not None and spec.code not in needed):
            continue
        args = []
        for name in spec.inputs:
            args.append(interval_inputs[name] if name in INTERVAL_INPUTS else values[name])
        with np.errstate(all="ignore"):
            result = np.asarray(spec.function(*args), dtype=float)
        if result.shape != (n,):
            result = np.broadcast_to(result, (n,)).copy()
        reason = np.zeros(n, dtype=np.int8)
        missing = np.flatnonzero(np.isnan(result))
        if missing.size:
            # work on the (usually few) missing rows only
            sub = np.zeros(missing.size, dtype=np.int8)
            for name, arg in zip(spec.inputs, args, strict=True):
                a = arg[missing]
                if name in INTERVAL_INPUTS:
                    if name == "DURATION":
                        continue
                    bad = (sub == 0) & ~(a > 0)
                    sub[bad] = C.R_DOSE if name == "DOSE" else C.R_INFINITE_END
                    continue
                bad = (sub == 0) & np.isnan(a)
                inherited = reasons[name][missing][bad]
                sub[bad] = np.where(inherited != 0, inherited, C.R_DEPENDENCY)
            sub[sub == 0] = _specific_reason(spec.code)
            reason[missing] = sub
        if all_blq is not None and all_blq.size:
            keep = all_blq[~np.isnan(result[all_blq]) & (reason[all_blq] == 0)]
            reason[keep] = C.R_ALL_BLQ
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
