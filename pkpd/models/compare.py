r"""Model comparison by leave-one-subject-out cross-validation (PSIS-LOO).

For a hierarchical PK/PD model, predicting *new data* means predicting a new
subject, so the unit left out is the subject, not the single observation. With
:math:`y_i` all observations of subject :math:`i` (quantified values and BLQ records)
and :math:`S` posterior draws :math:`\theta^{(s)}`, the expected log pointwise
predictive density of the :math:`n` subjects is

.. math::

    \widehat{\mathrm{elpd}}_\mathrm{loo} = \sum_{i=1}^{n} \ln
        \frac{\sum_s w_i^{(s)}\, p(y_i \mid \theta^{(s)})}{\sum_s w_i^{(s)}},
    \qquad p(y_i \mid \theta^{(s)}) = \prod_j p(y_{ij} \mid \theta^{(s)}),

where :math:`w_i^{(s)}` are the Pareto-smoothed importance ratios
:math:`1/p(y_i \mid \theta^{(s)})` (PSIS; Vehtari, Gelman & Gabry 2017; Vehtari,
Simpson, Gelman, Yao & Gabry 2024). Each :math:`p(y_{ij} \mid \theta)` is a density
of the DV on its natural scale (or the BLQ probability), so models with different
residual error models (proportional on ln DV, additive on DV) are compared on the
same scale. ``se`` is :math:`\sqrt{n}` times the SD of the subjects' terms,
:math:`p_\mathrm{loo}` the effective number of parameters and ``elpd_diff`` / ``dse``
the difference to the best model and its standard error,
:math:`\sqrt{n}\,\mathrm{SD}_i(\widehat{\mathrm{elpd}}_{A,i} -
\widehat{\mathrm{elpd}}_{B,i})` over the paired subject terms with the sample SD
(Vehtari, Gelman & Gabry 2017, eq. 24, as R's loo; ArviZ 1.3 divides by
:math:`n`). The PSIS and comparison arithmetic is otherwise ArviZ's
(:func:`arviz_stats.loo`, :func:`arviz_stats.compare`); pkpd supplies the
per-subject log-likelihood.

The Pareto shape :math:`\hat k` of each subject's importance ratios tells whether
its estimate is reliable: :math:`\hat k \le 0.7` (and, for :math:`S` draws,
:math:`\le 1 - 1/\log_{10} S`) is good; above 0.7 the estimate of that subject's
term is unreliable (Vehtari et al. 2024, sec. 3). Those subjects are named in the
table and in a :class:`~pkpd.PKPDWarning`.

The likelihood here is *conditional* on each subject's own random effects
:math:`\eta_i^{(s)}`. With rich sampling a subject's data determine its
:math:`\eta_i`, so removing the subject moves the posterior of :math:`\eta_i` back
to the population distribution and :math:`\hat k` is often above 0.7 for many
subjects. The remedy is the *marginal* (integrated) likelihood
:math:`p(y_i \mid \mu, \Omega, \sigma) = \int p(y_i \mid \eta)\,
N(\eta \mid 0, \Omega)\, d\eta` (Merkle, Furr & Rabe-Hesketh 2019), not
computed here; until then confirm a comparison that rests on subjects with high
:math:`\hat k` by exact refits without them or by K-fold cross-validation over
subjects.

References
----------
Vehtari A, Gelman A, Gabry J. Practical Bayesian model evaluation using
leave-one-out cross-validation and WAIC. *Stat Comput* 2017;27:1413-1432.

Vehtari A, Simpson D, Gelman A, Yao Y, Gabry J. Pareto smoothed importance
sampling. *J Mach Learn Res* 2024;25(72):1-58.

Merkle EC, Furr D, Rabe-Hesketh S. Bayesian comparison of latent variable models:
conditional versus marginal likelihoods. *Psychometrika* 2019;84:802-829.

Yao Y, Vehtari A, Simpson D, Gelman A. Using stacking to average Bayesian predictive
distributions. *Bayesian Anal* 2018;13:917-1007 (the ``weight`` column).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from pkpd.errors import OptionError, PKPDWarning

__all__ = ["K_THRESHOLD", "compare", "loo"]

#: Pareto k above which a subject's PSIS estimate is unreliable (Vehtari et al. 2024)
K_THRESHOLD = 0.7

_BY = ("subject", "observation")
_ARVIZ_K_WARNING = "Estimated shape parameter of Pareto distribution"


def loo(fit, by: str = "subject", *, warn: bool = True):
    r"""PSIS-LOO of one fit, leaving out one subject (or one observation).

    Parameters
    ----------
    fit
        A :class:`~pkpd.models.PopulationFit` or :class:`~pkpd.models.EndpointFit`
        (anything with ``log_likelihood(by=)`` and ``posterior``). A
        :class:`~pkpd.models.JointFit` is not supported yet: compare its blocks'
        standalone fits.
    by
        ``"subject"`` (default) or ``"observation"``.
    warn
        Warn (:class:`~pkpd.PKPDWarning`) naming the subjects with
        :math:`\hat k > 0.7`.

    Returns
    -------
    ELPDDataLOO
        ArviZ's result (:class:`arviz_stats.utils.ELPDDataLOO`) with pointwise
        ``elpd_i`` and ``pareto_k`` over the subjects (or observations): ``elpd`` is
        :math:`\widehat{\mathrm{elpd}}_\mathrm{loo}` (see the module docstring),
        ``se`` its standard error, ``p`` the effective number of parameters.
    """
    _check_fit(fit, "fit", by)
    result = _loo(fit, fit.log_likelihood(by=by))
    if warn:
        _warn_high_k(result, by, "")
    return result


def compare(*fits, names: Sequence[str] | None = None, by: str = "subject") -> pd.DataFrame:
    r"""Compare fits of the same data by PSIS-LOO (leave one subject out by default).

    .. math::

        \widehat{\mathrm{elpd}}_\mathrm{loo} = \sum_i \ln \frac{\sum_s w_i^{(s)}
            p(y_i \mid \theta^{(s)})}{\sum_s w_i^{(s)}}

    over subjects :math:`i` with the PSIS weights :math:`w_i^{(s)}` (module
    docstring; Vehtari, Gelman & Gabry 2017). Higher is better; a difference is
    clear when ``elpd_diff`` is several times ``dse`` (and, with fewer than ~100
    subjects or :math:`|\mathrm{elpd\_diff}| < 4`, to be read with care; Sivula et al.
    2022 via ArviZ).

    Parameters
    ----------
    *fits
        Two or more :class:`~pkpd.models.PopulationFit` (or two or more
        :class:`~pkpd.models.EndpointFit`) fitted to the same observations (same
        subjects, records, exclusions, units). :class:`~pkpd.models.JointFit` is
        not supported yet.
    names
        Row labels (default: the model names, numbered when repeated).
    by
        ``"subject"`` (leave one subject out) or ``"observation"``.

    Returns
    -------
    DataFrame
        Best model first, indexed by name, with columns ``rank``, ``elpd_loo``,
        ``se``, ``p_loo``, ``elpd_diff``, ``dse``, ``weight`` (stacking weights, Yao
        et al. 2018), ``k_max``, ``n_k_high`` (number of subjects with
        :math:`\hat k > 0.7`) and ``k_high`` (their IDs; ``(ID, TIME)`` pairs with
        ``by="observation"``).

    Raises
    ------
    OptionError
        Fewer than two fits, a fit type without a log-likelihood, duplicate or
        miscounted names, or fits whose data differ (LOO compares predictive
        densities of the same observations).

    Warns
    -----
    PKPDWarning
        A model with subjects of :math:`\hat k > 0.7` (named).

    References
    ----------
    Vehtari A, Gelman A, Gabry J. *Stat Comput* 2017;27:1413-1432. Vehtari A,
    Simpson D, Gelman A, Yao Y, Gabry J. *J Mach Learn Res* 2024;25(72):1-58.
    """
    import arviz_stats as azs

    if len(fits) == 1 and isinstance(fits[0], list | tuple):
        fits = tuple(fits[0])
    if len(fits) < 2:
        raise OptionError(f"compare needs at least two fits to compare, got {len(fits)}.")
    labels = _names(fits, names)
    for label, fit in zip(labels, fits, strict=True):
        _check_fit(fit, label, by)
    keys = [_data_key(fit) for fit in fits]
    for label, key, fit in zip(labels[1:], keys[1:], fits[1:], strict=True):
        _same_data(labels[0], keys[0], label, key, type(fits[0]), type(fit))
    results = {}
    for label, key, fit in zip(labels, keys, fits, strict=True):
        ll = _align(fit.log_likelihood(by=by), key, keys[0], by)
        results[label] = _loo(fit, ll)
        _warn_high_k(results[label], by, label)
    table = azs.compare(results, round_to="none")
    table = table.rename(columns={"elpd": "elpd_loo", "p": "p_loo"})
    # dse with the sample variance of the paired differences (Vehtari, Gelman & Gabry
    # 2017, eq. 24; R loo's loo_compare); arviz_stats 1.3 divides by n, not n - 1
    best = np.ravel(results[table.index[0]].elpd_i)
    for label in table.index[1:]:
        diff = np.ravel(results[label].elpd_i) - best
        table.loc[label, "dse"] = math.sqrt(len(diff) * np.var(diff, ddof=1))
    high = {label: _high_k(res) for label, res in results.items()}
    table["k_max"] = [float(results[label].pareto_k.max()) for label in table.index]
    table["n_k_high"] = [len(high[label]) for label in table.index]
    table["k_high"] = [high[label] for label in table.index]
    cols = ["rank", "elpd_loo", "se", "p_loo", "elpd_diff", "dse", "weight"]
    table = table[[*cols, "k_max", "n_k_high", "k_high"]]
    table.index.name = "model"
    table.attrs["by"] = by
    return table


# -- helpers ---------------------------------------------------------------------------
def _check_fit(fit, label: str, by: str) -> None:
    if by not in _BY:
        raise OptionError(f"by must be 'subject' or 'observation', got {by!r}.")
    if not callable(getattr(fit, "log_likelihood", None)) or not hasattr(fit, "posterior"):
        raise OptionError(
            f"{label} ({type(fit).__name__}) has no pointwise log-likelihood, so LOO cannot "
            "score it. Pass PopulationFit or EndpointFit objects (a JointFit is not supported "
            "yet: compare the standalone fits of its blocks)."
        )


def _names(fits, names) -> list[str]:
    if names is None:
        base = [getattr(getattr(f, "model", None), "model_name", type(f).__name__) for f in fits]
        return [f"{b}_{k + 1}" if base.count(b) > 1 else b for k, b in enumerate(base)]
    names = [str(n) for n in names]
    if len(names) != len(fits):
        raise OptionError(f"names= has {len(names)} entries for {len(fits)} fits; give one each.")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise OptionError(f"names= repeats {dup}; every fit needs its own name.")
    return names


def _data_key(fit) -> pd.DataFrame:
    """The data a fit's log-likelihood scores, in a canonical order (``ID`` first)."""
    data = fit.data
    if hasattr(data, "observations"):
        frame = data.observations()
        frame["_pos"] = np.arange(len(frame))
        cols = ["ID", "MATRIX", "TIME", "DV", "LLOQ"]
    else:
        frame = pd.DataFrame({"ID": data.subjects})
        for name, values in data.arrays.items():
            values = np.asarray(values)
            if values.ndim == 1 and len(values) == data.n:
                frame[name] = values
        frame["_pos"] = np.arange(len(frame))
        cols = ["ID"]
    if "MATRIX" in frame:
        frame["MATRIX"] = frame["MATRIX"].astype(str)
    return frame.sort_values(cols, kind="mergesort").reset_index(drop=True)


