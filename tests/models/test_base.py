"""PopulationModel / ModelData / PopulationFit: likelihood, validation, config, tables, files.

- The M3 censored likelihood of a built PyMC model is checked against an independent
  scipy computation (plain-Python Stein formula, hand-written hierarchy), to 1e-8.
- Bad input raises a PKPDError subclass naming the subject or column.
- Priors, covariate effects and model configs validate and round-trip.
- ModelData round-trips through xarray.
- One shared small real fit (``small_fit`` in conftest.py) feeds the table, plot, file
  and convergence tests.
"""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import integrate, stats

from pkpd.errors import DataError, OptionError, PKPDError, PKPDWarning
from pkpd.models import (
    CellularKinetics,
    ConvergenceWarning,
    CovariateEffect,
    ModelData,
    Prior,
    load,
)
from pkpd.models._diagnostics import warn_if_failed

from .conftest import FIT_SETTINGS, N_SUBJECTS, stein

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

STRUCTURAL = ["Cmax", "Tmax", "foldx", "alpha", "beta", "FB"]
#: relative accuracy of PyMC's normal log-CDF (float32 sqrt(2) constant; see the xfail test)
BLQ_RTOL = 5e-8


# --- an independent reference: plain-Python Stein model and hierarchy -------------------


def expit(x):
    return 1.0 / (1.0 + math.exp(-x))


def latent_mean(prior):
    """Mean of the latent normal of a lognormal/logitnormal/normal prior."""
    p = prior.params
    if prior.kind == "lognormal":
        return math.log(p["median"])
    if prior.kind == "logitnormal":
        return math.log(p["median"] / (1.0 - p["median"]))
    return p["mu"]


def reference_logp(model_obj, pymc_model, point, frame, data):
    """Independent log density at ``point``.

    Returns ``total`` (with the log-transform Jacobians), the per-record terms
    ``quant`` and ``blq``, and for the BLQ records ``blq_log_f``, ``blq_log_lloq``
    and ``sigma``.

    Individual parameters from mu + omega * z (exp, or expit for fractions); ln f from
    the plain Stein formula, superposing the infusions read from ``frame``; quantified
    records: norm.logpdf(ln DV; ln f, sigma); BLQ: norm.logcdf((ln LLOQ - ln f)/sigma).
    """
    logit_params = {"FB", "lag_fraction"}
    names = [p.name for p in model_obj.structural_parameters()]
    subjects = list(pymc_model.coords["subject"])
    eta_names = list(pymc_model.coords["eta_parameter"])
    z = np.asarray(point["z"], dtype=float)
    omega = {b: math.exp(float(point[f"omega_{b}_log__"])) for b in eta_names}
    sigma = math.exp(float(point["sigma_log__"]))
    theta = {}
    for i, sid in enumerate(subjects):
        th = {}
        for p in names:
            lat = float(point[f"mu_{p}"]) + omega[p] * z[i, eta_names.index(p)]
            th[p] = expit(lat) if p in logit_params else math.exp(lat)
        theta[sid] = th

    exponent = float(point["dose_exponent"]) if "dose_exponent" in point else 0.0
    log_ratio = np.atleast_1d(point.get("matrix_log_ratio", np.zeros(0)))
    other = list(pymc_model.coords.get("matrix_other", ()))
    doses = frame[frame["EVID"] == 1]
    dref = float(np.median(doses["AMT"]))

    def log_f(row):
        th = theta[row["ID"]]
        lag = th["lag_fraction"] * th["Tmax"] if "lag_fraction" in th else 0.0
        total = 0.0
        for _, dose in doses[doses["ID"] == row["ID"]].iterrows():
            w = (dose["AMT"] / dref) ** exponent
            total += w * stein(
                row["TIME"] - dose["TIME"],
                th["Cmax"],
                th["Tmax"],
                th["foldx"],
                th["alpha"],
                th["beta"],
                th["FB"],
                lag,
            )
        scale = 0.0
        if "MATRIX" in row and row["MATRIX"] in other:
            scale = float(log_ratio[other.index(row["MATRIX"])])
        return math.log(total) + scale

    quant_terms, blq_terms, blq_log_f, blq_log_lloq = [], [], [], []
    for k in pymc_model.coords.get("obs_quantified", ()):
        row = frame.iloc[int(data.obs_row[k])]
        assert row["BLQ"] == 0 and row["DV"] > 0
        quant_terms.append(stats.norm.logpdf(math.log(row["DV"]), log_f(row), sigma))
    for k in pymc_model.coords.get("obs_blq", ()):
        row = frame.iloc[int(data.obs_row[k])]
        assert row["BLQ"] == 1 and row["DV"] == 0
        blq_log_f.append(log_f(row))
        blq_log_lloq.append(math.log(row["LLOQ"]))
        blq_terms.append(stats.norm.logcdf((blq_log_lloq[-1] - blq_log_f[-1]) / sigma))

    # priors on the sampled (unconstrained) scale, with the log-transform Jacobians
    priors = model_obj.priors
    total = sum(quant_terms) + sum(blq_terms)
    expected_keys = {"z", "sigma_log__"}
    for p in names:
        pr = priors[p]
        total += stats.norm.logpdf(float(point[f"mu_{p}"]), latent_mean(pr), pr.latent_sd)
        expected_keys.add(f"mu_{p}")
    total += stats.norm.logpdf(z).sum()
    for b in eta_names:
        s = priors[f"omega_{b}"].params["sigma"]
        total += stats.halfnorm.logpdf(omega[b], scale=s) + math.log(omega[b])
        expected_keys.add(f"omega_{b}_log__")
    total += stats.halfnorm.logpdf(sigma, scale=priors["sigma"].params["sigma"]) + math.log(sigma)
    if other:
        pr = priors["matrix_log_ratio"]
        total += stats.norm.logpdf(log_ratio, pr.params["mu"], pr.params["sigma"]).sum()
        expected_keys.add("matrix_log_ratio")
    if "dose_exponent" in point:
        pr = priors["dose_exponent"]
        total += stats.norm.logpdf(exponent, pr.params["mu"], pr.params["sigma"])
        expected_keys.add("dose_exponent")
    assert set(point) == expected_keys, "a free variable the reference does not know"
    return {
        "total": total,
        "quant": np.array(quant_terms),
        "blq": np.array(blq_terms),
        "blq_log_f": np.array(blq_log_f),
        "blq_log_lloq": np.array(blq_log_lloq),
        "sigma": sigma,
    }


