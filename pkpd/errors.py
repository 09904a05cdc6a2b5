"""Errors raised by pkpd.

Every error is a :class:`PKPDError`. Messages name what is wrong (subject,
row, column), and say what to do about it. Rows are reported as the 0-based
position in the frame the user passed in, together with its index label.
"""

from __future__ import annotations

__all__ = [
    "ColumnError",
    "DataError",
    "DoseError",
    "IntervalError",
    "OptionError",
    "PKPDError",
    "PKPDWarning",
    "UnknownParameterError",
]


class PKPDError(ValueError):
    """Base class of every error raised by pkpd for bad input."""


class ColumnError(PKPDError, KeyError):
    """A required column is missing, or a column mapping is wrong."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DataError(PKPDError):
    """A value in the data is invalid (names subject, row and column)."""


class DoseError(PKPDError):
    """Dosing information is missing or inconsistent."""


class IntervalError(PKPDError):
    """An NCA interval specification is invalid."""


class OptionError(PKPDError):
    """An option passed to a pkpd function is invalid."""


class UnknownParameterError(OptionError, KeyError):
    """An NCA parameter code that the registry does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PKPDWarning(UserWarning):
    """Something was excluded or could not be estimated; the output says why."""


def describe_rows(frame_positions, labels, subjects=None, limit: int = 5) -> str:
    """Render offending rows as ``row 3 (index 17, ID 4)`` for error messages."""
    parts = []
    for k, pos in enumerate(frame_positions[:limit]):
        text = f"row {int(pos)} (index {_plain(labels[k])!r}"
        if subjects is not None:
            text += f", subject {_plain(subjects[k])!r}"
        parts.append(text + ")")
    more = len(frame_positions) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return ", ".join(parts)


def _plain(value):
    """numpy scalars as Python scalars, so messages read ``9`` not ``np.int64(9)``."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value
