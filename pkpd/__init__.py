"""pkpd: non-compartmental analysis and Bayesian population PK/PD for cell therapies.

The public API is re-exported here explicitly. Importing :mod:`pkpd` (or
:mod:`pkpd.nca`) does not import PyMC or Dask: :func:`fit_many`,
:func:`recovery_study` and :func:`sbc` (from :mod:`pkpd.scale`) and :func:`compare`
(from :mod:`pkpd.models`) load on first use.
"""

from pkpd._version import __version__
from pkpd.data import (
    load_example,
    prepare_event_table,
    read_adnca,
    read_nonmem,
    read_sdtm,
    resolve_roles,
)
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
    "compare",
    "fit_many",
    "load_example",
    "nca",
    "nca_profile",
    "prepare_event_table",
    "read_adnca",
    "read_nonmem",
    "read_sdtm",
    "recovery_study",
    "resolve_roles",
    "sbc",
]

_SCALE = ("fit_many", "recovery_study", "sbc")
_MODELS = ("compare",)


def __getattr__(name):
    if name in _SCALE:
        import pkpd.scale

        return getattr(pkpd.scale, name)
    if name in _MODELS:
        import pkpd.models

        return getattr(pkpd.models, name)
    raise AttributeError(f"module 'pkpd' has no attribute {name!r}")