def _likelihood_case(case):
    """(model, data frame) of a likelihood case, with BLQ records."""
    if case == "single":
        model = CellularKinetics(variant="stein")
        frame = model.simulate(4, times=(1, 4, 10, 28, 90, 180), lloq=200.0, seed=11)
    else:  # two infusions, two matrices, lag and a dose effect
        model = CellularKinetics(variant="stein", lag=True, dose_effect=True)
        doses = pd.DataFrame(
            {
                "ID": [1, 1, 2, 2, 3, 4],
                "TIME": [0.0, 7.0, 0.0, 7.0, 0.0, 0.0],
                "AMT": [1e6, 2e6, 5e5, 5e5, 1e6, 3e6],
            }
        )
        frame = model.simulate(
            4,
            times=(1, 3, 7, 9, 14, 28, 90, 180),
            doses=doses,
            matrices={"PB": 1.0, "BM": 0.3},
            lloq={"PB": 200.0, "BM": 150.0},
            seed=12,
        )
    return model, frame


def _fixed_point(pymc_model, seed):
    rng = np.random.default_rng(seed)
    point = pymc_model.initial_point()
    return {k: v + 0.3 * rng.standard_normal(np.shape(v)) for k, v in point.items()}


@pytest.fixture(scope="module", params=["single", "two-infusions-matrices-lag-dose"])
def likelihood_case(request):
    model, frame = _likelihood_case("single" if request.param == "single" else "multi")
    data = model.prepare(frame)
    pm_model = model.build_model(data)
    point = _fixed_point(pm_model, seed=3)
    obs_vars = [pm_model["ln_dv"], pm_model["ln_lloq"]]
    fn = pm_model.compile_fn(
        [pm_model.logp(), *pm_model.logp(vars=obs_vars, jacobian=False, sum=False)]
    )
    total, quant, blq = fn(point)
    return {
        "ref": reference_logp(model, pm_model, point, frame, data),
        "model": model,
        "frame": frame,
        "data": data,
        "pm_model": pm_model,
        "point": point,
        "total": float(total),
        "quant": np.asarray(quant),
        "blq": np.asarray(blq),
    }


