"""Model-ready arrays built from an event table, and their round trip to xarray.

:class:`ModelData` is what every population model consumes: one entry per
observation (subject index, time, value, BLQ flag, LLOQ, sampling matrix), the
subjects' covariates, model-specific arrays (doses per subject ...) and the records
set aside with their reasons. It converts to and from an :class:`xarray.Dataset`, so
a saved fit carries the exact data it was fitted to.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from pkpd.data import prepare_event_table
from pkpd.errors import DataError, PKPDWarning, describe_rows

__all__ = ["ModelData", "observations_from_frame"]


@dataclass
class ModelData:
    """Observations, subjects and model-specific arrays of one fit.

    Attributes
    ----------
    subjects
        Subject ids, in model order (the ``subject`` coordinate).
    obs_subject, obs_time, obs_dv, obs_blq, obs_lloq, obs_row
        One entry per observation: subject index, time, value (NaN when BLQ without
        a value), BLQ flag, LLOQ (NaN when none) and row position in the user's frame.
    obs_matrix
        Index of the sampling matrix of each observation into ``matrices``.
    matrices
        Sampling matrix levels (``["all"]`` when the data have no matrix column).
    covariates
        Subject-level covariate values, indexed by subject id.
    arrays
        Model-specific arrays: name -> (dims, values).
    meta
        JSON-serialisable facts: units, column names, covariate levels.
    excluded
        Records not used, with ``reason``.
    """

    subjects: np.ndarray
    obs_subject: np.ndarray
    obs_time: np.ndarray
    obs_dv: np.ndarray
    obs_blq: np.ndarray
    obs_lloq: np.ndarray
    obs_row: np.ndarray
    obs_matrix: np.ndarray
    matrices: list
    covariates: pd.DataFrame
    arrays: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def n_obs(self) -> int:
        return len(self.obs_time)

    def observations(self) -> pd.DataFrame:
        """The observations as a tidy frame (``ID, TIME, DV, BLQ, LLOQ, MATRIX``)."""
        return pd.DataFrame(
            {
                "ID": self.subjects[self.obs_subject],
                "TIME": self.obs_time,
                "DV": self.obs_dv,
                "BLQ": self.obs_blq,
                "LLOQ": self.obs_lloq,
                "MATRIX": np.asarray(self.matrices, dtype=object)[self.obs_matrix],
            }
        )

    # -- round trip -------------------------------------------------------------
    def to_dataset(self) -> xr.Dataset:
        """Everything as one Dataset (saved in the ``constant_data`` group of a fit)."""
        data_vars = {
            "obs_subject": ("obs", self.obs_subject),
            "obs_time": ("obs", self.obs_time),
            "obs_dv": ("obs", self.obs_dv),
            "obs_blq": ("obs", self.obs_blq.astype(np.int8)),
            "obs_lloq": ("obs", self.obs_lloq),
            "obs_row": ("obs", self.obs_row),
            "obs_matrix": ("obs", self.obs_matrix),
        }
        for col in self.covariates.columns:
            values = self.covariates[col].to_numpy()
            if values.dtype == object:
                values = values.astype(str)
            data_vars[f"cov__{col}"] = ("subject", values)
        for name, (dims, values) in self.arrays.items():
            data_vars[f"arr__{name}"] = (dims, values)
        subjects = self.subjects.astype(str) if self.subjects.dtype == object else self.subjects
        attrs = {
            "meta": json.dumps(self.meta),
            "matrices": json.dumps([str(m) for m in self.matrices]),
            "excluded": self.excluded.to_json(orient="split", default_handler=str),
            "subject_dtype": str(self.subjects.dtype),
        }
        return xr.Dataset(
            data_vars, coords={"subject": subjects, "obs": np.arange(self.n_obs)}, attrs=attrs
        )

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> ModelData:
        """Inverse of :meth:`to_dataset`."""
        subjects = ds["subject"].to_numpy()
        if ds.attrs.get("subject_dtype") == "object":
            subjects = subjects.astype(object)
        cov = {name[5:]: ds[name].to_numpy() for name in ds.data_vars if name.startswith("cov__")}
        arrays = {
            name[5:]: (ds[name].dims, ds[name].to_numpy())
            for name in ds.data_vars
            if name.startswith("arr__")
        }
        excluded = pd.read_json(_io(ds.attrs["excluded"]), orient="split", dtype=False)
        return cls(
            subjects=subjects,
            obs_subject=ds["obs_subject"].to_numpy().astype(np.int64),
            obs_time=ds["obs_time"].to_numpy().astype(float),
            obs_dv=ds["obs_dv"].to_numpy().astype(float),
            obs_blq=ds["obs_blq"].to_numpy().astype(bool),
            obs_lloq=ds["obs_lloq"].to_numpy().astype(float),
            obs_row=ds["obs_row"].to_numpy().astype(np.int64),
            obs_matrix=ds["obs_matrix"].to_numpy().astype(np.int64),
            matrices=json.loads(ds.attrs["matrices"]),
            covariates=pd.DataFrame(cov, index=pd.Index(subjects, name="ID")),
            arrays=arrays,
            meta=json.loads(ds.attrs["meta"]),
            excluded=excluded,
        )


def _io(text: str):
    from io import StringIO

    return StringIO(text)


def observations_from_frame(
    data: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    covariate_columns: tuple[str, ...] = (),
    what: str = "model",
    signed_dv: bool = False,
):
    """Validate ``data`` and extract the observations every population model needs.

    Returns the :class:`~pkpd.data.EventTable` and a partially filled
    :class:`ModelData` (no model-specific arrays yet).

    Handling, in order:

    - rows the event table sets aside (MDV=1, EVID 2/3) are listed in ``excluded``;
    - observations with a missing DV that are not BLQ are set aside
      ("DV missing and not flagged BLQ");
    - DV == 0 counts as BLQ (as in NCA) and, like every BLQ record, needs an LLOQ:
      a BLQ record without LLOQ raises :class:`DataError` naming the rows. The
      censoring conventions read into the same flag and limit (see
      ``docs/data.md``): NONMEM M3 (``BLQ=1``, ``DV = LLOQ``), Monolix (``CENS=1``,
      DV = the limit, no LLOQ column) and CDISC (``BLQFL = "Y"`` with an LLOQ
      column); a Monolix ``LIMIT > 0`` (interval censoring) raises;
    - a subject whose records are all BLQ is kept (the censored likelihood uses
      them) with a :class:`PKPDWarning` naming it;
    - covariates must be constant within a subject and present for every subject.

    ``signed_dv=True`` is for a residual error model with an additive part (the model's
    ``residual`` is ``"additive"`` or ``"combined"``): DV is used as reported, so 0 and
    negative values (assay noise around a low level) are observations; only the BLQ
    flag censors a record (without a flag column: DV < LLOQ). With ``False`` (the
    proportional model, which takes ln DV) a negative DV raises :class:`DataError`
    and DV 0 is BLQ, as above.
    """
    et = prepare_event_table(data, columns=columns, groups=None, signed_dv=signed_dv)
    roles = et.roles
    if roles.dvid is not None:
        levels = pd.unique(et.groups[roles.dvid])
        if len(levels) > 1:
            raise DataError(
                f"The data hold {len(levels)} analytes in column {roles.dvid!r} "
                f"({list(levels)[:6]}); the {what} fits one. Select one analyte's rows first, "
                "e.g. data[data.DVID == 'CART']."
            )
    id_col = roles.id
    counts = np.diff(et.offsets)
    profile_ids = et.group_ids
    obs_ids = np.repeat(profile_ids, counts)
    if roles.matrix is not None:
        obs_matrix_raw = np.repeat(et.groups[roles.matrix].to_numpy(), counts)
    else:
        obs_matrix_raw = np.full(len(obs_ids), "all", dtype=object)

    # one censoring representation for NONMEM M3, Monolix CENS/LIMIT and CDISC BLQFL
    # (read by pkpd.data.prepare_event_table): BLQ flag and limit per observation
    lloq = np.array(et.lloq, dtype=float)
    interval = et.blq & (et.limit > 0)
    if interval.any():
        k = np.flatnonzero(interval)
        raise DataError(
            f"Interval-censored record(s) (column {roles.limit!r}: the value lies between "
            f"LIMIT {et.limit[k][:5].tolist()} and the limit {lloq[k][:5].tolist()}) at "
            f"{describe_rows(et.row[k], data.index[et.row[k]], obs_ids[k])}: the {what} "
            "models left-censoring (below the LLOQ) only. Set LIMIT to 0 or empty (censored "
            "below the limit), or set these records aside."
        )
    bad_lloq = np.isfinite(lloq) & (lloq <= 0)
    if bad_lloq.any():
        k = np.flatnonzero(bad_lloq)
        raise DataError(
            f"LLOQ must be > 0; column {roles.lloq!r} at "
            f"{describe_rows(et.row[k], data.index[et.row[k]], obs_ids[k])}."
        )
    blq = et.blq.copy()
    et, obs_ids, obs_matrix_raw, lloq, blq = _set_aside_predose_zeros(
        et, obs_ids, obs_matrix_raw, lloq, blq
    )
    no_lloq = blq & ~np.isfinite(lloq)
    if no_lloq.any():
        k = np.flatnonzero(no_lloq)
        raise DataError(
            f"BLQ observations (DV 0, flagged, or below LLOQ) need their LLOQ for the censored "
            f"(M3) likelihood, but none is given at "
            f"{describe_rows(et.row[k], data.index[et.row[k]], obs_ids[k])}. Add an LLOQ column "
            "(or columns={'lloq': ...})."
        )
    missing = np.isnan(et.dv) & ~blq
    aside = [et.set_aside]
    if missing.any():
        k = np.flatnonzero(missing)
        aside.append(
            pd.DataFrame(
                {
                    "row": et.row[k],
                    "ID": obs_ids[k],
                    "TIME": et.time[k],
                    "DV": et.dv[k],
                    "reason": "DV missing and not flagged BLQ",
                }
            )
        )
    keep = ~missing

    subjects = pd.unique(profile_ids)
    if np.asarray(subjects).dtype.kind in "iuf":
        subjects = np.sort(np.asarray(subjects))
    subjects = np.asarray(subjects)
    subj_index = pd.Index(subjects)
    obs_subject = subj_index.get_indexer(obs_ids)

    all_blq = pd.Series(blq[keep]).groupby(obs_subject[keep]).all()
    if all_blq.any():
        who = subjects[all_blq.index[all_blq.to_numpy()]]
        warnings.warn(
            f"Subject(s) {who[:10].tolist()} have no observation above the LLOQ. They are kept: "
            "their BLQ records enter the likelihood as left-censored (M3), which tells the "
            "model their levels stayed low.",
            PKPDWarning,
            stacklevel=3,
        )

    matrices = list(pd.unique(obs_matrix_raw[keep]))
    obs_matrix = pd.Index(matrices).get_indexer(obs_matrix_raw)

    cov = subject_covariates(data, id_col, subjects, covariate_columns)
    d = ModelData(
        subjects=subjects,
        obs_subject=obs_subject[keep].astype(np.int64),
        obs_time=et.time[keep],
        obs_dv=et.dv[keep],
        obs_blq=blq[keep],
        obs_lloq=lloq[keep],
        obs_row=et.row[keep].astype(np.int64),
        obs_matrix=obs_matrix[keep].astype(np.int64),
        matrices=matrices,
        covariates=cov,
        meta={"id_col": str(id_col)},
        excluded=pd.concat([a for a in aside if len(a)], ignore_index=True)
        if any(len(a) for a in aside)
        else pd.DataFrame(columns=["row", "ID", "TIME", "DV", "reason"]),
    )
    if roles.dvu is not None:
        units = pd.unique(data[roles.dvu].iloc[et.row].dropna())
        if len(units) > 1:
            raise DataError(
                f"Column {roles.dvu!r} holds several DV units {list(units)}; convert the values to "
                "one unit first."
            )
        if len(units):
            d.meta["conc_unit"] = str(units[0])
    return et, d


def subject_covariates(
    data: pd.DataFrame, id_col: str, subjects: np.ndarray, columns: tuple[str, ...]
) -> pd.DataFrame:
    """One value per subject for each covariate column (constant within subject)."""
    out = {}
    for col in dict.fromkeys(columns):
        if col not in data.columns:
            raise DataError(
                f"Covariate column {col!r} is not in the data; columns present: "
                f"{list(data.columns)}."
            )
        per = data[[id_col, col]].dropna().drop_duplicates()
        n_values = per.groupby(id_col)[col].nunique()
        varying = n_values[n_values > 1]
        if len(varying):
            raise DataError(
                f"Covariate {col!r} changes within subject(s) {list(varying.index[:5])}; a "
                "subject-level covariate must be constant. Use its baseline value."
            )
        values = per.drop_duplicates(id_col).set_index(id_col)[col]
        values = values.reindex(subjects)
        if values.isna().any():
            who = list(values.index[values.isna()][:5])
            raise DataError(
                f"Covariate {col!r} is missing for subject(s) {who}. Impute it or drop the "
                "subjects before fitting."
            )
        out[col] = values.to_numpy()
    return pd.DataFrame(out, index=pd.Index(subjects, name="ID"))


#: reason given to a zero (BLQ) sample at or before the subject's first dose without LLOQ
PREDOSE_ZERO = "pre-dose zero (at or before the first dose, no LLOQ): no drug yet"


def _set_aside_predose_zeros(et, obs_ids, obs_matrix_raw, lloq, blq):
    """Set aside BLQ records without an LLOQ taken at or before the subject's first dose.

    A pre-dose sample reported as 0 (or flagged BLQ) with no LLOQ is the baseline of a
    drug-free subject, not a censored measurement: it carries no information for the
    models and is set aside with :data:`PREDOSE_ZERO`, as the NCA sets aside samples
    before the first dose, instead of demanding an LLOQ. Returns the event table and the
    per-observation arrays without them (the set-aside table gains their rows).
    """
    import dataclasses

    doses = et.doses
    if len(doses) == 0 or not blq.any():
        return et, obs_ids, obs_matrix_raw, lloq, blq
    first = doses.groupby("ID", sort=False)["TIME"].min()
    first_dose = first.reindex(obs_ids).to_numpy(dtype=float)  # NaN: no dose
    drop = blq & ~np.isfinite(lloq) & (et.time <= first_dose)
    if not drop.any():
        return et, obs_ids, obs_matrix_raw, lloq, blq
    aside = pd.DataFrame(
        {
            "row": et.row[drop],
            "ID": obs_ids[drop],
            "TIME": et.time[drop],
            "DV": et.dv[drop],
            "reason": PREDOSE_ZERO,
        }
    )
    keep = ~drop
    n = keep.size
    changes = {
        f.name: getattr(et, f.name)[keep]
        for f in dataclasses.fields(et)
        if f.name != "offsets"
        and isinstance(getattr(et, f.name), np.ndarray)
        and getattr(et, f.name).shape[:1] == (n,)
    }
    counts = np.add.reduceat(keep.astype(np.int64), et.offsets[:-1]) if n else np.diff(et.offsets)
    counts = np.where(np.diff(et.offsets) > 0, counts, 0)
    offsets = np.zeros_like(et.offsets)
    np.cumsum(counts, out=offsets[1:])
    set_aside = pd.concat([et.set_aside, aside], ignore_index=True)
    et = dataclasses.replace(et, offsets=offsets, set_aside=set_aside, **changes)
    return et, obs_ids[keep], obs_matrix_raw[keep], lloq[keep], blq[keep]
