"""One-pass numba scan of the profile key and time columns (private).

For the common case (rows already sorted by a numeric subject id and time)
this replaces several full-length numpy passes (diffs, cumsums, sort checks)
by one loop.
"""

from __future__ import annotations

import numba as nb

from pkpd._config import NJIT_OPTIONS


@nb.njit(**NJIT_OPTIONS)
def scan_sorted_profiles(key, time, starts):
    """Scan (key, time) rows.

    Returns ``(status, n_groups, dup)``: status 0 when keys are non-decreasing
    and times non-decreasing within a key (``starts[:n_groups]`` then holds
    the first row of every profile), 1 otherwise (nothing else is valid).
    ``dup`` is the first row whose time repeats the previous row of the same
    profile (-1 if none).
    """
    n = key.shape[0]
    if n == 0:
        return 0, 0, -1
    g = 0
    starts[0] = 0
    dup = -1
    for i in range(1, n):
        if key[i] != key[i - 1]:
            if key[i] < key[i - 1]:
                return 1, 0, -1
            g += 1
            starts[g] = i
        else:
            if time[i] < time[i - 1]:
                return 1, 0, -1
            if time[i] == time[i - 1] and dup < 0:
                dup = i - 1
    return 0, g + 1, dup