def test_censored_likelihood_matches_scipy(likelihood_case):
    c, ref = likelihood_case, likelihood_case["ref"]
    assert c["quant"].shape == ref["quant"].shape and c["blq"].shape == ref["blq"].shape
    # quantified records: ln N(ln DV; ln f, sigma) to 1e-8
    np.testing.assert_allclose(c["quant"], ref["quant"], rtol=0, atol=1e-8)
    # BLQ records: ln Phi((ln LLOQ - ln f)/sigma), to PyMC's log-CDF accuracy (xfail below)
    np.testing.assert_allclose(c["blq"], ref["blq"], rtol=BLQ_RTOL, atol=1e-8)
    # priors + Jacobians (float64 prior constants) to 1e-8
    np.testing.assert_allclose(_prior_part(c), _prior_part(ref), rtol=0, atol=1e-8)
    # compile_logp (what the samplers see) gives the same total as the terms
    logp = c["pm_model"].compile_logp()
    np.testing.assert_allclose(float(logp(c["point"])), c["total"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(c["total"], ref["total"], rtol=BLQ_RTOL, atol=1e-8)


def _prior_part(c):
    return c["total"] - c["quant"].sum() - c["blq"].sum()


@pytest.mark.xfail(
    strict=True,
    reason="PyMC 6.4.0 bug, not pkpd: dist_math.normal_lcdf divides by pt.sqrt(2.0), a "
    "float32 constant (1.41421354 instead of 1.41421356), so the M3 BLQ term ln Phi(z) is "
    "off by up to ~2e-8 relative (1.7e-8 absolute here); with the float32 constant "
    "reproduced in scipy it agrees to 4e-16",
)
def test_censored_blq_terms_match_scipy_to_1e_8(likelihood_case):
    np.testing.assert_allclose(
        likelihood_case["blq"], likelihood_case["ref"]["blq"], rtol=0, atol=1e-8
    )


def test_prior_terms_match_scipy_to_1e_8(likelihood_case):
    """Regression: float32-exact prior sds (2.5, 1.5) once made -ln(sd) float32 (3e-8 off)."""
    np.testing.assert_allclose(
        _prior_part(likelihood_case), _prior_part(likelihood_case["ref"]), rtol=0, atol=1e-8
    )


def test_blq_term_is_log_integral_of_normal_density(likelihood_case):
    """ln P(ln y < ln LLOQ) = ln of the integral of the normal density below ln LLOQ."""
    c = likelihood_case
    ref = c["ref"]
    # a record in the body of the distribution and one in the far tail
    for k in (
        int(np.argmin(np.abs(ref["blq"] - math.log(0.3)))),
        int(np.argmin(ref["blq"])),
    ):
        mu, upper, sigma = ref["blq_log_f"][k], ref["blq_log_lloq"][k], ref["sigma"]
        # split at the mean so that quad sees the peak of the density
        pieces = [(-np.inf, upper)] if upper <= mu else [(-np.inf, mu), (mu, upper)]
        prob = sum(
            integrate.quad(stats.norm.pdf, a, b, args=(mu, sigma), epsabs=0, epsrel=1e-13)[0]
            for a, b in pieces
        )
        assert prob > 0
        # the scipy reference is exactly the log integral ...
        np.testing.assert_allclose(ref["blq"][k], math.log(prob), rtol=1e-10, atol=1e-12)
        # ... and the model's censored term is too (to PyMC's log-CDF accuracy)
        np.testing.assert_allclose(c["blq"][k], math.log(prob), rtol=BLQ_RTOL, atol=1e-8)


# --- bad input ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_frame():
    return CellularKinetics(variant="stein").simulate(3, times=(1, 7, 28), lloq=1.0, seed=0)


def _obs_mask(df, sid, time):
    return (df["ID"] == sid) & (df["EVID"] == 0) & (df["TIME"] == time)


def _names(msg, value):
    return re.search(rf"\b{re.escape(str(value))}\b", msg) is not None


def test_blq_without_lloq_raises(base_frame):
    df = base_frame.drop(columns="LLOQ").copy()
    df.loc[_obs_mask(df, 3, 7.0), ["DV", "BLQ"]] = [0.0, 1]
    with pytest.raises(DataError, match="LLOQ") as err:
        CellularKinetics(variant="stein").prepare(df)
    assert "subject 3" in str(err.value)


def test_negative_dv_raises(base_frame):
    df = base_frame.copy()
    df.loc[_obs_mask(df, 2, 7.0), "DV"] = -3.0
    with pytest.raises(DataError, match="negative") as err:
        CellularKinetics(variant="stein").prepare(df)
    assert "'DV'" in str(err.value) and "subject 2" in str(err.value)


def test_covariate_changing_within_subject_raises(base_frame):
    df = base_frame.assign(SEX="F")
    df.loc[(df["ID"] == 2) & (df["TIME"] == 28.0), "SEX"] = "M"
    with pytest.raises(DataError, match="changes within subject") as err:
        CellularKinetics(variant="stein", covariates=["Cmax~SEX"]).prepare(df)
    assert "'SEX'" in str(err.value) and _names(str(err.value), 2)


def test_covariate_missing_for_subject_raises(base_frame):
    df = base_frame.assign(SEX="F")
    df.loc[df["ID"] == 3, "SEX"] = np.nan
    with pytest.raises(DataError, match="missing for subject") as err:
        CellularKinetics(variant="stein", covariates=["Cmax~SEX"]).prepare(df)
    assert "'SEX'" in str(err.value) and _names(str(err.value), 3)


def test_unknown_covariate_column_raises(base_frame):
    with pytest.raises(DataError, match="'WT' is not in the data"):
        CellularKinetics(
            variant="stein", covariates=[CovariateEffect("Cmax", "WT", "power")]
        ).prepare(base_frame)


def test_unknown_prior_name_raises():
    with pytest.raises(OptionError, match="'CL'"):
        CellularKinetics(variant="stein", priors={"CL": Prior.lognormal(1.0, 1.0)})
    with pytest.raises(OptionError, match="omega_CL"):
        CellularKinetics(
            variant="stein", priors={"omega_CL": {"kind": "halfnormal", "params": {"sigma": 1}}}
        )


def test_unknown_bsv_parameter_raises():
    with pytest.raises(OptionError, match="'CL'"):
        CellularKinetics(variant="stein", bsv=["Cmax", "CL"])
    with pytest.raises(OptionError, match="at least two"):
        CellularKinetics(variant="stein", bsv=["Cmax"], correlated=True)


def test_covariate_on_unknown_parameter_raises():
    with pytest.raises(OptionError, match="'CL'") as err:
        CellularKinetics(variant="stein", covariates=["CL~SEX"])
    assert "'SEX'" in str(err.value)


def test_single_level_categorical_covariate_raises(base_frame):
    df = base_frame.assign(SEX="F")
    with pytest.raises(OptionError, match="one level") as err:
        CellularKinetics(variant="stein", covariates=["Cmax~SEX"]).build_model(df)
    assert "'SEX'" in str(err.value)


def test_reference_level_not_in_data_raises(base_frame):
    df = base_frame.assign(SEX=np.where(base_frame["ID"] == 1, "F", "M"))
    cov = CovariateEffect("Cmax", "SEX", reference="X")
    with pytest.raises(OptionError, match="'X'"):
        CellularKinetics(variant="stein", covariates=[cov]).build_model(df)


def test_nonpositive_power_covariate_raises(base_frame):
    df = base_frame.assign(WT=np.where(base_frame["ID"] == 1, 0.0, 70.0))
    with pytest.raises(OptionError, match="'WT'"):
        CellularKinetics(
            variant="stein", covariates=[CovariateEffect("Cmax", "WT", "power")]
        ).build_model(df)


def test_two_analytes_raise(base_frame):
    df = pd.concat(
        [
            base_frame.assign(DVID="CART"),
            base_frame[base_frame["EVID"] == 0].assign(DVID="IL6"),
        ],
        ignore_index=True,
    )
    with pytest.raises(DataError, match="2 analytes") as err:
        CellularKinetics(variant="stein").prepare(df)
    assert "'DVID'" in str(err.value)


def test_all_blq_subject_warns_and_is_kept(base_frame):
    df = base_frame.copy()
    df.loc[(df["ID"] == 3) & (df["EVID"] == 0), ["DV", "BLQ"]] = [0.0, 1]
    with pytest.warns(PKPDWarning, match="no observation above the LLOQ") as rec:
        d = CellularKinetics(variant="stein").prepare(df)
    assert _names(str(rec[0].message), 3)
    assert list(d.subjects) == [1, 2, 3]
    assert d.obs_blq[d.obs_subject == 2].all() and (d.obs_subject == 2).sum() == 3


@pytest.mark.parametrize("blq_column", [False, True])
def test_dv_zero_is_blq_and_needs_lloq(base_frame, blq_column):
    df = base_frame.copy()
    if not blq_column:
        df = df.drop(columns="BLQ")
    df.loc[_obs_mask(df, 1, 28.0), "DV"] = 0.0  # BLQ flag (if any) stays 0
    d = CellularKinetics(variant="stein").prepare(df)
    row = int(np.flatnonzero(_obs_mask(df, 1, 28.0).to_numpy())[0])
    k = int(np.flatnonzero(d.obs_row == row)[0])
    assert d.obs_blq[k] and d.obs_lloq[k] == 1.0
    assert d.obs_blq.sum() == (df.loc[df["EVID"] == 0, "DV"] == 0).sum()
    with pytest.raises(DataError, match="need their LLOQ") as err:
        CellularKinetics(variant="stein").prepare(df.drop(columns="LLOQ"))
    assert "subject 1" in str(err.value)


def test_every_error_is_a_pkpd_error():
    for cls in (DataError, OptionError):
        assert issubclass(cls, PKPDError) and issubclass(cls, ValueError)


# --- priors and configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("gamma", {"alpha": 1.0}), "Unknown prior kind"),
        (("lognormal", {"median": 1.0}), "takes"),
        (("lognormal", {"median": 1.0, "sd": 1.0, "x": 2.0}), "takes"),
        (("normal", {"mu": float("nan"), "sigma": 1.0}), "finite"),
        (("halfnormal", {"sigma": float("inf")}), "finite"),
        (("lognormal", {"median": -1.0, "sd": 1.0}), "median must be > 0"),
        (("lognormal", {"median": 1.0, "sd": 0.0}), "sd must be > 0"),
        (("normal", {"mu": 0.0, "sigma": -1.0}), "sigma must be > 0"),
        (("halfnormal", {"sigma": 0.0}), "sigma must be > 0"),
        (("logitnormal", {"median": 1.5, "sd": 1.0}), r"\(0, 1\)"),
        (("logitnormal", {"median": 1.0, "sd": 1.0}), r"\(0, 1\)"),
    ],
)
def test_prior_validation(args, match):
    with pytest.raises(OptionError, match=match):
        Prior(*args)


