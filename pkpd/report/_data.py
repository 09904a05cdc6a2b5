"""Reading a study's data (``pkpd simulate`` layout) and checking it against its spec."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pkpd.errors import ColumnError, DataError
from pkpd.io import read_csv_checked
from pkpd.study import StudySpec, VirtualTrial, load_spec, output_paths

__all__ = ["load_trial"]

#: columns the event table must have (``pkpd simulate`` writes them)
EVENT_COLUMNS = ("ID", "TIME", "EVID", "AMT", "DV", "ANALYTE", "MATRIX", "TRT", "ARM")
SUBJECT_COLUMNS = ("ID", "ARM")
AE_COLUMNS = ("ID", "ARM", "SOC", "PT", "GRADE")
_TEXT = ("ANALYTE", "MATRIX", "TRT", "AMTU", "DVU", "ARM")


def _read(path: Path, what: str, required) -> pd.DataFrame:
    frame = read_csv_checked(
        path,
        f"{what} file",
        hint="DATA is the event table written by `pkpd simulate SPEC -o DATA`, with "
        "DATA-stem.subjects.csv and .ae.csv beside it.",
    )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ColumnError(
            f"{what} file {str(path)!r} lacks column(s) {missing}; it has "
            f"{list(frame.columns)}. Write it with `pkpd simulate`, or rename the columns."
        )
    for col in _TEXT:
        if col in frame.columns:
            frame[col] = frame[col].fillna("").astype(str)
    return frame


def load_trial(spec, data) -> VirtualTrial:
    """Read the event table ``data`` and its siblings into a :class:`VirtualTrial`.

    Parameters
    ----------
    spec
        :class:`~pkpd.study.StudySpec` or path to its TOML.
    data
        Event table CSV; ``<stem>.subjects.csv`` and ``<stem>.ae.csv`` must be beside
        it (``<stem>.truth.csv`` is read when present; truth is never used to analyse;
        ``<stem>.qol.csv``, EORTC item responses ``ID, TIME, Q1..Q50``, when present).

    Raises
    ------
    DataError
        A file is missing or unreadable, or the data do not belong to the spec: an arm
        the spec does not define, an analyte of a spec model absent, subjects of the
        event table missing from the subject table.
    """
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    paths = output_paths(data)
    events = _read(paths["events"], "event table", EVENT_COLUMNS)
    subjects = _read(paths["subjects"], "subject table", SUBJECT_COLUMNS)
    ae = _read(paths["ae"], "adverse-event listing", AE_COLUMNS)
    truth = (
        read_csv_checked(paths["truth"], "truth file")
        if paths["truth"].is_file()
        else pd.DataFrame()
    )
    check_against_spec(spec, events, subjects, ae, where=str(paths["events"]))
    qol_path = paths["events"].with_name(paths["events"].with_suffix("").name + ".qol.csv")
    qol = _read(qol_path, "HRQoL item table", ("ID", "TIME")) if qol_path.is_file() else None
    trial = VirtualTrial(spec=spec, seed=-1, events=events, subjects=subjects, ae=ae, truth=truth)
    if qol is not None:
        trial.qol = qol
    return trial


def check_against_spec(spec: StudySpec, events, subjects, ae, *, where: str = "data") -> None:
    """Raise :class:`DataError` when the tables cannot be the study of ``spec``."""
    arms = {a.name for a in spec.arms}
    for name, frame in (("event table", events), ("subject table", subjects), ("AE listing", ae)):
        bad = sorted(set(frame["ARM"].astype(str)) - arms)
        if bad:
            rows = frame.index[frame["ARM"].astype(str).isin(bad)][:5].tolist()
            raise DataError(
                f"{where}: {name} has arm(s) {bad} (rows {rows}) that spec "
                f"{spec.study.id!r} does not define (arms: {sorted(arms)}). Is this the data "
                "of another study? Give the matching spec."
            )
    obs = events[events["EVID"] == 0]
    present = set(obs["ANALYTE"])
    for name, m in spec.models.items():
        if m.analyte not in present:
            raise DataError(
                f"{where}: no observation of analyte {m.analyte!r} (model {name!r} of spec "
                f"{spec.study.id!r}); analytes in the data: {sorted(present)}. Is this the "
                "data of another study?"
            )
    doses = set(events.loc[events["EVID"] == 1, "TRT"])
    for name, m in spec.models.items():
        if m.treatment and m.treatment not in doses:
            raise DataError(
                f"{where}: no dose record of treatment {m.treatment!r} (model {name!r}); "
                f"treatments dosed in the data: {sorted(doses)}."
            )
    missing = sorted(set(events["ID"]) - set(subjects["ID"]))
    if missing:
        raise DataError(
            f"{where}: subject(s) {missing[:10]} of the event table are not in the subject "
            "table; both must come from the same `pkpd simulate` run."
        )
