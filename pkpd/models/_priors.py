"""Priors with their literature source, and covariate-effect specifications.

A :class:`Prior` is data, not a PyMC object: it is stored in a model's config,
written into a saved fit's attributes (JSON) and turned into a PyMC random
variable only inside :meth:`PopulationModel.build_model`. Every prior carries a
``source``: the paper (or the reasoning) it comes from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from pkpd.errors import OptionError

__all__ = ["CovariateEffect", "Prior", "lognormal_from_mean_sd"]

_KINDS = {
    "lognormal": ("median", "sd"),
    "logitnormal": ("median", "sd"),
    "normal": ("mu", "sigma"),
    "halfnormal": ("sigma",),
}


def lognormal_from_mean_sd(mean: float, sd: float) -> tuple[float, float]:
    r"""Median and log-scale SD of the log-normal with this arithmetic mean and SD.

    Published cellular-kinetic exposures are often a mean and SD (e.g. a label's
    Cmax); a log-normal model needs its median and the SD of the log:

    .. math::

        \mathrm{CV} = \mathrm{sd}/\mathrm{mean},\quad
        \omega = \sqrt{\ln(1 + \mathrm{CV}^2)},\quad
        \mathrm{median} = \mathrm{mean}/\sqrt{1 + \mathrm{CV}^2}

    (the log-normal's mean is :math:`\mathrm{median}\,e^{\omega^2/2}` and its CV
    :math:`\sqrt{e^{\omega^2}-1}`).

    Raises
    ------
    OptionError
        ``mean`` or ``sd`` not a finite number > 0.
    """
    m, s = float(mean), float(sd)
    if not (math.isfinite(m) and math.isfinite(s) and m > 0 and s > 0):
        raise OptionError(f"A log-normal needs a mean and an SD > 0, got mean={mean!r}, sd={sd!r}.")
    ratio = 1.0 + (s / m) ** 2
    return m / math.sqrt(ratio), math.sqrt(math.log(ratio))


@dataclass(frozen=True)
class Prior:
    r"""A prior distribution with its source.

    Kinds and the latent (sampled) variable each one creates:

    - ``lognormal(median, sd)``: :math:`\ln\theta \sim N(\ln \mathrm{median}, \mathrm{sd}^2)`,
      for positive typical values (clearances, rates, levels);
    - ``logitnormal(median, sd)``: :math:`\mathrm{logit}\,\theta \sim
      N(\mathrm{logit}\,\mathrm{median}, \mathrm{sd}^2)`, for fractions in (0, 1);
    - ``normal(mu, sigma)``: for covariate effects on the log / logit scale;
    - ``halfnormal(sigma)``: for between-subject SDs (omega) and residual SDs.
    """

    kind: str
    params: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise OptionError(f"Unknown prior kind {self.kind!r}; use one of {sorted(_KINDS)}.")
        need = _KINDS[self.kind]
        if sorted(self.params) != sorted(need):
            raise OptionError(f"A {self.kind} prior takes {list(need)}, got {sorted(self.params)}.")
        for key, value in self.params.items():
            if not math.isfinite(float(value)):
                raise OptionError(f"Prior {self.kind}: {key}={value!r} must be finite.")
        positive = [k for k in ("sd", "sigma", "median") if k in self.params]
        for key in positive:
            if float(self.params[key]) <= 0:
                raise OptionError(f"Prior {self.kind}: {key} must be > 0, got {self.params[key]}.")
        if self.kind == "logitnormal" and not 0 < float(self.params["median"]) < 1:
            raise OptionError("A logitnormal prior's median must lie in (0, 1).")

    @classmethod
    def lognormal(cls, median: float, sd: float, source: str = "") -> Prior:
        return cls("lognormal", {"median": float(median), "sd": float(sd)}, source)

    @classmethod
    def logitnormal(cls, median: float, sd: float, source: str = "") -> Prior:
        return cls("logitnormal", {"median": float(median), "sd": float(sd)}, source)

    @classmethod
    def normal(cls, mu: float, sigma: float, source: str = "") -> Prior:
        return cls("normal", {"mu": float(mu), "sigma": float(sigma)}, source)

    @classmethod
    def halfnormal(cls, sigma: float, source: str = "") -> Prior:
        return cls("halfnormal", {"sigma": float(sigma)}, source)

    @property
    def latent_mean(self) -> float:
        """Mean of the latent normal (log / logit / identity scale)."""
        p = self.params
        if self.kind == "lognormal":
            return math.log(p["median"])
        if self.kind == "logitnormal":
            m = p["median"]
            return math.log(m / (1 - m))
        if self.kind == "normal":
            return p["mu"]
        return 0.0

    @property
    def latent_sd(self) -> float:
        p = self.params
        return p.get("sd", p.get("sigma"))

    @property
    def latent_var(self) -> float:
        """Prior variance of the sampled variable: :math:`\\mathrm{sd}^2` for the
        normal kinds (latent scale), :math:`\\sigma^2(1 - 2/\\pi)` for a half-normal."""
        sd = float(self.latent_sd)
        return sd**2 * (1 - 2 / math.pi) if self.kind == "halfnormal" else sd**2

    def create(self, name: str, dims=None):
        """The PyMC variable on the latent scale (call inside a model context)."""
        import numpy as np
        import pymc as pm

        # float64 constants: PyTensor would store float32-exact Python floats as float32
        def f64(x):
            return np.array(x, dtype="float64")

        if self.kind == "halfnormal":
            return pm.HalfNormal(name, sigma=f64(self.params["sigma"]), dims=dims)
        return pm.Normal(name, mu=f64(self.latent_mean), sigma=f64(self.latent_sd), dims=dims)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.kind}({args})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Prior:
        return cls(d["kind"], dict(d["params"]), d.get("source", ""))


@dataclass(frozen=True)
class CovariateEffect:
    r"""A subject-level covariate acting on one structural parameter.

    On the parameter's latent scale (log, or logit for fractions):

    - ``categorical``: :math:`+\beta_\ell` for subjects at level :math:`\ell` (0 at the
      reference level); :math:`e^{\beta_\ell}` is the ratio to the reference;
    - ``power``: :math:`+\beta\,\ln(x / x_\mathrm{ref})`, i.e.
      :math:`\theta = \theta_\mathrm{ref}(x/x_\mathrm{ref})^\beta` (allometry: ``WT``
      with reference 70 and, when fixed, exponent 0.75 or 1).

    Parameters
    ----------
    parameter
        Structural parameter name (``"Cmax"``, ``"CL"`` ...).
    column
        Data column holding the covariate; it must be constant within a subject.
    kind
        ``"categorical"`` or ``"power"``.
    reference
        Reference level (categorical; default: the most frequent level) or value
        (power; default: the median over subjects).
    prior
        Prior of each effect (default ``normal(0, 1)``: a ratio within about
        0.14-7 with 95 % probability).
    fixed
        Power exponent fixed at this value instead of estimated (e.g. 0.75).
    """

    parameter: str
    column: str
    kind: str = "categorical"
    reference: object = None
    prior: Prior = field(
        default_factory=lambda: Prior.normal(0.0, 1.0, "weakly informative: ratio 0.14-7")
    )
    fixed: float | None = None

    def __post_init__(self):
        if self.kind not in ("categorical", "power"):
            raise OptionError(
                f"Covariate effect of {self.column!r} on {self.parameter!r}: kind must be "
                f"'categorical' or 'power', got {self.kind!r}."
            )
        if self.fixed is not None and self.kind != "power":
            raise OptionError("Only a power covariate effect can be fixed.")

    @property
    def name(self) -> str:
        return f"beta_{self.parameter}_{self.column}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prior"] = self.prior.to_dict()
        ref = self.reference
        d["reference"] = ref.item() if hasattr(ref, "item") else ref
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CovariateEffect:
        d = dict(d)
        d["prior"] = Prior.from_dict(d["prior"])
        return cls(**d)

    @classmethod
    def coerce(cls, value) -> CovariateEffect:
        """Accept a CovariateEffect, a dict of its fields, or ``"Cmax~PRODUCT"``."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value) if isinstance(value.get("prior"), dict) else cls(**value)
        if isinstance(value, str) and "~" in value:
            param, col = (s.strip() for s in value.split("~", 1))
            return cls(param, col)
        raise OptionError(
            f"Cannot read covariate effect {value!r}: pass CovariateEffect(parameter, column, "
            "kind), a dict of those fields, or 'parameter~COLUMN' for a categorical effect."
        )