def test_prior_constructors_and_round_trip():
    p = Prior.logitnormal(0.2, 1.5, "some paper")
    assert p.latent_mean == pytest.approx(math.log(0.25)) and p.latent_sd == 1.5
    assert Prior.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert Prior.lognormal(10, 2).latent_mean == pytest.approx(math.log(10))
    assert Prior.halfnormal(0.5).describe() == "halfnormal(sigma=0.5)"


def test_covariate_effect_coerce_and_validation():
    c = CovariateEffect.coerce("Cmax~PRODUCT")
    assert (c.parameter, c.column, c.kind, c.reference, c.fixed) == (
        "Cmax",
        "PRODUCT",
        "categorical",
        None,
        None,
    )
    assert c.name == "beta_Cmax_PRODUCT"
    assert CovariateEffect.coerce(" Tmax ~ SEX ") == CovariateEffect("Tmax", "SEX")
    assert CovariateEffect.coerce(c) is c
    power = CovariateEffect("Cmax", "WT", "power", reference=70, fixed=0.75)
    assert CovariateEffect.coerce(power.to_dict()) == power
    assert CovariateEffect.coerce({"parameter": "Cmax", "column": "WT", "kind": "power"}).kind == (
        "power"
    )
    with pytest.raises(OptionError, match="Cannot read covariate"):
        CovariateEffect.coerce("Cmax PRODUCT")
    with pytest.raises(OptionError, match="Cannot read covariate"):
        CovariateEffect.coerce(3)
    with pytest.raises(OptionError, match="'categorical' or 'power'"):
        CovariateEffect("Cmax", "WT", kind="linear")
    with pytest.raises(OptionError, match="fixed"):
        CovariateEffect("Cmax", "SEX", fixed=1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {
            "lag": True,
            "dose_effect": True,
            "dose_reference": 1e6,
            "reference_matrix": "BM",
            "priors": {"Cmax": Prior.lognormal(100.0, 1.0, "cells/uL: my lab")},
            "bsv": ["Cmax", "Tmax", "alpha"],
            "correlated": True,
            "covariates": [
                "Cmax~PRODUCT",
                CovariateEffect("Tmax", "WT", "power", reference=70, fixed=0.75),
            ],
            "columns": {"lloq": "LOQ"},
            "time_unit": "h",
            "conc_unit": "cells/uL",
        },
    ],
)
def test_config_round_trip(kwargs):
    model = CellularKinetics(variant="stein", **kwargs)
    config = model.config()
    text = json.dumps(config)  # JSON-serialisable, as saved with every fit
    again = CellularKinetics.from_config(json.loads(text))
    assert again.config() == config
    assert type(again) is CellularKinetics
    assert again.priors == model.priors and again.covariates == model.covariates
    if kwargs:
        assert again.priors["Cmax"].source == "cells/uL: my lab"
        assert again.lag and again.dose_effect and again.correlated and again.time_unit == "h"