def _same_data(ref_label, ref, label, key, ref_type, fit_type) -> None:
    why = "LOO compares predictive densities of the same observations"
    if ("TIME" in ref.columns) != ("TIME" in key.columns):
        raise OptionError(
            f"{label!r} ({fit_type.__name__}) and {ref_label!r} ({ref_type.__name__}) score "
            f"different kinds of data (longitudinal observations vs one outcome per subject); "
            f"{why}, so they cannot be compared."
        )
    ids_ref, ids = {_plain(v) for v in ref["ID"]}, {_plain(v) for v in key["ID"]}
    if ids_ref != ids:
        extra = sorted(ids - ids_ref, key=str)[:5]
        missing = sorted(ids_ref - ids, key=str)[:5]
        raise OptionError(
            f"{label!r} was fitted to other subjects than {ref_label!r} (only in "
            f"{label!r}: {extra}; only in {ref_label!r}: {missing}); {why}, so they cannot "
            "be compared. Fit every model to the same data (same records and exclusions)."
        )
    cols = [c for c in ref.columns if c != "_pos"]
    if list(key.columns) != list(ref.columns) or len(key) != len(ref):
        raise OptionError(
            f"{label!r} scores {len(key)} records and {ref_label!r} {len(ref)} (columns "
            f"{cols}); {why}, so they cannot be compared. Fit every model to the same data "
            "(same records and exclusions)."
        )
    for col in cols:
        a, b = ref[col].to_numpy(), key[col].to_numpy()
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            a, b = a.astype(float), b.astype(float)
            same = (a == b) | (np.isnan(a) & np.isnan(b))
        else:
            same = a == b
        if not np.all(same):
            k = int(np.flatnonzero(~np.asarray(same))[0])
            where = f"subject {_plain(ref['ID'].iloc[k])!r}"
            if "TIME" in ref.columns:
                where += f", time {ref['TIME'].iloc[k]:g}"
            raise OptionError(
                f"{label!r} and {ref_label!r} differ in {col} at {where} ({_plain(b[k])!r} vs "
                f"{_plain(a[k])!r}); {why} (on the same DV scale and units), so they cannot be "
                "compared. Fit every model to the same data."
            )


