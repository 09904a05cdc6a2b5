"""Diagnostic plots: each returns a Figure with the expected axes and artists, and saves."""

import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pkpd.errors import ColumnError, DataError, OptionError, PKPDWarning  # noqa: E402
from pkpd.models._vpc import vpc_table  # noqa: E402
from pkpd.models.plots import (  # noqa: E402
    BLQ_LABEL,
    plot_gof,
    plot_individual,
    plot_spaghetti,
    plot_vpc,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _frames(n_sub=5, matrix=False, seed=0):
    rng = np.random.default_rng(seed)
    times = np.array([1.0, 2, 4, 8, 24, 48])
    rows, curves = [], []
    grid = np.linspace(0.5, 48, 30)
    for i in range(1, n_sub + 1):
        ke = 0.1 * np.exp(rng.normal(0, 0.3))
        for m in ("blood", "marrow") if matrix else (None,):
            scale = 1.0 if m != "marrow" else 0.3
            ipred = scale * 10 * np.exp(-ke * times)
            pred = scale * 10 * np.exp(-0.1 * times)
            dv = ipred * np.exp(rng.normal(0, 0.2, times.size))
            for t, y, ip, p in zip(times, dv, ipred, pred, strict=True):
                row = {"ID": i, "TIME": t, "DV": y, "LLOQ": 0.2, "PRED": p, "IPRED": ip}
                row["BLQ"] = y < 0.2
                row["IWRES"] = (np.log(y) - np.log(ip)) / 0.2
                if row["BLQ"]:
                    row["DV"] = np.nan
                if m is not None:
                    row["MATRIX"] = m
                rows.append(row)
            ig = scale * 10 * np.exp(-ke * grid)
            for t, y in zip(grid, ig, strict=True):
                c = {
                    "ID": i,
                    "TIME": t,
                    "IPRED": y,
                    "IPRED_LO": 0.8 * y,
                    "IPRED_HI": 1.25 * y,
                    "PRED": scale * 10 * np.exp(-0.1 * t),
                }
                if m is not None:
                    c["MATRIX"] = m
                curves.append(c)
    gof = pd.DataFrame(rows)
    assert gof["BLQ"].any() and (~gof["BLQ"]).any()
    return gof, pd.DataFrame(curves)


def _saves(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=50)
    assert path.stat().st_size > 1000


# --- plot_gof --------------------------------------------------------------------------------


@pytest.mark.parametrize(("matrix", "log"), [(False, True), (True, False)])
def test_gof(tmp_path, matrix, log):
    gof, _ = _frames(matrix=matrix)
    fig = plot_gof(gof, log=log)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4
    n_blq = int(gof["BLQ"].sum())
    titles = [ax.get_title() for ax in fig.axes]
    assert all(f"{n_blq} BLQ" in t for t in titles)
    # scatter points: quantified observations only
    n_points = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert n_points == int((~gof["BLQ"]).sum())
    assert fig.axes[0].get_xscale() == ("log" if log else "linear")
    # +-1.96 and zero reference lines in the residual panels
    ys = sorted(round(line.get_ydata()[0], 2) for line in fig.axes[2].get_lines())
    assert ys == [-1.96, 0.0, 1.96]
    _saves(fig, tmp_path, "gof")


def test_gof_errors():
    gof, _ = _frames()
    with pytest.raises(ColumnError, match=r"gof lacks column\(s\) \['IWRES'\]"):
        plot_gof(gof.drop(columns="IWRES"))
    with pytest.raises(DataError, match="BLQ"):
        plot_gof(gof.assign(BLQ=np.where(gof["BLQ"], 1.0, np.nan)))
    with pytest.raises(DataError, match="boolean"):
        plot_gof(gof.assign(BLQ=3))


# --- plot_individual -------------------------------------------------------------------------


def _legend_labels(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_individual_blq_markers_at_lloq(tmp_path):
    gof, curves = _frames(n_sub=6)
    fig = plot_individual(gof, curves, ncols=4)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6  # 2 x 4 grid, unused cells removed
    labels = _legend_labels(fig)
    assert BLQ_LABEL in labels and "IPRED" in labels and "PRED" in labels
    for ax, (sid, part) in zip(fig.axes, gof.groupby("ID"), strict=True):
        assert ax.get_title() == f"ID {sid}"
        assert ax.get_yscale() == "log"
        blq = part[part["BLQ"]]
        marks = [c for c in ax.collections if c.get_label() == BLQ_LABEL]
        if len(blq):
            (mk,) = marks
            np.testing.assert_allclose(mk.get_offsets(), blq[["TIME", "LLOQ"]].to_numpy())
            assert len(mk.get_facecolors()) == 0  # open marker
        else:
            assert not marks
        # one IPRED line (solid) and one PRED line (dashed)
        styles = sorted(line.get_linestyle() for line in ax.get_lines())
        assert styles == ["-", "--"]
    _saves(fig, tmp_path, "individual")


def test_individual_one_colour_per_matrix(tmp_path):
    gof, curves = _frames(n_sub=3, matrix=True)
    fig = plot_individual(gof, curves, log=False)
    assert len(fig.axes) == 3
    ax = fig.axes[0]
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert len(solid) == 2
    assert solid[0].get_color() != solid[1].get_color()
    labels = _legend_labels(fig)
    assert {"IPRED (blood)", "IPRED (marrow)", "observed (blood)", "observed (marrow)"} <= set(
        labels
    )
    assert BLQ_LABEL in labels
    _saves(fig, tmp_path, "individual_matrix")


def test_individual_selection_and_errors():
    gof, curves = _frames(n_sub=5)
    fig = plot_individual(gof, curves, ids=[3, 1])
    assert [ax.get_title() for ax in fig.axes] == ["ID 3", "ID 1"]
    with pytest.warns(PKPDWarning, match="first 2 of 5 subjects"):
        fig = plot_individual(gof, curves, max_panels=2)
    assert len(fig.axes) == 2
    with pytest.raises(OptionError, match="max_panels=2"):
        plot_individual(gof, curves, ids=[1, 2, 3], max_panels=2)
    with pytest.raises(OptionError, match=r"ids \[99\] are in neither"):
        plot_individual(gof, curves, ids=[99])
    with pytest.raises(OptionError, match="ncols"):
        plot_individual(gof, curves, ncols=0)
    with pytest.raises(ColumnError, match="IPRED_LO"):
        plot_individual(gof, curves.drop(columns="IPRED_LO"))


# --- plot_vpc --------------------------------------------------------------------------------


def _vpc(log_bins=False):
    rng = np.random.default_rng(3)
    time = np.tile([0.5, 1, 2, 4, 8, 24, 48.0], 30)
    mean = np.log(10) - 0.1 * time
    dv = np.exp(mean + rng.normal(0, 0.5, time.size))
    lloq = np.full(time.size, 0.1)
    blq = dv < lloq
    sim = np.exp(mean + rng.normal(0, 0.5, (100, time.size)))
    return vpc_table(time, np.where(blq, np.nan, dv), blq, lloq, sim, n_bins=7, log_bins=log_bins)


@pytest.mark.parametrize("log_bins", [False, True])
def test_vpc(tmp_path, log_bins):
    table = _vpc(log_bins)
    assert table["OBS_Q05"].isna().any()  # censored percentiles are handled
    fig = plot_vpc(table, time_label="Time (h)", dv_label="Conc")
    assert isinstance(fig, Figure)
    top, bottom = fig.axes
    assert len(fig.axes) == 2
    assert top.get_shared_x_axes().joined(top, bottom)
    assert top.get_yscale() == "log" and bottom.get_xlabel() == "Time (h)"
    assert bottom.get_xscale() == ("log" if log_bins else "linear")
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert labels == [
        "simulated 5th, 95th pct.: 90% PI",
        "simulated 5th, 95th pct.: median",
        "observed 5th, 95th pct.",
        "simulated 50th pct.: 90% PI",
        "simulated 50th pct.: median",
        "observed 50th pct.",
        "LLOQ",
    ]
    assert len(top.collections) == 3  # one band per percentile
    assert bottom.get_ylabel() == "Fraction BLQ"
    _saves(fig, tmp_path, "vpc")


def test_vpc_linear_and_errors():
    table = _vpc()
    fig = plot_vpc(table, log=False)
    assert fig.axes[0].get_yscale() == "linear"
    with pytest.raises(ColumnError, match="SIM_BLQ_MID"):
        plot_vpc(table.drop(columns="SIM_BLQ_MID"))
    with pytest.raises(ColumnError, match="SIM_Q50_HI"):
        plot_vpc(table.drop(columns="SIM_Q50_HI"))
    with pytest.raises(ColumnError, match="OBS_Q"):
        plot_vpc(table.drop(columns=[c for c in table.columns if c.startswith("OBS_Q")]))


# --- plot_spaghetti --------------------------------------------------------------------------


def test_spaghetti(tmp_path):
    gof, _ = _frames(n_sub=6)
    gof["DOSE"] = np.where(gof["ID"] <= 3, "low", "high")
    fig = plot_spaghetti(gof, group="DOSE")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 6
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["low", "high"]
    colours = {line.get_color() for line in ax.get_lines()}
    assert len(colours) == 2
    _saves(fig, tmp_path, "spaghetti")

    other = gof.rename(columns={"ID": "USUBJID", "TIME": "TAD", "DV": "CONC"})
    fig = plot_spaghetti(other, id_col="USUBJID", time_col="TAD", dv_col="CONC", log=False)
    assert len(fig.axes[0].get_lines()) == 6 and fig.axes[0].get_legend() is None
    with pytest.raises(ColumnError, match="DOSE"):
        plot_spaghetti(other, id_col="USUBJID", time_col="TAD", dv_col="CONC", group="DOSE2")
