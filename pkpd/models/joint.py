r"""Hierarchical joint models: kinetics, PD, response and survival in one PyMC model.

A :class:`JointModel` composes a cellular-kinetics model with any number of *blocks*
over one subject coordinate:

- longitudinal PD blocks (:class:`~pkpd.models.PopulationModel` subclasses whose
  structural model reads a CAR-cell driver, e.g. a cytokine turnover model): the
  driver is the subject's own kinetic profile :math:`C_i(t;\theta_i)`;
- subject-level endpoint blocks (:class:`~pkpd.models.EndpointModel` subclasses:
  ordinal best response, binary MRD / safety, parametric time to event): their
  exposure predictors (``Cmax``, ``AUC0_28``, ``AUC0_90``) are the subject's
  individual exposures computed from :math:`\theta_i` inside the graph.

The joint posterior

.. math::

    p(\theta, \psi \mid y^{CK}, y^{PD}, y^{E}) \propto
      p(y^{CK} \mid \theta)\; p(y^{PD} \mid \theta, \psi_{PD})\;
      \prod_b p(y^{E}_b \mid g_b(\theta), \psi_b)\; p(\theta)\, p(\psi)

propagates the uncertainty of every subject's kinetics into the exposure-response
estimates (no plug-in of posterior means; compare
:func:`~pkpd.models.pd.fit_sequential`). Subjects may lack any block's data; a block
subject without kinetics is an error.

Variables of block ``b`` carry the prefix ``b_`` (PD: ``il6_mu_BL``,
``il6_subject``; endpoints: ``orr_b_Cmax``); the kinetics keep their own names, so
:attr:`JointFit.kinetics` is an ordinary :class:`~pkpd.models.PopulationFit`.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pkpd._version import __version__
from pkpd.errors import DataError, OptionError
from pkpd.io import atomic_path
from pkpd.models._base import PopulationModel
from pkpd.models._data import ModelData
from pkpd.models._diagnostics import ConvergenceChecks
from pkpd.models._endpoint import EndpointFit, EndpointModel

__all__ = ["JointData", "JointFit", "JointModel"]

KINETICS = "kinetics"


@dataclass
class JointData:
    """Prepared data of every block, and each block's subject positions in the
    kinetics' subject coordinate."""

    kinetics: ModelData
    blocks: dict = field(default_factory=dict)
    positions: dict = field(default_factory=dict)