@pytest.mark.parametrize("kwargs", [{}, {"lag": True, "dose_effect": True}])
def test_prior_table_has_sources(kwargs):
    model = CellularKinetics(variant="stein", **kwargs)
    table = model.prior_table()
    assert list(table.columns) == ["parameter", "prior", "source"]
    assert set(table["parameter"]) == set(model.priors)
    assert table["source"].map(lambda s: isinstance(s, str) and s.strip() != "").all()
    assert {"Cmax", "omega_Cmax", "sigma"} <= set(table["parameter"])


# --- ModelData round trip -----------------------------------------------------------------


def _roundtrip_frame(str_ids: bool):
    model = CellularKinetics(variant="stein", covariates=["Cmax~PRODUCT"])
    df = model.simulate(
        6,
        times=(1, 7, 14, 28, 90),
        lloq={"PB": 20.0, "BM": 20.0},
        matrices={"PB": 1.0, "BM": 0.3},
        seed=2,
    )
    df["PRODUCT"] = np.where(df["ID"] <= 3, "tisa-cel", "axi-cel")
    extra = pd.DataFrame(
        [
            # before the first infusion, DV missing (not BLQ), MDV=1
            {"ID": 1, "TIME": -1.0, "EVID": 0, "MDV": 0, "DV": 5.0, "BLQ": 0, "LLOQ": 1.0},
            {"ID": 2, "TIME": 3.0, "EVID": 0, "MDV": 0, "DV": np.nan, "BLQ": 0, "LLOQ": 20.0},
            {"ID": 3, "TIME": 5.0, "EVID": 0, "MDV": 1, "DV": 7.0, "BLQ": 0, "LLOQ": 20.0},
        ]
    ).assign(AMT=0.0, MATRIX="PB")
    extra["PRODUCT"] = np.where(extra["ID"] <= 3, "tisa-cel", "axi-cel")
    df = pd.concat([df, extra], ignore_index=True)
    if str_ids:
        df["ID"] = df["ID"].map(lambda i: f"{i:03d}")
    return model, df


