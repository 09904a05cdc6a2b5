"""Units of NCA parameters from the units of time, concentration and dose.

PKNCA-style unit kinds (``conc``, ``auc``, ``clearance`` ...) are turned into
unit strings. A clearance or volume simplifies when the concentration unit is
``<dose unit>/<volume>`` (e.g. dose ``mg``, concentration ``mg/L`` gives
``L/h`` and ``L``); otherwise the compound unit is written out.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NCAUnits"]


def _wrap(u: str) -> str:
    return f"({u})" if any(ch in u for ch in "/*") else u


@dataclass(frozen=True)
class NCAUnits:
    """Units of the inputs: time, concentration and dose (empty = unknown)."""

    time: str = ""
    conc: str = ""
    dose: str = ""

    def volume(self) -> str:
        if not (self.conc and self.dose):
            return ""
        if "/" in self.conc:
            num, den = self.conc.split("/", 1)
            if num.strip() == self.dose.strip():
                return den.strip()
        return f"{self.dose}/{_wrap(self.conc)}"

    def unit(self, kind: str) -> str:
        """Unit string of a registry unit kind (empty when an input unit is unknown)."""
        t, c, d = self.time, self.conc, self.dose
        if kind == "conc":
            return c
        if kind == "time":
            return t
        if kind == "inverse_time":
            return f"1/{t}" if t else ""
        if kind == "auc":
            return f"{t}*{c}" if t and c else ""
        if kind == "aumc":
            return f"{t}^2*{c}" if t and c else ""
        if kind == "volume":
            return self.volume()
        if kind == "clearance":
            v = self.volume()
            return f"{_wrap(v)}/{t}" if v and t else ""
        if kind == "conc_per_dose":
            return f"{_wrap(c)}/{d}" if c and d else ""
        if kind == "auc_per_dose":
            return f"{t}*{_wrap(c)}/{d}" if t and c and d else ""
        if kind == "percent":
            return "%"
        if kind in ("unitless", "count"):
            return ""
        raise KeyError(f"unknown unit kind {kind!r}")