class JointModel:
    """Kinetics plus PD and endpoint blocks over one subject coordinate.

    Parameters
    ----------
    kinetics
        The cellular-kinetics model (:class:`~pkpd.models.CellularKinetics`, or
        any population model with ``exposure_tensors`` and ``driver``).
    blocks
        ``{name: model}``; ``name`` (an identifier, e.g. ``"il6"``, ``"orr"``,
        ``"pfs"``) prefixes the block's variables and keys its data. Endpoint
        models take ``name`` as their variable prefix.

    Examples
    --------
    >>> joint = JointModel(  # doctest: +SKIP
    ...     CellularKinetics(),
    ...     {"orr": BestResponse(predictors=["Cmax"]), "pfs": WeibullTTE(predictors=["Cmax"])},
    ... )
    >>> fit = joint.fit({"kinetics": ck, "orr": bor, "pfs": pfs}, random_seed=1)  # doctest: +SKIP
    >>> fit.summary()  # doctest: +SKIP
    """

    model_name = "JointModel"

    def __init__(self, kinetics: PopulationModel, blocks: Mapping[str, object]):
        if not isinstance(kinetics, PopulationModel) or not hasattr(kinetics, "exposure_tensors"):
            raise OptionError(
                "JointModel needs a kinetics model with individual exposures "
                f"(CellularKinetics); got {type(kinetics).__name__}."
            )
        self.kinetics = kinetics
        self.blocks = {}
        for name, block in dict(blocks).items():
            if not str(name).isidentifier() or name == KINETICS:
                raise OptionError(
                    f"Block name {name!r} must be an identifier other than {KINETICS!r} "
                    "(it prefixes the block's variables)."
                )
            if isinstance(block, EndpointModel):
                block.name = name
            elif not isinstance(block, PopulationModel):
                raise OptionError(
                    f"Block {name!r}: expected a PopulationModel (PD) or an EndpointModel, "
                    f"got {type(block).__name__}."
                )
            self.blocks[name] = block
        if not self.blocks:
            raise OptionError("A JointModel needs at least one block besides the kinetics.")

    def _endpoints(self) -> dict:
        return {k: b for k, b in self.blocks.items() if isinstance(b, EndpointModel)}

    def _exposures_of(self, block: EndpointModel) -> list[str]:
        names = set(getattr(self.kinetics, "joint_exposures", ()))
        return [p.column for p in block.predictors if p.column in names]

    # -- data -------------------------------------------------------------------------
    def prepare(self, data: Mapping) -> JointData:
        """Validate every block's data and link block subjects to the kinetics.

        ``data`` maps ``"kinetics"`` and each block name to its DataFrame (event table
        for kinetics and PD, one row per subject for endpoints).
        """
        if isinstance(data, JointData):
            return data
        if not isinstance(data, Mapping):
            raise OptionError(
                "JointModel data is a mapping {'kinetics': event table, '<block>': table}."
            )
        missing = [k for k in (KINETICS, *self.blocks) if k not in data]
        if missing:
            raise OptionError(
                f"JointModel data lacks {missing}; give one table per block "
                f"(keys: {[KINETICS, *self.blocks]})."
            )
        extra = sorted(set(data) - {KINETICS, *self.blocks})
        if extra:
            raise OptionError(f"JointModel data has tables for unknown blocks {extra}.")
        kin = self.kinetics.prepare(data[KINETICS])
        index = pd.Index(kin.subjects)
        jd = JointData(kinetics=kin)
        for name, block in self.blocks.items():
            if isinstance(block, EndpointModel):
                bd = block.prepare(data[name], exposures=self._exposures_of(block))
                subjects = bd.subjects
            else:
                bd = block.prepare(data[name])
                subjects = bd.subjects
            pos = index.get_indexer(subjects)
            if (
                not isinstance(block, EndpointModel)
                and np.all(pos >= 0)
                and bd.meta.get("dose_times") == "assumed at TIME 0"
                and "dose_time" in kin.arrays
            ):
                # a PD block without infusion records: the kinetics' infusions (CAR-NK
                # days 0 and 7) place the block's solver grid
                bd.arrays["dose_time"] = (("subject", "infusion"), kin.arrays["dose_time"][1][pos])
                bd.arrays["dose_active"] = (
                    ("subject", "infusion"),
                    kin.arrays["dose_active"][1][pos].astype(np.int8),
                )
                bd.meta["dose_times"] = "kinetics (joint model)"
            if np.any(pos < 0):
                orphans = list(np.asarray(subjects)[pos < 0][:10])
                raise DataError(
                    f"Block {name!r}: subject(s) {orphans} have {name} data but no cellular "
                    "kinetics. A joint model links every endpoint to the subject's own "
                    "kinetics: add their kinetic data or drop them from this block."
                )
            jd.blocks[name] = bd
            jd.positions[name] = pos
        return jd

    def exposure_references(self, kin: ModelData) -> dict[str, float]:
        r"""Centring constants of exposure predictors, from the observed kinetics.

        ``Cmax``: median over subjects of the largest observed level (reference
        matrix); ``AUC0_<d>``: median of the linear-trapezoidal AUC of the observed
        levels over the first ``d`` days (BLQ as 0). They only fix what the
        intercepts mean (the response at a typical exposure); set
        ``Predictor(reference=...)`` to choose them yourself.
        """
        per_day = {"day": 1.0, "d": 1.0, "days": 1.0, "h": 24.0, "hour": 24.0, "hours": 24.0}
        scale = per_day.get(getattr(self.kinetics, "time_unit", "day"), 1.0)
        ref = kin.obs_matrix == 0
        dv = np.where(kin.obs_blq, 0.0, np.nan_to_num(kin.obs_dv))
        cmax, auc = [], {28: [], 90: []}
        t0 = (
            kin.arrays["dose_time"][1][:, 0]
            if "dose_time" in kin.arrays
            else np.zeros(kin.n_subjects)
        )
        for i in range(kin.n_subjects):
            m = ref & (kin.obs_subject == i)
            t, c = kin.obs_time[m] - t0[i], dv[m]
            order = np.argsort(t)
            t, c = t[order], c[order]
            cmax.append(c.max() if len(c) else np.nan)
            for days in auc:
                w = t <= days * scale
                tt, cc = np.concatenate([[0.0], t[w]]), np.concatenate([[0.0], c[w]])
                auc[days].append(np.trapezoid(cc, tt))
        out = {"Cmax": float(np.nanmedian(cmax))}
        for days, values in auc.items():
            out[f"AUC0_{days}"] = float(np.nanmedian(values))
        return {k: (v if v > 0 else 1.0) for k, v in out.items()}

    # -- the PyMC model ---------------------------------------------------------------
    def build_model(self, data):
        """One PyMC model: the kinetics (unprefixed), then every block (prefixed)."""
        import pymc as pm

        jd = self.prepare(data)
        kin = jd.kinetics
        refs = self.exposure_references(kin)
        with pm.Model() as model:
            parts = self.kinetics.add_to_model(kin)
            theta, extra = parts["theta"], parts["extra"]
            names = sorted({e for b in self._endpoints().values() for e in self._exposures_of(b)})
            exposures = {}
            if names:
                exposures = self.kinetics.exposure_tensors(theta, extra, kin, names)
                for e, tensor in exposures.items():
                    pm.Deterministic(f"{e}_exposure", tensor, dims="subject")
            driver = self.kinetics.driver(theta, extra, kin)
            for name, block in self.blocks.items():
                bd, pos = jd.blocks[name], jd.positions[name]
                if isinstance(block, EndpointModel):
                    for p in block.predictors:
                        if p.column in exposures and p.name not in bd.references:
                            bd.references[p.name] = (
                                float(p.reference) if p.reference is not None else refs[p.column]
                            )
                    block.add_to_model(
                        bd, {e: exposures[e][pos] for e in self._exposures_of(block)}
                    )
                else:
                    block.add_to_model(
                        bd,
                        prefix=f"{name}_",
                        extra_inputs={"driver": _shifted(driver, pos)},
                    )
        return model

    def fit(
        self,
        data,
        *,
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        random_seed: int | None = None,
        sampler: str = "nutpie",
        cores: int | None = None,
        target_accept: float | None = None,
        progress: bool = False,
        check: bool = True,
        **sampler_kwargs,
    ) -> JointFit:
        """Sample the joint posterior; returns a :class:`JointFit` (arguments as
        :meth:`PopulationModel.fit <pkpd.models.PopulationModel.fit>`)."""
        from pkpd.models._sampling import check_sampler, sample_with_info

        t0 = _time.perf_counter()
        check_sampler(sampler)
        jd = self.prepare(data)
        accept = target_accept or max(
            [self.kinetics.default_target_accept]
            + [getattr(b, "default_target_accept", 0.8) for b in self.blocks.values()]
        )
        dt, info = sample_with_info(
            self.build_model(jd),
            sampler=sampler,
            draws=draws,
            tune=tune,
            chains=chains,
            random_seed=random_seed,
            cores=cores,
            target_accept=accept,
            progress=progress,
            started=t0,
            **sampler_kwargs,
        )
        fit = JointFit(self, jd, dt, info)
        if check:
            fit.check_convergence(warn=True)
        return fit

    # -- virtual trials ------------------------------------------------------------------
    def simulate(
        self,
        n_subjects: int = 40,
        *,
        kinetics: Mapping | None = None,
        blocks: Mapping[str, Mapping] | None = None,
        subjects: pd.DataFrame | None = None,
        seed=None,
    ) -> tuple[dict, pd.DataFrame]:
        r"""A virtual trial from the joint model: every block's data for one cohort.

        The kinetics are simulated first (:meth:`CellularKinetics.simulate
        <pkpd.models.CellularKinetics.simulate>` with ``kinetics`` as its keyword
        arguments); each subject's *true* exposures (``Cmax``, ``AUC0_28``,
        ``AUC0_90``: exact, from the true individual parameters) then drive the
        endpoint blocks (:meth:`EndpointModel.simulate
        <pkpd.models.EndpointModel.simulate>` with ``blocks[name]`` as the true
        parameters, e.g. ``{"b_Cmax": 0.8, "cutpoints": [...]}`` or ``{"b_Cmax":
        -0.24, "shape": 1.2, "scale": 400, "followup": 730}``), and the subject's
        true CAR-cell profile drives the PD blocks (their ``simulate(driver,
        **blocks[name])``, e.g. ``{"times": (...), "typical": {...}, "lloq": 1}``).
        Exposures are centred on ``Predictor.reference`` or else on the median true
        exposure, so the true slopes (log odds or log hazard ratio per 2-fold) are
        what a fit estimates; intercepts and cut points refer to that centre.

        Parameters
        ----------
        subjects
            Optional subject-level covariates (``ID`` and the categorical or other
            predictor columns of the endpoint blocks), merged by ID (IDs ``1..n``).

        Returns
        -------
        ``(data, truth)``: ``data`` maps ``"kinetics"`` and every block name to its
        table, ready for :meth:`fit`; ``truth`` is the kinetics' per-subject truth
        (individual parameters and exact exposures ``true_*``).
        """
        from pkpd.models.pd import CKDriver

        rng = np.random.default_rng(seed)
        blocks = dict(blocks or {})
        missing = [k for k in self.blocks if k not in blocks]
        if missing:
            raise OptionError(
                f"JointModel.simulate needs the true parameters of block(s) {missing} "
                "(blocks={name: {...}})."
            )
        kin, truth = self.kinetics.simulate(
            n_subjects, seed=rng, return_truth=True, **dict(kinetics or {})
        )
        table = pd.DataFrame({"ID": truth["ID"].to_numpy()})
        for name in getattr(self.kinetics, "joint_exposures", ()):
            if f"true_{name}" in truth:
                table[name] = truth[f"true_{name}"].to_numpy()
        if subjects is not None:
            if "ID" not in subjects.columns:
                raise OptionError("subjects= needs an ID column.")
            table = table.merge(subjects, on="ID", how="left", validate="one_to_one")
        data = {KINETICS: kin}
        doses = kin[kin["EVID"] == 1][["ID", "TIME"]]
        if "lag_fraction" in truth:
            truth = truth.assign(lag=truth["lag_fraction"] * truth["Tmax"])
        for name, block in self.blocks.items():
            params = dict(blocks[name])
            if isinstance(block, EndpointModel):
                out = EndpointModel.simulate(block, table, params, seed=rng)
                exposures = getattr(self.kinetics, "joint_exposures", ())
                data[name] = out.drop(columns=[c for c in exposures if c in out.columns])
            else:
                driver = CKDriver.from_parameters(truth, doses=doses)
                data[name] = block.simulate(driver, seed=rng, **params)
        return data, truth

    def config(self) -> dict:
        return {
            KINETICS: {"model": self.kinetics.model_name, "config": self.kinetics.config()},
            "blocks": {
                k: {"model": b.model_name, "config": b.config()} for k, b in self.blocks.items()
            },
        }