def _assert_model_data_equal(a: ModelData, b: ModelData, check_dtype=True):
    np.testing.assert_array_equal(a.subjects, b.subjects)
    assert a.subjects.dtype == b.subjects.dtype
    for name in (
        "obs_subject",
        "obs_time",
        "obs_dv",
        "obs_blq",
        "obs_lloq",
        "obs_row",
        "obs_matrix",
    ):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.matrices == b.matrices
    pd.testing.assert_frame_equal(a.covariates, b.covariates)
    assert a.arrays.keys() == b.arrays.keys()
    for name, (dims, values) in a.arrays.items():
        assert tuple(b.arrays[name][0]) == tuple(dims)
        np.testing.assert_array_equal(b.arrays[name][1], values)
    assert a.meta == b.meta
    pd.testing.assert_frame_equal(
        a.excluded.reset_index(drop=True),
        b.excluded.reset_index(drop=True),
        check_dtype=check_dtype,
    )


def test_model_data_round_trip():
    model, df = _roundtrip_frame(str_ids=False)
    d = model.prepare(df)
    assert d.matrices == ["PB", "BM"]
    assert sorted(d.excluded["reason"]) == [
        "DV missing and not flagged BLQ",
        "MDV=1: not an observation",
        "before the first infusion",
    ]
    assert d.obs_blq.any() and list(d.covariates["PRODUCT"].unique()) == ["tisa-cel", "axi-cel"]
    ds = d.to_dataset()
    assert isinstance(ds, xr.Dataset)
    # values (dtypes of `excluded` checked in the string-id test below)
    _assert_model_data_equal(d, ModelData.from_dataset(ds), check_dtype=False)
    # the observations frame is the same too
    pd.testing.assert_frame_equal(
        d.observations(), ModelData.from_dataset(ds).observations(), check_dtype=False
    )


def test_model_data_round_trip_string_ids_keeps_excluded():
    model, df = _roundtrip_frame(str_ids=True)
    d = model.prepare(df)
    assert d.subjects.tolist() == ["001", "002", "003", "004", "005", "006"]
    d2 = ModelData.from_dataset(d.to_dataset())
    assert d2.subjects.tolist() == d.subjects.tolist()
    assert d2.excluded["ID"].tolist() == d.excluded["ID"].tolist()
    _assert_model_data_equal(d, d2)


# --- the shared small fit ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_repr(small_fit):
    text = repr(small_fit)
    d = small_fit.data
    assert text.startswith("<CellularKinetics fit:")
    assert f"{N_SUBJECTS} subjects" in text
    assert f"{d.n_obs} observations ({int(d.obs_blq.sum())} BLQ)" in text
    assert f"{FIT_SETTINGS['chains']} chains x {FIT_SETTINGS['draws']} draws" in text
    assert "nutpie" in text


def test_summary(small_fit):
    s = small_fit.summary()
    expected = [*STRUCTURAL, *(f"omega_{p}" for p in STRUCTURAL), "sigma"]
    assert list(s.index) == expected
    cols = ["kind", "unit", "mean", "sd", "median", "q5", "q95", "ess_bulk", "ess_tail", "r_hat"]
    assert list(s.columns) == [*cols, "contraction", "informed_by"]
    assert s["unit"].map(lambda u: isinstance(u, str) and u != "").all()
    assert s.loc["Tmax", "unit"] == "day" and s.loc["alpha", "unit"] == "1/day"
    # posterior contraction, by hand: 1 - Var(mu | data) / Var(mu) on the sampled scale
    post = small_fit.posterior
    prior = small_fit.model.priors
    by_hand = 1 - np.var(post["mu_Cmax"].values, ddof=1) / prior["Cmax"].params["sd"] ** 2
    np.testing.assert_allclose(s.loc["Cmax", "contraction"], by_hand, rtol=1e-12)
    half = prior["sigma"].params["sigma"] ** 2 * (1 - 2 / np.pi)  # half-normal variance
    by_hand = 1 - np.var(post["sigma"].values, ddof=1) / half
    np.testing.assert_allclose(s.loc["sigma", "contraction"], by_hand, rtol=1e-12)
    expect = np.where(s["contraction"] >= 0.5, "data",
                      np.where(s["contraction"] >= 0.1, "prior and data", "prior"))  # fmt: skip
    assert list(s["informed_by"]) == list(expect)
    num = s[cols[2:]].astype(float)
    assert np.isfinite(num.to_numpy()).all()
    assert (num["q5"] <= num["median"]).all() and (num["median"] <= num["q95"]).all()
    assert (num["sd"] > 0).all()
    # typical values are the natural-scale transform of the sampled mu
    np.testing.assert_allclose(s.loc["Cmax", "median"], np.median(np.exp(post["mu_Cmax"])))
    wide = small_fit.summary(prob=0.5)
    assert {"q25", "q75"} <= set(wide.columns)


