"""Numerical configuration shared by every numba kernel in pkpd.

Fast-math flags are chosen here only. They never include ``nnan``/``ninf``:
pkpd kernels rely on NaN and Inf propagating (missing values, unestimable
parameters). ``reassoc`` is also left out, so sums are evaluated in program
order and results are reproducible to the last bit across runs.
"""

FASTMATH = frozenset({"nsz", "arcp", "contract"})

#: numba ``@njit`` options for kernels (``cache`` writes compiled code next to
#: the module so later processes skip compilation).
NJIT_OPTIONS = {"cache": True, "fastmath": set(FASTMATH), "nogil": True}
