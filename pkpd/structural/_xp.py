"""Array namespace dispatch: one structural formula, two backends.

Structural solutions in :mod:`pkpd.structural` are written once against a small
array vocabulary (``exp``, ``log``, ``log1p``, ``logaddexp``, ``where``,
``maximum``, ``minimum``, ``clip``, ``sum``, ``max``). :func:`namespace` returns
:mod:`numpy` for plain arrays (simulation, derived exposures) and
:mod:`pytensor.tensor` when any argument is a PyTensor variable (inference), so
NUTS differentiates exactly the formula that simulation evaluates.

PyTensor is imported only when a PyTensor variable is actually passed in, so the
numpy path never imports it.
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

__all__ = ["namespace"]


def _is_pytensor(value) -> bool:
    pt = sys.modules.get("pytensor.graph.basic")
    return pt is not None and isinstance(value, pt.Variable)


def namespace(*values) -> ModuleType:
    """The array module for ``values``: :mod:`pytensor.tensor` or :mod:`numpy`."""
    if any(_is_pytensor(v) for v in values):
        import pytensor.tensor as pt

        return pt
    return np
