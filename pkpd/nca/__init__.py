"""Non-compartmental analysis: numba kernels -> numpy layer -> pandas front-end.

>>> import pkpd
>>> res = pkpd.nca(pkpd.load_example("theoph"))
>>> res.wide.loc[0, "CMAX"]
10.5

Importing this module does not import PyMC (nor dask: :func:`nca_dask` imports it
when called).
"""

from pkpd.nca import registry
from pkpd.nca.arrays import NCAOptions, nca_arrays, nca_profile
from pkpd.nca.dask import NCADaskResult, nca_dask
from pkpd.nca.frontend import NCAResult, nca
from pkpd.nca.registry import PARAMETERS, ParameterSpec
from pkpd.nca.summary import geometric_cv, summarise

__all__ = [
    "PARAMETERS",
    "NCADaskResult",
    "NCAOptions",
    "NCAResult",
    "ParameterSpec",
    "geometric_cv",
    "nca",
    "nca_arrays",
    "nca_dask",
    "nca_profile",
    "registry",
    "summarise",
]
