r"""The base of every subject-level endpoint model: response, time to event, safety.

A population model (:class:`~pkpd.models.PopulationModel`) describes longitudinal
observations; an *endpoint model* describes one outcome per subject (best overall
response, an event time, a CRS grade, a DLT) as a regression on subject-level
predictors: exposures (log Cmax, log AUC0-28d, selinexor AUC) and covariates.

Every endpoint model can be fitted alone (predictors are columns of a subject
table) or inside :class:`~pkpd.models.JointModel`, where the exposure predictors
are the PyTensor expressions of the individual exposures of a kinetic model, so the
endpoint sees their full posterior uncertainty. One method,
:meth:`EndpointModel.add_to_model`, writes the likelihood for both uses.

Linear predictor of subject :math:`i` with predictors :math:`k`:

.. math::

    \eta_i = \sum_k \beta_k\, x_{ik}, \qquad
    x_{ik} = \log_2(e_{ik} / e_{k,\mathrm{ref}}) \;\text{(exposure, ``log2``)}, \;
    \ln(e_{ik}/e_{k,\mathrm{ref}}) \;\text{(``log``)}, \;
    e_{ik} - e_{k,\mathrm{ref}} \;\text{(``identity``)}, \;
    [c_i = \ell] \;\text{(``categorical``)}

so :math:`e^{\beta_k}` of a ``log2`` predictor is the odds ratio (logistic, ordinal)
or the hazard ratio (proportional hazards) per 2-fold exposure, the scale of the
exposure-response literature (e.g. JULIET: DOR hazard ratio 0.79 per 2-fold Cmax).
"""

from __future__ import annotations

import json
import math
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pkpd._version import __version__
from pkpd.errors import ColumnError, DataError, OptionError
from pkpd.io import atomic_path, read_saved_tree
from pkpd.models._diagnostics import ConvergenceChecks
from pkpd.models._priors import Prior

__all__ = ["EndpointData", "EndpointFit", "EndpointModel", "Predictor", "load_endpoint"]

TRANSFORMS = ("log2", "log", "identity", "categorical")
LN2 = math.log(2.0)

_ENDPOINTS: dict[str, type] = {}


def register_endpoint(cls):
    """Make an endpoint model class loadable by name (class decorator)."""
    _ENDPOINTS[cls.model_name] = cls
    return cls


