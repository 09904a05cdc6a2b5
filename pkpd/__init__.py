"""pkpd: non-compartmental analysis and Bayesian population PK/PD for cell therapies.

The public API is re-exported here explicitly. Importing :mod:`pkpd` (or
:mod:`pkpd.nca`) does not import PyMC.
"""

from pkpd._version import __version__
from pkpd.data import load_example, prepare_event_table, resolve_roles
from pkpd.errors import (
    ColumnError,
    DataError,
    DoseError,
    IntervalError,
    OptionError,
    PKPDError,
    PKPDWarning,
)
from pkpd.nca import NCAResult, nca, nca_profile

__all__ = [
    "ColumnError",
    "DataError",
    "DoseError",
    "IntervalError",
    "NCAResult",
    "OptionError",
    "PKPDError",
    "PKPDWarning",
    "__version__",
    "load_example",
    "nca",
    "nca_profile",
    "prepare_event_table",
    "resolve_roles",
]