def test_individual(small_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # inf TBLQ draws: no inf - inf
        ind = small_fit.individual()
    assert list(ind["ID"]) == list(small_fit.data.subjects)
    assert len(ind) == N_SUBJECTS and ind["ID"].is_unique
    for name in ("Cmax", "Tmax", "AUC0_28", "AUC0_90"):
        for col in (name, f"{name}_lo", f"{name}_hi"):
            assert col in ind.columns
            assert np.isfinite(ind[col]).all() and (ind[col] > 0).all()
        assert (ind[f"{name}_lo"] <= ind[name]).all() and (ind[name] <= ind[f"{name}_hi"]).all()
    assert (ind["AUC0_28"] < ind["AUC0_90"]).all()
    assert {"Cmax_par", "foldx", "FB"} <= set(ind.columns)  # parameters next to exposures
    # some subjects' levels stay above the LLOQ in some draws (TBLQ = inf): never NaN
    assert not ind.filter(like="TBLQ").isna().any().any()
    assert (ind["TBLQ_lo"] <= ind["TBLQ"]).all() and (ind["TBLQ"] <= ind["TBLQ_hi"]).all()


def test_predict(small_fit):
    p = small_fit.predict(times=[1, 10, 100])
    assert list(p.columns) == ["ID", "MATRIX", "TIME", "IPRED", "IPRED_LO", "IPRED_HI", "PRED"]
    assert p.shape == (N_SUBJECTS * 3, 7)
    assert p.groupby("ID")["TIME"].apply(list).map(lambda t: t == [1.0, 10.0, 100.0]).all()
    assert (p["IPRED_LO"] <= p["IPRED"]).all() and (p["IPRED"] <= p["IPRED_HI"]).all()
    assert (p[["IPRED", "PRED"]] > 0).all().all()
    one = small_fit.predict(times=[5.0], ids=[3])
    assert one.shape == (1, 7) and one["ID"].iloc[0] == 3
    with pytest.raises(OptionError, match="99"):
        small_fit.predict(times=[1.0], ids=[99])
    with pytest.raises(OptionError, match="'BM'"):
        small_fit.predict(times=[1.0], matrix="BM")


def test_gof(small_fit):
    g = small_fit.gof()
    d = small_fit.data
    assert len(g) == d.n_obs
    assert {"ID", "TIME", "DV", "BLQ", "LLOQ", "MATRIX", "PRED", "IPRED", "IWRES"} <= set(g)
    assert g["BLQ"].any()
    np.testing.assert_array_equal(np.isnan(g["IWRES"].to_numpy()), g["BLQ"].to_numpy())
    assert (g[["PRED", "IPRED"]] > 0).all().all()


def test_shrinkage(small_fit):
    sh = small_fit.shrinkage()
    assert list(sh.index) == STRUCTURAL
    assert list(sh.columns) == ["omega", "sd_eta_mean", "shrinkage"]
    assert (sh["omega"] > 0).all() and (sh["shrinkage"] < 1).all()
    np.testing.assert_allclose(sh["shrinkage"], 1 - sh["sd_eta_mean"] / sh["omega"])


def test_convergence_table(small_fit):
    table = small_fit.convergence()
    assert list(table.columns) == ["criterion", "value", "threshold", "ok", "detail"]
    assert {"divergences", "r_hat max", "ess_bulk min", "ess_tail min", "E-BFMI min"} <= set(
        table["criterion"]
    )
    assert table["ok"].map(lambda v: isinstance(v, bool | np.bool_)).all()
    assert small_fit.converged == bool(table["ok"].all())
    ess = table.set_index("criterion").loc["ess_bulk min"]
    assert ess["threshold"] == 100 * FIT_SETTINGS["chains"]
    assert ess["ok"] == (ess["value"] >= ess["threshold"])


def test_check_convergence_warns_iff_not_converged(small_fit):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        table = small_fit.check_convergence(warn=True)
    conv = [w for w in rec if issubclass(w.category, ConvergenceWarning)]
    assert len(conv) == (0 if small_fit.converged else 1)
    for criterion in table.loc[~table["ok"], "criterion"]:
        assert criterion in str(conv[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        small_fit.check_convergence(warn=False)


def test_warn_if_failed_lists_failed_rows():
    table = pd.DataFrame(
        [
            ("divergences", 0, 0, True, "0 of 400 transitions"),
            ("r_hat max", 1.2345, 1.01, False, "omega_Tmax"),
            ("ess_bulk min", 12.5, 200, False, "mu_FB"),
        ],
        columns=["criterion", "value", "threshold", "ok", "detail"],
    )
    with pytest.warns(ConvergenceWarning, match="2 criterion") as rec:
        warn_if_failed(table, "my fit")
    msg = str(rec[0].message)
    assert msg.startswith("my fit")
    assert "r_hat max: 1.234" in msg and "omega_Tmax" in msg and "threshold 1.01" in msg
    assert "ess_bulk min" in msg and "mu_FB" in msg
    assert "divergences" not in msg
    assert issubclass(ConvergenceWarning, PKPDWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_failed(table[table["ok"]], "my fit")  # nothing failed: silent


def test_vpc(small_fit):
    table = small_fit.vpc(n_rep=50, seed=0)
    assert isinstance(table, pd.DataFrame) and len(table) >= 2
    assert {"TIME", "N", "OBS_Q50", "SIM_Q50_LO", "SIM_Q50_HI", "OBS_BLQ_FRAC"} <= set(table)
    assert table["N"].sum() == small_fit.data.n_obs
    assert table.attrs["n_rep"] == 50
    again = small_fit.vpc(n_rep=50, seed=0)
    pd.testing.assert_frame_equal(table, again)
    sim = small_fit.simulate_observations(20, seed=1)
    assert sim.shape == (20, small_fit.data.n_obs) and (sim > 0).all()


def test_plots_return_figures(small_fit):
    assert isinstance(small_fit.plot_gof(), Figure)
    assert isinstance(small_fit.plot_individual(ids=[1, 2]), Figure)
    assert isinstance(small_fit.plot_vpc(n_rep=50, seed=0), Figure)


# --- files --------------------------------------------------------------------------------

#: netCDF needs h5py (a dependency: h5netcdf no longer pulls it in), zarr needs zarr
SUFFIXES = [".nc", ".zarr"]
#: zarr 3 notes that consolidated metadata is not in its spec; harmless here
ZARR_NOTE = "ignore:Consolidated metadata:UserWarning"


def _assert_same_fit(a, b):
    pd.testing.assert_frame_equal(a.summary(), b.summary())
    pd.testing.assert_frame_equal(a.individual(), b.individual())
    assert repr(a) == repr(b)
    assert a.model.config() == b.model.config()
    _assert_model_data_equal(a.data, b.data, check_dtype=False)


@pytest.mark.filterwarnings(ZARR_NOTE)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_save_load_round_trip(small_fit, tmp_path, suffix):
    path = tmp_path / f"fit{suffix}"
    assert small_fit.save(path) == path
    loaded = load(path)
    _assert_same_fit(small_fit, loaded)
    assert loaded.info["loaded_from"] == str(path)
    assert loaded.info["random_seed"] == FIT_SETTINGS["random_seed"]
    pd.testing.assert_frame_equal(loaded.convergence(), small_fit.convergence())
    # saving over an existing file (also the loaded fit over its own file) leaves a valid one
    small_fit.save(path)
    loaded.save(path)
    again = load(path)
    _assert_same_fit(small_fit, again)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    assert leftovers == []


@pytest.mark.filterwarnings(ZARR_NOTE)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_save_keeps_previous_file(small_fit, tmp_path, monkeypatch, suffix):
    path = tmp_path / f"fit{suffix}"
    small_fit.save(path)

    def broken(self, target, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.DataTree, "to_zarr" if suffix == ".zarr" else "to_netcdf", broken)
    with pytest.raises(OSError, match="disk full"):
        small_fit.save(path)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(load(path).summary(), small_fit.summary())
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.filterwarnings(ZARR_NOTE)
def test_load_errors(tmp_path):
    with pytest.raises(OptionError, match="No saved fit"):
        load(tmp_path / "missing.nc")
    path = tmp_path / "other.zarr"
    xr.DataTree(xr.Dataset(attrs={"pkpd_model": "Nope"})).to_zarr(path)
    with pytest.raises(OptionError, match="known model"):
        load(path)


def test_individual_is_computed_once_per_posterior(small_fit):
    """individual() keeps its table per (prob, n_draws) and posterior: a repeated call
    returns an equal copy (a caller's edits do not leak), a new posterior recomputes."""
    import copy

    first = small_fit.individual(n_draws=200)
    first.loc[:, "Cmax"] = -1.0
    again = small_fit.individual(n_draws=200)
    assert (again["Cmax"] > 0).all()
    # the median Cmax is the median of the thinned Cmax_i draws (a hand computation)
    idx = small_fit._sample_index(200)
    cmax_i = np.asarray(small_fit.posterior["Cmax_i"]).reshape(-1, small_fit.data.n_subjects)
    np.testing.assert_allclose(again["Cmax_par"], np.median(cmax_i[idx], axis=0), rtol=1e-12)
    # the same fit with every Cmax_i doubled: a new datatree, a new table
    other = copy.copy(small_fit)
    tree = small_fit.datatree.copy(deep=True)
    tree["posterior"]["Cmax_i"] = tree["posterior"]["Cmax_i"] * 2.0
    other.datatree = tree
    np.testing.assert_allclose(other.individual(n_draws=200)["Cmax_par"], 2 * again["Cmax_par"])