@dataclass(frozen=True)
class Predictor:
    """A subject-level predictor of an endpoint.

    Parameters
    ----------
    column
        Column of the subject table (standalone fit), or the name of an exposure of
        the kinetic model inside a :class:`~pkpd.models.JointModel` (``"Cmax"``,
        ``"AUC0_28"`` ...).
    transform
        ``"log2"`` (default; effect per 2-fold change), ``"log"``, ``"identity"`` or
        ``"categorical"`` (one effect per non-reference level).
    reference
        Centring value (exposures; default: the median of the column) or reference
        level (categorical; default: the most frequent level).
    prior
        Prior of each coefficient (default ``normal(0, 1)``: an odds/hazard ratio
        within 0.14-7 per unit of the transformed predictor with 95 % probability).
    """

    column: str
    transform: str = "log2"
    reference: object = None
    prior: Prior = field(
        default_factory=lambda: Prior.normal(0.0, 1.0, "weakly informative: ratio 0.14-7")
    )

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise OptionError(
                f"Predictor {self.column!r}: transform must be one of {TRANSFORMS}, "
                f"got {self.transform!r}."
            )

    @classmethod
    def coerce(cls, value) -> Predictor:
        """Accept a Predictor, a dict of its fields, ``"Cmax"`` (log2) or
        ``"log(Cmax)"`` / ``"log2(Cmax)"`` / ``"C(ARM)"`` (categorical)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            d = dict(value)
            if isinstance(d.get("prior"), Mapping):
                d["prior"] = Prior.from_dict(d["prior"])
            return cls(**d)
        if isinstance(value, str):
            text = value.strip()
            for prefix, transform in (
                ("log2(", "log2"),
                ("log(", "log"),
                ("C(", "categorical"),
                ("I(", "identity"),
            ):
                if text.startswith(prefix) and text.endswith(")"):
                    return cls(text[len(prefix) : -1].strip(), transform)
            return cls(text)
        raise OptionError(
            f"Cannot read predictor {value!r}: pass Predictor(column, transform), a dict, "
            "or a string such as 'Cmax', 'log(AUC0_28)' or 'C(ARM)'."
        )

    @property
    def name(self) -> str:
        return f"b_{self.column}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prior"] = self.prior.to_dict()
        ref = self.reference
        d["reference"] = ref.item() if hasattr(ref, "item") else ref
        return d


@dataclass
class EndpointData:
    """One endpoint's prepared arrays, one entry per subject with the endpoint.

    Attributes
    ----------
    subjects
        Subject IDs (in order).
    arrays
        Outcome arrays of the model (e.g. ``time``, ``event``; ``category``).
    predictors
        Transformed predictor columns ``{Predictor.name: (n,) float}`` and, for
        categorical predictors, ``{name: (n, n_levels - 1)}`` indicator matrices.
    levels
        Per categorical predictor: its levels, reference first.
    references
        Per non-categorical predictor: the centring value used.
    table
        The validated subject table (for reports and predictive checks).
    """

    subjects: np.ndarray
    arrays: dict
    predictors: dict = field(default_factory=dict)
    levels: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)
    table: pd.DataFrame | None = None

    @property
    def n(self) -> int:
        return len(self.subjects)


class EndpointModel:
    """Base class of subject-level endpoint models.

    A subclass states its mathematics: :meth:`validate` (outcome columns),
    :meth:`outcome_arrays`, :meth:`default_priors` and :meth:`likelihood` (which
    receives the linear predictor and creates the observed variable). The base gives
    predictors, fitting, summaries, predictive checks and save/load.

    Parameters
    ----------
    predictors
        :class:`Predictor` objects or strings (``"Cmax"``, ``"log(AUC0_28)"``,
        ``"C(ARM)"``).
    priors
        Overrides of the model's own priors (intercepts, shape, cut points ...).
    name
        Prefix of the model's variables (so several endpoints can share one joint
        model: ``"orr_b_Cmax"``, ``"pfs_shape"``); defaults to the class's.
    columns
        Role -> column mapping of the subject table (``id`` and outcome roles).
    """

    #: name used in saved files (subclasses override)
    model_name = "EndpointModel"
    #: default variable prefix
    default_name = "endpoint"
    #: role -> default column name (subclasses extend)
    default_columns: Mapping[str, str] = {"id": "ID"}
    #: NUTS target acceptance
    default_target_accept = 0.8
    #: fit class returned by :func:`load_endpoint` and joint-model blocks (None:
    #: :class:`EndpointFit`); models with extra fit methods set their subclass
    fit_class = None

    def __init__(
        self,
        *,
        predictors: Sequence = (),
        priors: Mapping[str, Prior] | None = None,
        name: str | None = None,
        columns: Mapping[str, str] | None = None,
    ):
        self.predictors = [Predictor.coerce(p) for p in predictors]
        seen = [p.column for p in self.predictors]
        dup = sorted({c for c in seen if seen.count(c) > 1})
        if dup:
            raise OptionError(f"Predictor(s) {dup} given more than once.")
        self.priors = dict(self.default_priors())
        for key, prior in dict(priors or {}).items():
            if key not in self.priors:
                raise OptionError(
                    f"No parameter {key!r} to set a prior on; known: {sorted(self.priors)}."
                )
            self.priors[key] = prior if isinstance(prior, Prior) else Prior.from_dict(prior)
        self.name = name or self.default_name
        unknown = sorted(set(columns or {}) - set(self.default_columns))
        if unknown:
            raise OptionError(
                f"Unknown column role(s) {unknown}; known: {sorted(self.default_columns)}."
            )
        self.columns = {**self.default_columns, **dict(columns or {})}

    # -- what a subclass provides ---------------------------------------------------
    def default_priors(self) -> dict[str, Prior]:
        raise NotImplementedError

    def validate(self, table: pd.DataFrame) -> None:
        """Check the outcome columns; raise :class:`DataError` naming subject and column."""

    def outcome_arrays(self, table: pd.DataFrame) -> dict:
        """Outcome arrays of the prepared data."""
        raise NotImplementedError

    def likelihood(self, ed: EndpointData, eta, index) -> None:
        """Create the model's parameters and observed variable (inside a model).

        ``eta`` is the linear predictor (PyTensor, one entry per row of ``ed``);
        ``index`` the rows of ``ed`` to use (all, in a standalone fit). Variable
        names must go through :meth:`var`.
        """
        raise NotImplementedError

    def summary_rows(self, posterior: xr.Dataset, ed: EndpointData) -> list:
        """Extra natural-scale ``(name, kind, unit, DataArray)`` summary rows."""
        return []

    #: what ``exp(beta)`` of a predictor is ("odds ratio", "hazard ratio", ...)
    effect_scale = "ratio"

    # -- helpers for subclasses -------------------------------------------------------
    def var(self, name: str) -> str:
        """The model variable name of ``name`` with this endpoint's prefix."""
        return f"{self.name}_{name}"

    def col(self, role: str) -> str:
        return self.columns[role]

    # -- data ---------------------------------------------------------------------------
    def subject_table(self, data: pd.DataFrame) -> pd.DataFrame:
        """One row per subject: checks the ID column and that IDs are unique."""
        if not isinstance(data, pd.DataFrame):
            raise OptionError(
                f"{self.model_name} takes a pandas DataFrame with one row per subject, "
                f"got {type(data).__name__}."
            )
        idc = self.col("id")
        if idc not in data.columns:
            raise ColumnError(
                f"{self.model_name}: no subject column {idc!r}; name it with "
                f"columns={{'id': ...}}. Columns: {list(data.columns)}."
            )
        dup = data[idc][data[idc].duplicated()].unique()
        if len(dup):
            raise DataError(
                f"{self.model_name}: subject(s) {list(dup[:5])} appear on more than one row "
                f"of column {idc!r}; an endpoint table has one row per subject."
            )
        return data.reset_index(drop=True)

    def prepare(self, data, *, exposures: Sequence[str] = ()) -> EndpointData:
        """Validate a subject table and build the arrays.

        ``exposures`` names predictors supplied by a kinetic model (joint fit); their
        columns need not be in the table, and they are not transformed here.
        """
        if isinstance(data, EndpointData):
            return data
        table = self.subject_table(data)
        self.validate(table)
        ed = EndpointData(
            subjects=table[self.col("id")].to_numpy(),
            arrays=self.outcome_arrays(table),
            table=table,
        )
        for p in self.predictors:
            if p.column in exposures:
                continue
            if p.column not in table.columns:
                raise ColumnError(
                    f"{self.model_name}: predictor column {p.column!r} is not in the data; "
                    f"columns: {list(table.columns)}."
                )
            values = table[p.column]
            missing = values.isna().to_numpy()
            if missing.any():
                raise DataError(
                    f"{self.model_name}: predictor {p.column!r} is missing for subject(s) "
                    f"{list(ed.subjects[missing][:5])}; impute it or drop those subjects."
                )
            if p.transform == "categorical":
                levels = list(pd.unique(values))
                ref = p.reference if p.reference is not None else values.value_counts().idxmax()
                if ref not in levels:
                    raise OptionError(
                        f"Reference level {ref!r} of {p.column!r} is not in the data ({levels})."
                    )
                levels = [ref, *sorted((lv for lv in levels if lv != ref), key=str)]
                if len(levels) < 2:
                    raise OptionError(
                        f"{self.model_name}: predictor {p.column!r} has one level; remove it."
                    )
                codes = pd.Index(levels).get_indexer(values)
                ed.predictors[p.name] = (codes[:, None] == np.arange(1, len(levels))).astype(float)
                ed.levels[p.name] = levels
            else:
                x = values.to_numpy(dtype=float)
                if p.transform in ("log", "log2") and np.any(x <= 0):
                    bad = ed.subjects[x <= 0]
                    raise DataError(
                        f"{self.model_name}: predictor {p.column!r} must be > 0 for a "
                        f"{p.transform} effect; subject(s) {list(bad[:5])} have {x[x <= 0][:5]}."
                    )
                ref = float(np.median(x) if p.reference is None else p.reference)
                ed.references[p.name] = ref
                ed.predictors[p.name] = _transform(x, ref, p.transform, np)
        return ed

    # -- the model ---------------------------------------------------------------------
    def linear_predictor(self, ed: EndpointData, exposures: Mapping | None = None, index=None):
        """:math:`\\eta = \\sum_k \\beta_k x_k` (PyTensor), creating the coefficients.

        ``exposures``: ``{column: tensor}`` of untransformed exposures (rows of
        ``ed``) for predictors supplied by a kinetic model; centred on
        ``Predictor.reference`` (which a joint model sets).
        """
        import pymc as pm
        import pytensor.tensor as pt

        model = pm.modelcontext(None)
        exposures = dict(exposures or {})
        eta = pt.zeros(ed.n)
        for p in self.predictors:
            if p.column in exposures:
                ref = ed.references.get(p.name, p.reference)
                if ref is None:
                    raise OptionError(
                        f"Exposure predictor {p.column!r} needs a reference (centring) value."
                    )
                ed.references[p.name] = float(ref)
                x = _transform(exposures[p.column], float(ref), p.transform, pt)
                beta = p.prior.create(self.var(p.name))
                eta = eta + beta * x
            elif p.transform == "categorical":
                dim = f"{self.var(p.column)}_level"
                if dim not in model.coords:
                    model.add_coord(dim, [str(v) for v in ed.levels[p.name][1:]])
                beta = p.prior.create(self.var(p.name), dims=dim)
                eta = eta + pt.dot(ed.predictors[p.name], beta)
            else:
                beta = p.prior.create(self.var(p.name))
                eta = eta + beta * ed.predictors[p.name]
        return eta

    def add_to_model(self, ed: EndpointData, exposures: Mapping | None = None) -> None:
        """Add this endpoint's parameters and likelihood to the current PyMC model.

        Creates the coord ``<name>_subject`` (the subjects with this endpoint) when the
        model does not have it yet; the observed variable uses it as its dim.
        """
        import pymc as pm

        model = pm.modelcontext(None)
        if self.var("subject") not in model.coords:
            model.add_coord(self.var("subject"), [str(s) for s in ed.subjects])
        eta = self.linear_predictor(ed, exposures)
        self.likelihood(ed, eta, np.arange(ed.n))

    def build_model(self, data):
        """The PyMC model of a subject table (coord ``<name>_subject``)."""
        import pymc as pm

        ed = self.prepare(data)
        with pm.Model() as model:
            self.add_to_model(ed)
        return model

    def fit(
        self,
        data,
        *,
        draws: int | None = None,
        tune: int = 1000,
        chains: int = 4,
        random_seed: int | None = None,
        sampler: str = "nutpie",
        cores: int | None = None,
        target_accept: float | None = None,
        progress: bool = False,
        check: bool = True,
        budget=None,
        **sampler_kwargs,
    ) -> EndpointFit:
        """Sample the posterior; returns an :class:`EndpointFit` (arguments as
        :meth:`PopulationModel.fit <pkpd.models.PopulationModel.fit>`)."""
        from pkpd.models._sampling import check_sampler, sample_with_info

        t0 = _time.perf_counter()
        check_sampler(sampler)
        ed = self.prepare(data)
        dt, info = sample_with_info(
            self.build_model(ed),
            sampler=sampler,
            draws=draws,
            tune=tune,
            chains=chains,
            random_seed=random_seed,
            cores=cores,
            target_accept=target_accept or self.default_target_accept,
            progress=progress,
            started=t0,
            budget=budget,
            **sampler_kwargs,
        )
        fit = EndpointFit(self, ed, dt, info)
        if check:
            fit.check_convergence(warn=True)
        return fit

    # -- simulation ----------------------------------------------------------------------
    def simulate_outcomes(self, eta: np.ndarray, params: Mapping, rng, table: pd.DataFrame):
        """Outcome columns ``{column: values}`` for linear predictors ``eta`` (numpy)
        and true parameter values ``params`` (names as in :meth:`default_priors`, on
        the natural scale of the model's own parameters). Subclasses implement it."""
        raise NotImplementedError(f"{self.model_name} cannot simulate outcomes yet.")

    def simulate(
        self,
        table: pd.DataFrame,
        params: Mapping,
        *,
        seed=None,
    ) -> pd.DataFrame:
        r"""Simulate the endpoint for the subjects of ``table`` (virtual trials).

        ``table`` has the ID column and every predictor column (exposures on the
        natural scale, categorical levels); ``params`` holds the true coefficients
        ``b_<column>`` (per transformed unit, e.g. log odds per 2-fold exposure; for a
        categorical predictor ``{level: effect}``) and the model's own parameters.
        Predictors are centred as in a fit (``Predictor.reference`` or the median).
        Returns ``table`` with the outcome columns added.
        """
        rng = np.random.default_rng(seed)
        out = table.reset_index(drop=True).copy()
        eta = np.zeros(len(out))
        for p in self.predictors:
            if p.column not in out.columns:
                raise ColumnError(
                    f"{self.model_name}.simulate: predictor column {p.column!r} missing."
                )
            if p.name not in params:
                raise OptionError(
                    f"{self.model_name}.simulate: give the true effect {p.name!r} in params."
                )
            value = params[p.name]
            if p.transform == "categorical":
                eta += out[p.column].map(lambda lv, v=value: float(v.get(lv, 0.0))).to_numpy()
            else:
                x = out[p.column].to_numpy(float)
                ref = float(np.median(x) if p.reference is None else p.reference)
                eta += float(value) * _transform(x, ref, p.transform, np)
        for name, values in self.simulate_outcomes(eta, params, rng, out).items():
            out[name] = values
        return out

    # -- config ------------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "predictors": [p.to_dict() for p in self.predictors],
            "priors": {k: v.to_dict() for k, v in self.priors.items()},
            "name": self.name,
            "columns": {k: v for k, v in self.columns.items() if self.default_columns[k] != v},
        }

    @classmethod
    def from_config(cls, config: Mapping) -> EndpointModel:
        config = dict(config)
        config["priors"] = {k: Prior.from_dict(v) for k, v in config["priors"].items()}
        return cls(**config)

    def prior_table(self) -> pd.DataFrame:
        rows = [
            {"parameter": self.var(k), "prior": v.describe(), "source": v.source}
            for k, v in self.priors.items()
        ]
        rows += [
            {"parameter": self.var(p.name), "prior": p.prior.describe(), "source": p.prior.source}
            for p in self.predictors
        ]
        return pd.DataFrame(rows)