def _shifted(driver, positions: np.ndarray):
    """The kinetics driver seen from a block: block subject -> kinetics subject."""

    def level(subject, time):
        return driver(positions[np.asarray(subject)], time)

    return level


class JointFit(ConvergenceChecks):
    """A fitted :class:`JointModel`: one posterior, a fit object per block.

    Attributes
    ----------
    kinetics
        :class:`~pkpd.models.PopulationFit` of the kinetics (individual exposures,
        GOF, VPC as for a fit of its own).
    """

    def __init__(self, model: JointModel, data: JointData, datatree, info: dict):
        from pkpd.models._fit import PopulationFit

        self.model = model
        self.data = data
        self.datatree = datatree
        self.info = dict(info)
        self.kinetics = PopulationFit(model.kinetics, data.kinetics, datatree, info)

    def __repr__(self) -> str:
        post = self.datatree["posterior"]
        return (
            f"<JointModel fit: {self.data.kinetics.n_subjects} subjects, blocks "
            f"{list(self.model.blocks)}, {post.sizes['chain']} chains x "
            f"{post.sizes['draw']} draws>"
        )

    @property
    def posterior(self) -> xr.Dataset:
        return self.datatree["posterior"].to_dataset()

    def block(self, name: str):
        """The fit object of one block: :class:`~pkpd.models.EndpointFit` or, for a PD
        block, a :class:`~pkpd.models.PopulationFit` over its (unprefixed) variables."""
        from pkpd.models._fit import PopulationFit

        if name == KINETICS:
            return self.kinetics
        if name not in self.model.blocks:
            raise OptionError(f"No block {name!r}; blocks: {list(self.model.blocks)}.")
        block, bd = self.model.blocks[name], self.data.blocks[name]
        if isinstance(block, EndpointModel):
            return (block.fit_class or EndpointFit)(block, bd, self.datatree, self.info)
        prefix = f"{name}_"
        tree = xr.DataTree.from_dict(
            {
                "posterior": _strip(self.posterior, prefix),
                "sample_stats": self.datatree["sample_stats"].to_dataset(),
            }
        )
        return PopulationFit(block, bd, tree, self.info)

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Every block's summary (natural scale, units, ESS, r_hat), with a ``block``
        column; kinetics first."""
        parts = []
        for name in (KINETICS, *self.model.blocks):
            s = self.block(name).summary(prob)
            s.insert(0, "block", name)
            parts.append(s)
        return pd.concat(parts)

    def block_variables(self) -> dict[str, list[str]]:
        """The free (sampled) variables of each block in the posterior."""
        post = self.posterior
        prefixes = {name: f"{name}_" for name in self.model.blocks}
        out = {name: [] for name in (KINETICS, *self.model.blocks)}
        for var in post.data_vars:
            owner = next((n for n, p in prefixes.items() if var.startswith(p)), KINETICS)
            out[owner].append(var)
        return out

    def ess_per_second(self) -> pd.DataFrame:
        """Per block: the smallest bulk ESS over its variables, and that per second of
        sampling (``info["sample_s"]``, compile time excluded)."""
        import arviz as az

        post = self.posterior
        ess = az.ess(post, method="bulk")
        seconds = float(self.info.get("sample_s", np.nan))
        rows = []
        for name, names in self.block_variables().items():
            values = [np.nanmin(np.asarray(ess[v])) for v in names if np.asarray(ess[v]).size]
            low = float(np.nanmin(values)) if values else np.nan
            rows.append({"block": name, "min_ess_bulk": low, "ess_per_s": low / seconds})
        return pd.DataFrame(rows).set_index("block")

    def save(self, path) -> Path:
        """Write the joint posterior, sample stats and configuration (netCDF)."""
        path = Path(path)
        stats = self.datatree["sample_stats"].to_dataset()
        stats = stats.drop_vars([n for n, da in stats.data_vars.items() if da.dtype == object])
        tree = xr.DataTree.from_dict(
            {
                "/": xr.Dataset(
                    attrs={
                        "pkpd_version": __version__,
                        "pkpd_model": JointModel.model_name,
                        "pkpd_config": json.dumps(self.model.config(), default=str),
                        "pkpd_info": json.dumps(self.info, default=str),
                    }
                ),
                "posterior": self.posterior,
                "sample_stats": stats,
            }
        )
        with atomic_path(path) as tmp:
            tree.to_netcdf(tmp, engine="h5netcdf")
        return path


def _strip(post: xr.Dataset, prefix: str) -> xr.Dataset:
    """A block's variables and dims without the block prefix."""
    keep = [v for v in post.data_vars if v.startswith(prefix)]
    ds = post[keep]
    ds = ds.rename({v: v[len(prefix) :] for v in keep})
    dims = {d: d[len(prefix) :] for d in ds.dims if str(d).startswith(prefix)}
    return ds.rename(dims)
