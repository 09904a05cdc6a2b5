"""Bundled public example datasets, returned as pkpd event tables.

``theoph``
    R's ``datasets::Theoph`` (Boeckmann, Sheiner and Beal, NONMEM Users Guide
    Part V, 1994): 12 subjects, single oral dose of theophylline, time in h,
    concentration in mg/L. The dose is 320 mg for every subject, as in the
    Phoenix WinNonlin examples (the R column ``Dose`` is the same amount in
    mg/kg of body weight, kept as ``DOSE_MGKG``).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

__all__ = ["EXAMPLES", "load_example"]

THEOPH_DOSE_MG = 320.0

EXAMPLES = {
    "theoph": "Theophylline, 12 subjects, single oral 320 mg dose (R datasets::Theoph)",
}


def _read(name: str) -> pd.DataFrame:
    with resources.files(__package__).joinpath(f"{name}.csv").open("r") as fh:
        return pd.read_csv(fh)


def load_example(name: str = "theoph", *, raw: bool = False) -> pd.DataFrame:
    """Load a bundled example as an event table.

    Parameters
    ----------
    name
        One of :data:`EXAMPLES`.
    raw
        Return the file as distributed (e.g. R's column names) instead of the
        event table.

    Returns
    -------
    DataFrame
        NONMEM-style table: ``ID, TIME, DV, AMT, EVID, MDV, CMT`` plus
        covariates; one dose record (EVID 1) per subject at time 0.
    """
    if name not in EXAMPLES:
        raise KeyError(f"Unknown example {name!r}; available: {sorted(EXAMPLES)}")
    frame = _read(name)
    if raw:
        return frame
    obs = pd.DataFrame(
        {
            "ID": frame["Subject"].astype(np.int64),
            "TIME": frame["Time"].astype(float),
            "DV": frame["conc"].astype(float),
            "AMT": 0.0,
            "EVID": 0,
            "MDV": 0,
            "CMT": 2,
            "WT": frame["Wt"],
            "DOSE_MGKG": frame["Dose"],
        }
    )
    first = frame.groupby("Subject", sort=True).first().reset_index()
    doses = pd.DataFrame(
        {
            "ID": first["Subject"].astype(np.int64),
            "TIME": 0.0,
            "DV": np.nan,
            "AMT": THEOPH_DOSE_MG,
            "EVID": 1,
            "MDV": 1,
            "CMT": 1,
            "WT": first["Wt"],
            "DOSE_MGKG": first["Dose"],
        }
    )
    table = pd.concat([doses, obs], ignore_index=True)
    table = table.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable")
    return table.reset_index(drop=True)