def _transform(x, ref: float, transform: str, xp):
    if transform == "log2":
        return xp.log(x / ref) / LN2
    if transform == "log":
        return xp.log(x / ref)
    return x - ref


class EndpointFit(ConvergenceChecks):
    """A fitted endpoint model: posterior, summary with effect sizes, diagnostics.

    Attributes
    ----------
    model, data, datatree, info
        The model, its :class:`EndpointData`, the ArviZ DataTree and sampler info.
    """

    def __init__(self, model: EndpointModel, data: EndpointData, datatree, info: dict):
        self.model = model
        self.data = data
        self.datatree = datatree
        self.info = dict(info)

    def __repr__(self) -> str:
        post = self.datatree["posterior"]
        return (
            f"<{self.model.model_name} fit: {self.data.n} subjects, {post.sizes['chain']} "
            f"chains x {post.sizes['draw']} draws>"
        )

    @property
    def posterior(self) -> xr.Dataset:
        return self.datatree["posterior"].to_dataset()

    def _rows(self) -> list:
        post = self.posterior
        m = self.model
        rows = []
        for p in m.predictors:
            da = post[m.var(p.name)]
            if p.transform == "categorical":
                dim = f"{m.var(p.column)}_level"
                ref = self.data.levels[p.name][0]
                for k, level in enumerate(da[dim].values):
                    rows.append(
                        (
                            f"{m.var(p.name)}[{level}]",
                            "effect",
                            f"{m.effect_scale} vs {ref}",
                            np.exp(da.isel({dim: k}, drop=True)),
                        )
                    )
            else:
                per = {"log2": "per 2-fold", "log": "per e-fold", "identity": "per unit"}
                rows.append(
                    (
                        m.var(p.name),
                        "effect",
                        f"{m.effect_scale} {per[p.transform]} {p.column}",
                        np.exp(da),
                    )
                )
        rows.extend(m.summary_rows(post, self.data))
        return rows

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Effects on the natural scale (odds / hazard ratios) and the model's own
        parameters, with ``mean, sd, median``, the ``prob`` interval, ESS and r_hat."""
        return summary_frame(self._rows(), prob)

    def predictive(self, kind: str = "posterior", *, draws: int = 500, random_seed=None):
        """Prior (``kind="prior"``) or posterior predictive draws of the outcome
        (ArviZ DataTree with ``prior_predictive`` / ``posterior_predictive``)."""
        import pymc as pm

        model = self.model.build_model(self.data)
        with model:
            if kind == "prior":
                return pm.sample_prior_predictive(draws=draws, random_seed=random_seed)
            if kind == "posterior":
                return pm.sample_posterior_predictive(
                    self.datatree, random_seed=random_seed, progressbar=False
                )
        raise OptionError(f"kind must be 'prior' or 'posterior', got {kind!r}.")

    def log_likelihood(self, by: str = "subject") -> xr.DataArray:
        r"""Log-likelihood of each subject's outcome for every posterior draw.

        :math:`\ell_i^{(s)} = \ln p(y_i \mid \theta^{(s)})`, one outcome per subject
        (so ``"observation"`` is the same as ``"subject"``), evaluated by PyMC
        (:func:`pymc.compute_log_likelihood`) on the rebuilt model and summed over the
        model's observed variables. Dims ``chain, draw, subject``; for
        :func:`pkpd.compare` and :meth:`loo` (Vehtari, Gelman & Gabry, *Stat Comput*
        2017;27:1413-1432).
        """
        import pymc as pm

        if by not in ("subject", "observation"):
            raise OptionError(f"by must be 'subject' or 'observation', got {by!r}.")
        model = self.model.build_model(self.data)
        ll = pm.compute_log_likelihood(
            self.datatree, model=model, extend_inferencedata=False, progressbar=False
        )
        total = 0.0
        for da in ll.data_vars.values():
            extra = [dim for dim in da.dims if dim not in ("chain", "draw")]
            values = np.asarray(da.transpose("chain", "draw", *extra))
            total = total + values.reshape(*values.shape[:2], -1)
        post = self.posterior
        return xr.DataArray(
            total,
            dims=("chain", "draw", "subject"),
            coords={"chain": post["chain"], "draw": post["draw"], "subject": self.data.subjects},
            name="outcome",
        )

    def loo(self, by: str = "subject"):
        """PSIS-LOO leaving one subject out (see :func:`pkpd.models.compare.loo`)."""
        from pkpd.models.compare import loo

        return loo(self, by=by)

    def save(self, path) -> Path:
        """Write posterior, sample stats, config and the subject table (netCDF)."""
        path = Path(path)
        table = self.data.table
        tree = xr.DataTree.from_dict(
            {
                "/": xr.Dataset(
                    attrs={
                        "pkpd_version": __version__,
                        "pkpd_model": self.model.model_name,
                        "pkpd_config": json.dumps(self.model.config(), default=str),
                        "pkpd_info": json.dumps(self.info, default=str),
                        "pkpd_table": table.to_json(orient="split") if table is not None else "",
                    }
                ),
                "posterior": self.posterior,
                "sample_stats": _plain(self.datatree["sample_stats"].to_dataset()),
            }
        )
        with atomic_path(path) as tmp:
            tree.to_netcdf(tmp, engine="h5netcdf")
        return path


def _plain(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars([n for n, da in ds.data_vars.items() if da.dtype == object])


def load_endpoint(path) -> EndpointFit:
    """Read a fit written by :meth:`EndpointFit.save`."""
    from io import StringIO

    path = Path(path)
    if not path.exists():
        raise OptionError(f"No saved fit at {str(path)!r}.")
    tree = read_saved_tree(path)
    name = tree.attrs.get("pkpd_model")
    if name not in _ENDPOINTS:
        raise OptionError(f"{str(path)!r} is not a pkpd endpoint fit (model {name!r}).")
    model = _ENDPOINTS[name].from_config(json.loads(tree.attrs["pkpd_config"]))
    table = pd.read_json(StringIO(tree.attrs["pkpd_table"]), orient="split")
    ed = model.prepare(table)
    cls = model.fit_class or EndpointFit
    return cls(model, ed, tree, json.loads(tree.attrs["pkpd_info"]))


def summary_frame(rows: list, prob: float) -> pd.DataFrame:
    """``(name, kind, unit, DataArray(chain, draw))`` rows -> the summary DataFrame."""
    import arviz as az

    ds = xr.Dataset({name: da for name, _, _, da in rows})
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    ess_b, ess_t, rhat = az.ess(ds, method="bulk"), az.ess(ds, method="tail"), az.rhat(ds)
    records = []
    for name, kind, unit, da in rows:
        x = np.asarray(da).ravel()
        records.append(
            {
                "parameter": name,
                "kind": kind,
                "unit": unit,
                "mean": x.mean(),
                "sd": x.std(ddof=1),
                "median": np.median(x),
                f"q{100 * lo:g}": np.quantile(x, lo),
                f"q{100 * hi:g}": np.quantile(x, hi),
                "ess_bulk": float(ess_b[name]),
                "ess_tail": float(ess_t[name]),
                "r_hat": float(rhat[name]),
            }
        )
    return pd.DataFrame.from_records(records).set_index("parameter")
