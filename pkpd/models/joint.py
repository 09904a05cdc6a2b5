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

Blocks can also drive each other (``drivers=``):

- a marker block driven by another marker block: CRP or ferritin stimulated by the
  IL-6 block's own prediction (its rise over baseline,
  :func:`~pkpd.models.drivers.marker_excess`), evaluated in the graph at the CRP
  solver's nodes, so the CRP posterior carries the IL-6 (and kinetic) uncertainty;
- a PK block (:class:`~pkpd.models.SelinexorPK`, any :class:`~pkpd.models.PopPK`:
  its own prefixed hierarchy and likelihood on its PK data) as the second drive of a
  turnover block (selinexor killing on a tumour marker,
  :class:`~pkpd.models.drivers.DrugLevel`: the PK block's PyTensor dosing-interval
  averages or concentrations).

Variables of block ``b`` carry the prefix ``b_`` (PD: ``il6_mu_BL``,
``il6_subject``; endpoints: ``orr_b_Cmax``); the kinetics keep their own names, so
:attr:`JointFit.kinetics` is an ordinary :class:`~pkpd.models.PopulationFit`.
"""

from __future__ import annotations

import copy
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
from pkpd.models.pd import CAR_UNITS, TurnoverModel

__all__ = ["JointData", "JointFit", "JointModel"]

KINETICS = "kinetics"


@dataclass
class JointData:
    """Prepared data of every block, and each block's subject positions in the
    kinetics' subject coordinate."""

    kinetics: ModelData
    blocks: dict = field(default_factory=dict)
    positions: dict = field(default_factory=dict)
    #: per driven block: positions of its subjects in the driving blocks' subjects
    #: (``{"driver": array | None, "drug": array | None}``; -1: no drug)
    links: dict = field(default_factory=dict)
    #: per PK block that drives another: its full dose history (dose arrays)
    doses: dict = field(default_factory=dict)


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
        models take ``name`` as their variable prefix. Turnover PD blocks are driven
        by the kinetics unless ``drivers`` says otherwise; other population models
        (a :class:`~pkpd.models.SelinexorPK` block) read no driver.
    drivers
        ``{block: source}`` for turnover blocks driven by another block:

        - ``"il6"``: the block is stimulated by block ``il6``'s prediction (its rise
          over baseline; a :class:`~pkpd.models.CytokinePD` block with stimulated
          production). The driven block's ``driver_unit`` must be the driving
          marker's unit (e.g. ``CytokinePD("CRP", driver_unit="pg/mL")``).
        - ``("kinetics", "sel")`` (or ``{"driver": "kinetics", "drug": "sel"}``):
          the CAR profile plus the drug level of PK block ``sel`` as second drive
          (the block needs ``drug_drive=``; its ``drug_level`` chooses interval
          averages or concentrations).

        Errors (``OptionError``): unknown block names, cycles, driving an endpoint
        or PK block, a source that cannot drive (a stimulated-loss marker, an
        endpoint; a drug source that is not a PK model).

    Examples
    --------
    >>> joint = JointModel(  # doctest: +SKIP
    ...     CellularKinetics(),
    ...     {"orr": BestResponse(predictors=["Cmax"]), "pfs": WeibullTTE(predictors=["Cmax"])},
    ... )
    >>> fit = joint.fit({"kinetics": ck, "orr": bor, "pfs": pfs}, random_seed=1)  # doctest: +SKIP
    >>> fit.summary()  # doctest: +SKIP

    IL-6 driving CRP, and selinexor as a second drive on M-protein:

    >>> joint = JointModel(  # doctest: +SKIP
    ...     CellularKinetics(),
    ...     {
    ...         "il6": CytokinePD("IL6"),
    ...         "crp": CytokinePD("CRP", driver_unit="pg/mL"),
    ...         "sel": SelinexorPK(),
    ...         "mprotein": TumourMarker("M_protein", drug_drive="emax"),
    ...     },
    ...     drivers={"crp": "il6", "mprotein": ("kinetics", "sel")},
    ... )
    """

    model_name = "JointModel"

    def __init__(
        self,
        kinetics: PopulationModel,
        blocks: Mapping[str, object],
        drivers: Mapping[str, object] | None = None,
    ):
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
        self.drivers = self._links(drivers)
        self.order = self._order()

    # -- links between blocks -------------------------------------------------------------
    def _links(self, drivers) -> dict:
        """``{block: {"driver": source, "drug": source | None}}`` of every turnover block."""
        if drivers is None:
            drivers = {}
        if not isinstance(drivers, Mapping):
            raise OptionError(
                "drivers= maps a block name to its driving block: {'crp': 'il6'} or "
                "{'mprotein': ('kinetics', 'sel')}."
            )
        known = [KINETICS, *self.blocks]
        links = {
            name: {"driver": KINETICS, "drug": None}
            for name, b in self.blocks.items()
            if isinstance(b, TurnoverModel)
        }
        for target, spec in drivers.items():
            if target not in self.blocks:
                raise OptionError(
                    f"drivers= names unknown block {target!r}; blocks: {list(self.blocks)}."
                )
            block = self.blocks[target]
            if not isinstance(block, TurnoverModel):
                kind = "an endpoint" if isinstance(block, EndpointModel) else "a PK/population"
                raise OptionError(
                    f"drivers=: block {target!r} ({block.model_name}) is {kind} block, which "
                    "reads no driver; only turnover PD blocks (CytokinePD, TumourMarker) are "
                    "driven (endpoints take the kinetics' exposures as predictors)."
                )
            if isinstance(spec, str):
                main, drug = spec, None
            elif isinstance(spec, Mapping):
                unknown = sorted(set(spec) - {"driver", "drug"})
                if unknown:
                    raise OptionError(
                        f"drivers[{target!r}] has unknown key(s) {unknown}; use 'driver', 'drug'."
                    )
                main, drug = spec.get("driver", KINETICS), spec.get("drug")
            elif isinstance(spec, tuple | list) and len(spec) == 2:
                main, drug = spec
            else:
                raise OptionError(
                    f"drivers[{target!r}] = {spec!r}: give a block name, a pair (driver, drug) "
                    "or {'driver': ..., 'drug': ...}."
                )
            for role, src in (("driver", main), ("drug", drug)):
                if src is not None and src not in known:
                    raise OptionError(
                        f"drivers[{target!r}]: unknown {role} block {src!r}; blocks: {known}."
                    )
                if src == target:
                    raise OptionError(f"drivers=: block {target!r} cannot drive itself (a cycle).")
            if main != KINETICS:
                self._check_marker_link(target, block, main)
            if drug is not None:
                src = self.blocks.get(drug)
                if src is None or not hasattr(src, "cumulative_auc"):
                    name = "the kinetics" if drug == KINETICS else f"block {drug!r}"
                    raise OptionError(
                        f"drivers[{target!r}]: the drug source {name} is not a PK model with "
                        "concentration and cumulative_auc (PopPK, SelinexorPK)."
                    )
            links[target] = {"driver": main, "drug": drug}
        for name, link in links.items():
            block = self.blocks[name]
            if block.drug_drive is not None and link["drug"] is None:
                raise OptionError(
                    f"Block {name!r} has a drug effect (drug_drive={block.drug_drive!r}) but no "
                    f"drug source: drivers={{{name!r}: ('kinetics', '<PK block>')}}."
                )
            if block.drug_drive is None and link["drug"] is not None:
                raise OptionError(
                    f"Block {name!r} is given the drug block {link['drug']!r} but has no drug "
                    "effect: build it with drug_drive='emax' or 'linear'."
                )
        return links

    def _check_marker_link(self, target: str, block, main: str) -> None:
        src = self.blocks[main]
        if not isinstance(src, TurnoverModel):
            raise OptionError(
                f"drivers[{target!r}]: block {main!r} ({src.model_name}) cannot drive a marker; "
                "a driver is 'kinetics' or a cytokine block (CytokinePD)."
            )
        if src.effect != "production":
            raise OptionError(
                f"drivers[{target!r}]: block {main!r} is a stimulated-loss marker "
                f"({src.model_name}); only a cytokine (stimulated production) can drive "
                "another marker (its rise over baseline)."
            )
        if src.drug_drive is not None:
            raise OptionError(
                f"drivers[{target!r}]: the driving block {main!r} has a drug drive; a marker "
                "driver is a marker driven by the kinetics (or another marker)."
            )
        unit = src.units()["conc"]
        if block.driver_unit in CAR_UNITS:
            raise OptionError(
                f"Block {target!r} is driven by block {main!r} ({unit}) but was built for a "
                f"CAR-cell driver (driver_unit={block.driver_unit!r}, EC50 prior on CAR "
                f"levels): build it with driver_unit={unit!r}."
            )
        if unit != "conc" and block.driver_unit != unit:
            raise OptionError(
                f"Block {target!r} has driver_unit {block.driver_unit!r} but its driver, "
                f"block {main!r}, is in {unit!r}."
            )

    def _order(self) -> list[str]:
        """Blocks in build order: every driving block before the blocks it drives."""
        deps = {
            name: [s for s in (link["driver"], link["drug"]) if s in self.blocks]
            for name, link in self.drivers.items()
        }
        order, state = [], {}

        def visit(name, path):
            if state.get(name) == "done":
                return
            if state.get(name) == "active":
                cycle = [*path[path.index(name) :], name]
                raise OptionError(f"drivers= form a cycle: {' -> '.join(cycle)}.")
            state[name] = "active"
            for dep in deps.get(name, []):
                visit(dep, [*path, name])
            state[name] = "done"
            order.append(name)

        for name in self.blocks:
            visit(name, [])
        return order

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
            else:
                bd = block.prepare(data[name])
            subjects = bd.subjects
            pos = index.get_indexer(subjects)
            driven = isinstance(block, TurnoverModel)
            if (
                driven
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
            if (driven or isinstance(block, EndpointModel)) and np.any(pos < 0):
                orphans = list(np.asarray(subjects)[pos < 0][:10])
                raise DataError(
                    f"Block {name!r}: subject(s) {orphans} have {name} data but no cellular "
                    "kinetics. A joint model links every endpoint to the subject's own "
                    "kinetics: add their kinetic data or drop them from this block."
                )
            jd.blocks[name] = bd
            jd.positions[name] = pos
        for name, link in self.drivers.items():
            jd.links[name] = self._link_positions(name, link, jd, data)
        return jd

    def _link_positions(self, name: str, link: dict, jd: JointData, data: Mapping) -> dict:
        """Positions of a driven block's subjects in its driving blocks' subjects."""
        from pkpd.models.drivers import dose_data, dose_records

        out = {"driver": None, "drug": None}
        subjects = jd.blocks[name].subjects
        src = link["driver"]
        if src != KINETICS:
            pos = pd.Index(jd.blocks[src].subjects).get_indexer(subjects)
            if np.any(pos < 0):
                orphans = np.asarray(subjects)[pos < 0].tolist()
                raise DataError(
                    f"Block {name!r}: subject(s) {orphans[:10]} have {name} data but no {src} "
                    f"data. Block {name!r} is driven by block {src!r}'s prediction, which needs "
                    f"each subject's {src} data: add their {src} records or drop them from "
                    f"{name}."
                )
            out["driver"] = pos
        drug = link["drug"]
        if drug is not None:
            block = self.blocks[name]
            pk = jd.blocks[drug]
            pos = pd.Index(pk.subjects).get_indexer(subjects)
            if np.any(pos < 0) and block.drug_missing != "zero":
                orphans = np.asarray(subjects)[pos < 0].tolist()
                raise DataError(
                    f"Block {name!r}: subject(s) {orphans[:10]} have {name} data but no {drug} "
                    f"(drug PK) data, so no drug level. Add their PK data, drop them, or build "
                    f"the block with drug_missing='zero' if they never received the drug."
                )
            out["drug"] = pos
            if drug not in jd.doses:
                # the whole dose history (the PK data's own arrays stop at each subject's
                # last PK sample)
                model = self.blocks[drug]
                records = dose_records(data[drug], model)
                records = records[records["ID"].isin(pk.subjects)]
                jd.doses[drug], _ = dose_data(model, records, pk.subjects, pk.meta["conc_scale"])
        return out

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
            built = {}
            for name in self.order:
                block = self.blocks[name]
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
                    continue
                inputs = {}
                if name in self.drivers:
                    inputs = self._inputs(name, jd, built, driver)
                built[name] = block.add_to_model(bd, prefix=f"{name}_", extra_inputs=inputs)
        return model

    def _inputs(self, name: str, jd: JointData, built: dict, kinetics_driver) -> dict:
        """The driver callables of turnover block ``name`` (PyTensor, from the kinetics
        and the blocks built before it)."""
        from pkpd.models.drivers import DrugLevel, _MarkerLink

        link, where = self.drivers[name], jd.links[name]
        src = link["driver"]
        if src == KINETICS:
            inputs = {"driver": _shifted(kinetics_driver, jd.positions[name])}
        else:
            parts = built[src]
            link_of = _MarkerLink(
                self.blocks[src], parts["theta"], parts["extra"], jd.blocks[src], where["driver"]
            )
            inputs = {"driver": link_of}
        drug = link["drug"]
        if drug is not None:
            block = self.blocks[name]
            level = DrugLevel(self.blocks[drug], jd.doses[drug], block.drug_level, block.time_unit)
            inputs["drug_driver"] = level.bind(built[drug]["theta"], where["drug"])
        return inputs

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
    ) -> JointFit:
        """Sample the joint posterior; returns a :class:`JointFit` (arguments as
        :meth:`PopulationModel.fit <pkpd.models.PopulationModel.fit>`)."""
        from pkpd.models._sampling import check_sampler, sample_with_info

        t0 = _time.perf_counter()
        check_sampler(sampler)
        jd = self.prepare(data)
        # a sparse kinetics design: BSV on what it informs (PopulationModel.design_bsv)
        kinetics, design = self.kinetics.for_design(jd.kinetics)
        joint = self
        if design is not None:
            joint = copy.copy(self)
            joint.kinetics = kinetics
        accept = target_accept or max(
            [self.kinetics.default_target_accept]
            + [getattr(b, "default_target_accept", 0.8) for b in self.blocks.values()]
        )
        dt, info = sample_with_info(
            joint.build_model(jd),
            sampler=sampler,
            draws=draws,
            tune=tune,
            chains=chains,
            random_seed=random_seed,
            cores=cores,
            target_accept=accept,
            progress=progress,
            started=t0,
            budget=budget,
            **sampler_kwargs,
        )
        if design is not None:
            info["bsv_design"] = design
        fit = JointFit(joint, jd, dt, info)
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
        block_truth: bool = False,
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

        Linked blocks follow the chain of ``drivers``: a PK block is simulated by its
        ``simulate(n_subjects, seed=, **blocks[name])`` (e.g. ``{"doses": [...],
        "times": [...], "typical": {...}}``; subject IDs ``1..n`` as the kinetics'),
        a marker driven by another block by the driving block's *true* individual
        prediction (:meth:`MarkerDriver.from_parameters
        <pkpd.models.drivers.MarkerDriver.from_parameters>`), and a drug-driven block
        by the PK block's true parameters and all its dose records
        (:meth:`DrugDriver.from_parameters
        <pkpd.models.drivers.DrugDriver.from_parameters>`).

        Parameters
        ----------
        subjects
            Optional subject-level covariates (``ID`` and the categorical or other
            predictor columns of the endpoint blocks), merged by ID (IDs ``1..n``).
        block_truth
            Also return ``{block: true individual parameters}`` of the population
            blocks (PD and PK).

        Returns
        -------
        ``(data, truth)``: ``data`` maps ``"kinetics"`` and every block name to its
        table, ready for :meth:`fit`; ``truth`` is the kinetics' per-subject truth
        (individual parameters and exact exposures ``true_*``). With
        ``block_truth=True``: ``(data, truth, block_truths)``.
        """
        from pkpd.models.drivers import DrugDriver, MarkerDriver, dose_records
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
        ck_driver = CKDriver.from_parameters(truth, doses=doses)
        truths, used = {}, {}
        for name in self.order:
            block = self.blocks[name]
            params = dict(blocks[name])
            if isinstance(block, EndpointModel):
                out = EndpointModel.simulate(block, table, params, seed=rng)
                exposures = getattr(self.kinetics, "joint_exposures", ())
                data[name] = out.drop(columns=[c for c in exposures if c in out.columns])
            elif name in self.drivers:
                link = self.drivers[name]
                src = link["driver"]
                if src == KINETICS:
                    driver = ck_driver
                else:
                    driver = MarkerDriver.from_parameters(self.blocks[src], truths[src], used[src])
                if link["drug"] is not None:
                    drug = link["drug"]
                    params["drug_driver"] = DrugDriver.from_parameters(
                        truths[drug],
                        dose_records(data[drug], self.blocks[drug]),
                        model=self.blocks[drug],
                        time_unit=block.time_unit,
                    )
                data[name], truths[name] = block.simulate(
                    driver, seed=rng, return_truth=True, **params
                )
                used[name] = driver
            else:
                params.setdefault("n_subjects", len(truth))
                ids = truth["ID"].to_numpy()
                if np.issubdtype(ids.dtype, np.integer) and "id_offset" not in params:
                    params["id_offset"] = int(ids.min()) - 1  # the kinetics' IDs
                data[name], truths[name] = block.simulate(seed=rng, return_truth=True, **params)
        if block_truth:
            return data, truth, truths
        return data, truth

    def config(self) -> dict:
        return {
            KINETICS: {"model": self.kinetics.model_name, "config": self.kinetics.config()},
            "blocks": {
                k: {"model": b.model_name, "config": b.config()} for k, b in self.blocks.items()
            },
            "drivers": {k: dict(v) for k, v in self.drivers.items()},
        }


def _shifted(driver, positions: np.ndarray):
    """The kinetics driver seen from a block: block subject -> kinetics subject."""

    def level(subject, time):
        return driver(positions[np.asarray(subject)], time)

    log_grid = getattr(driver, "log_grid", None)
    if log_grid is not None:
        level.log_grid = lambda rows, times: log_grid(positions[np.asarray(rows)], times)
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
