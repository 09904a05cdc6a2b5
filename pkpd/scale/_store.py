"""Fits as DataTrees, and the store of many fits (a zarr group per fit, or netCDF files).

A fit travels from a worker to the client, and lives in the store, as an
:class:`xarray.DataTree`: ``posterior``, ``sample_stats`` (without object-dtype
variables), for population fits the fitted data (``constant_data``), and root
attributes with the model class, its configuration, the sampler settings and the pkpd
version, as :meth:`pkpd.models.PopulationFit.save` writes them. :func:`fit_from_tree`
rebuilds the fit object.

Store layout (``store="results.zarr"``)::

    results.zarr/          zarr group; attribute pkpd_fit_many (settings)
      <fit_id>/            one fit (the DataTree above)

and for any other ``store`` path, a directory of ``<fit_id>.nc`` netCDF files. Every fit
is written to a temporary location next to the store and renamed into place, so a
reader sees a fit complete or not at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pkpd._version import __version__
from pkpd.errors import OptionError
from pkpd.io import atomic_path

__all__ = ["FitStore", "TreeFit", "fit_from_tree", "fit_to_tree", "load_fit"]

FIT_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class TreeFit:
    """The fit of a model that is neither a PopulationModel nor an EndpointModel.

    Holds the model, the data, the DataTree and the sampler info; :meth:`summary`
    summarises every scalar posterior variable.
    """

    def __init__(self, model, data, datatree, info: dict):
        self.model = model
        self.data = data
        self.datatree = datatree
        self.info = dict(info)

    @property
    def posterior(self) -> xr.Dataset:
        return self.datatree["posterior"].to_dataset()

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        from pkpd.models._endpoint import summary_frame

        post = self.posterior
        rows = [
            (name, "parameter", "", da)
            for name, da in post.data_vars.items()
            if set(da.dims) <= {"chain", "draw"}
        ]
        return summary_frame(rows, prob)

    def convergence(self) -> pd.DataFrame:
        from pkpd.models._diagnostics import convergence_table

        return convergence_table(self.datatree)


def _kind(fit) -> str:
    from pkpd.models._endpoint import EndpointFit
    from pkpd.models._fit import PopulationFit

    if isinstance(fit, PopulationFit):
        return "population"
    if isinstance(fit, EndpointFit):
        return "endpoint"
    return "tree"


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return str(value)


def _plain(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars([n for n, da in ds.data_vars.items() if da.dtype == object])


def fit_to_tree(fit, fit_id: str, row: dict | None = None) -> xr.DataTree:
    """The DataTree of a fit (what the store holds for it)."""
    kind = _kind(fit)
    model = fit.model
    attrs = {
        "pkpd_version": __version__,
        "pkpd_kind": kind,
        "pkpd_fit_id": fit_id,
        "pkpd_model": getattr(model, "model_name", type(model).__name__),
        "pkpd_info": json.dumps(fit.info, default=_json_default),
    }
    if hasattr(model, "config"):
        attrs["pkpd_config"] = json.dumps(model.config(), default=_json_default)
    if row is not None:
        attrs["pkpd_row"] = json.dumps(row, default=_json_default)
    if kind == "endpoint" and fit.data.table is not None:
        attrs["pkpd_table"] = fit.data.table.to_json(orient="split")
    groups = {
        "/": xr.Dataset(attrs=attrs),
        "posterior": fit.posterior,
        "sample_stats": _plain(fit.datatree["sample_stats"].to_dataset()),
    }
    if kind == "population":
        groups["constant_data"] = fit.data.to_dataset()
    return xr.DataTree.from_dict(groups)


def fit_from_tree(tree: xr.DataTree, model=None):
    """Rebuild the fit object from its DataTree.

    Population and endpoint fits are rebuilt from the model registry (their class must
    be registered, as every pkpd model is), or with ``model`` when given; other fits
    become a :class:`TreeFit` holding ``model`` (``None`` when not given).
    """
    from io import StringIO

    attrs = tree.attrs
    kind = attrs.get("pkpd_kind", "tree")
    info = json.loads(attrs.get("pkpd_info", "{}"))
    name = attrs.get("pkpd_model")
    if kind == "population":
        from pkpd.models._data import ModelData
        from pkpd.models._fit import _MODELS, PopulationFit

        if model is None:
            if name not in _MODELS:
                raise OptionError(
                    f"Fit {attrs.get('pkpd_fit_id')!r} is of model {name!r}, which is not "
                    "registered in this process; import its module, or pass model=."
                )
            model = _MODELS[name].from_config(json.loads(attrs["pkpd_config"]))
        data = ModelData.from_dataset(tree["constant_data"].to_dataset())
        return PopulationFit(model, data, tree, info)
    if kind == "endpoint":
        from pkpd.models._endpoint import _ENDPOINTS, EndpointFit

        if model is None:
            if name not in _ENDPOINTS:
                raise OptionError(
                    f"Fit {attrs.get('pkpd_fit_id')!r} is of endpoint model {name!r}, which "
                    "is not registered in this process; import its module, or pass model=."
                )
            model = _ENDPOINTS[name].from_config(json.loads(attrs["pkpd_config"]))
        table = attrs.get("pkpd_table")
        data = model.prepare(pd.read_json(StringIO(table), orient="split")) if table else None
        return EndpointFit(model, data, tree, info)
    return TreeFit(model, None, tree, info)


class FitStore:
    """Where :func:`pkpd.scale.fit_many` writes fits: a ``.zarr`` group or a directory."""

    def __init__(self, path, *, attrs: dict | None = None, create: bool = True):
        self.path = Path(path)
        self.zarr = self.path.suffix == ".zarr"
        if create:
            self._create(attrs or {})

    def _create(self, attrs: dict) -> None:
        if self.zarr:
            if not (self.path / "zarr.json").exists():
                import zarr

                self.path.parent.mkdir(parents=True, exist_ok=True)
                zarr.open_group(str(self.path), mode="a", zarr_format=3)
            if attrs:
                import zarr

                group = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
                group.attrs.update(json.loads(json.dumps(attrs, default=_json_default)))
        else:
            self.path.mkdir(parents=True, exist_ok=True)

    def _target(self, fit_id: str) -> Path:
        return self.path / fit_id if self.zarr else self.path / f"{fit_id}.nc"

    def write(self, fit_id: str, tree: xr.DataTree) -> Path:
        """Write one fit atomically (temporary copy next to the store, then rename)."""
        target = self._target(fit_id)
        if self.zarr:
            tmp = Path(
                tempfile.mkdtemp(prefix=f".{self.path.name}.{fit_id}.", dir=self.path.parent)
            )
            try:
                tree.to_zarr(tmp / "fit.zarr", consolidated=False, zarr_format=3)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp / "fit.zarr", target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            with atomic_path(target) as tmp:
                tree.to_netcdf(tmp, engine="h5netcdf")
        return target

    def has(self, fit_id: str) -> bool:
        target = self._target(fit_id)
        return (target / "zarr.json").exists() if self.zarr else target.exists()

    def read(self, fit_id: str) -> xr.DataTree:
        if not self.has(fit_id):
            raise OptionError(f"No fit {fit_id!r} in the store {str(self.path)!r}.")
        if self.zarr:
            tree = xr.open_datatree(self.path, engine="zarr", group=fit_id, consolidated=False)
        else:
            tree = xr.open_datatree(self._target(fit_id), engine="h5netcdf")
        return tree.load()

    def fit_ids(self) -> list[str]:
        if self.zarr:
            return sorted(p.name for p in self.path.iterdir() if (p / "zarr.json").exists())
        return sorted(p.stem for p in self.path.glob("*.nc"))


def load_fit(store, fit_id: str, model=None):
    """One fit from a :func:`pkpd.scale.fit_many` store, as a fit object.

    Parameters
    ----------
    store
        The ``store=`` path given to ``fit_many`` (``.zarr`` group or directory).
    fit_id
        The fit's id (a row of the results table).
    model
        The model, for fits of unregistered model classes.
    """
    path = Path(store)
    if not path.exists():
        raise OptionError(f"No store at {str(path)!r}.")
    return fit_from_tree(FitStore(path, create=False).read(fit_id), model=model)