def _align(ll: xr.DataArray, key: pd.DataFrame, ref: pd.DataFrame, by: str) -> xr.DataArray:
    """``ll`` in the reference fit's order (subjects, or observations by position)."""
    if by == "subject":
        order = pd.unique(ref.sort_values("_pos")["ID"])
        have = set(ll["subject"].to_numpy())
        present = [s for s in order if s in have]
        return ll.sel(subject=present)
    obs_dim = "obs" if "obs" in ll.dims else "subject"
    # row r of the canonical order is observation key._pos[r] of this fit and
    # ref._pos[r] of the reference fit
    positions = np.empty(len(ref), dtype=int)
    positions[ref["_pos"].to_numpy()] = key["_pos"].to_numpy()
    out = ll.isel({obs_dim: positions})
    return out.assign_coords({obs_dim: np.arange(len(ref))})


def _loo(fit, ll: xr.DataArray):
    """``arviz_stats.loo`` of a pointwise log-likelihood (relative efficiency from the
    posterior, as ArviZ does, ignoring variables whose ESS is undefined)."""
    import arviz_stats as azs

    post = fit.posterior
    tree = xr.DataTree.from_dict(
        {"posterior": post, "log_likelihood": xr.Dataset({ll.name or "DV": ll})}
    )
    n = post.sizes["chain"] * post.sizes["draw"]
    reff = 1.0
    if post.sizes["chain"] > 1:
        import arviz as az

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ess = az.ess(post, method="mean")
        values = np.concatenate([np.ravel(ess[v].to_numpy()) for v in ess.data_vars])
        values = values[np.isfinite(values)]
        reff = float(values.mean() / n) if len(values) else 1.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_ARVIZ_K_WARNING)
        return azs.loo(tree, pointwise=True, var_name=ll.name or "DV", reff=reff)


def _high_k(result) -> list:
    """Subjects (IDs) or observations (``(ID, TIME)``) with Pareto k above 0.7."""
    k = result.pareto_k
    bad = np.flatnonzero(np.asarray(k) > K_THRESHOLD)
    if "TIME" in k.coords:
        ids, times = k["ID"].to_numpy(), k["TIME"].to_numpy()
        return [(_plain(ids[i]), float(times[i])) for i in bad]
    labels = k[k.dims[0]].to_numpy()
    return [_plain(labels[i]) for i in bad]


def _warn_high_k(result, by: str, label: str) -> None:
    high = _high_k(result)
    if not high:
        return
    what = "subject(s)" if by == "subject" else "observation(s)"
    shown = high[:10] + (["..."] if len(high) > 10 else [])
    model = f"{label}: " if label else ""
    warnings.warn(
        f"{model}Pareto k > {K_THRESHOLD} for {len(high)} {what} {shown}: their "
        "leave-one-out estimates are unreliable (influential subjects; Vehtari et al. "
        "2024). Check those subjects, and confirm a comparison that hinges on them by "
        "refitting without them (exact LOO) or by K-fold cross-validation over subjects.",
        PKPDWarning,
        stacklevel=3,
    )


def _plain(value):
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value
