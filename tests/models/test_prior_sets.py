"""Named literature prior sets of CellularKinetics (``prior_set=``): the numbers equal
the published values converted by hand, the choice survives config and save, a spec
selects one, an unknown name is refused."""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path

import pytest

from pkpd.errors import OptionError
from pkpd.models import CellularKinetics
from pkpd.models._priors import Prior, lognormal_from_mean_sd
from pkpd.models.cellular import DEFAULT_PRIOR_SET, PRIOR_SETS, STEIN_2019
from pkpd.study import SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
STUDY_A = ROOT / "models" / "ct103a_selinexor.toml"


def test_lognormal_from_mean_sd_by_hand():
    # CARTITUDE-1 Cmax: mean 48,692, SD 27,174 copies/ug. CV = 0.558079...,
    # 1 + CV^2 = 1.311452..., median = mean / 1.145186... = 42,518.8, omega = 0.520707
    median, omega = lognormal_from_mean_sd(48692.0, 27174.0)
    assert median == pytest.approx(42518.83, abs=0.01)
    assert omega == pytest.approx(0.520707, abs=1e-6)
    # round trip: the log-normal's mean and SD are the inputs
    assert median * math.exp(omega**2 / 2) == pytest.approx(48692.0)
    assert 48692.0 * math.sqrt(math.exp(omega**2) - 1) == pytest.approx(27174.0)
    for bad in ((0.0, 1.0), (1.0, -1.0), (float("nan"), 1.0)):
        with pytest.raises(OptionError):
            lognormal_from_mean_sd(*bad)


def test_default_set_is_cd19_and_unchanged():
    assert DEFAULT_PRIOR_SET == "cd19_car_t"
    default, cd19 = CellularKinetics(), CellularKinetics(prior_set="cd19_car_t")
    assert default.prior_set == "cd19_car_t"
    assert default.priors == cd19.priors
    t = STEIN_2019["typical"]
    assert default.priors["Cmax"].params == {"median": t["Cmax"], "sd": 2.5}
    assert default.priors["Tmax"].params == {"median": t["Tmax"], "sd": 0.7}
    assert default.priors["omega_Cmax"].params == {"sigma": round(1.5 * math.sqrt(0.65), 3)}


def test_bcma_set_numbers_by_hand():
    p = CellularKinetics(prior_set="bcma_car_t").priors
    assert p["Cmax"].kind == "lognormal"
    assert p["Cmax"].params["median"] == pytest.approx(48692 / math.sqrt(1 + (27174 / 48692) ** 2))
    assert p["Cmax"].params["median"] == pytest.approx(42518.8, abs=0.1)
    assert p["Cmax"].params["sd"] == 1.0
    # omega of Cmax from the label CV (0.5207), prior scale 1.5 x omega
    assert p["omega_Cmax"].params == {"sigma": 0.781}
    assert p["Tmax"].params == {"median": 12.7, "sd": 0.3}
    for name in ("Cmax", "omega_Cmax"):
        assert "CARTITUDE-1" in p[name].source and "48,692" in p[name].source
    assert "12.7" in p["Tmax"].source and "FUMANBA-1" in p["Tmax"].source
    # no published BCMA value: the generic prior, saying so
    generic = CellularKinetics().priors
    for name in ("foldx", "alpha", "beta", "FB", "omega_Tmax", "omega_alpha", "sigma"):
        assert p[name].kind == generic[name].kind and p[name].params == generic[name].params
        assert p[name].source.startswith("generic cd19_car_t prior, no published BCMA CAR-T")
        assert generic[name].source in p[name].source
    assert "23.5" in p["alpha"].source  # why the label half-life is not alpha
    assert all(prior.source.strip() for prior in p.values())


def test_bcma_set_follows_options_and_time_unit():
    m = CellularKinetics(prior_set="bcma_car_t", lag=True, dose_effect=True, time_unit="h")
    p = m.priors
    assert p["Tmax"].params["median"] == pytest.approx(12.7 * 24)
    assert p["alpha"].params["median"] == pytest.approx(0.16 / 24)
    assert p["lag_fraction"].source.startswith("generic")
    assert "dose_exponent" in p and "transition_width" not in p
    est = CellularKinetics(prior_set="bcma_car_t", transition_width=None).priors
    assert (
        est["transition_width"]
        == CellularKinetics(transition_width=None).priors["transition_width"]
    )


def test_explicit_priors_override_the_set():
    mine = Prior.lognormal(14.0, 0.5, "FUMANBA-1: CT103A Tmax median ~14 d")
    m = CellularKinetics(prior_set="bcma_car_t", priors={"Tmax": mine})
    assert m.priors["Tmax"] == mine
    assert m.priors["Cmax"] == CellularKinetics(prior_set="bcma_car_t").priors["Cmax"]


@pytest.mark.parametrize("bad", ["bcma_cart", "BCMA", "car_nk", None, 3])
def test_unknown_set_refused_listing_the_known(bad):
    with pytest.raises(OptionError) as err:
        CellularKinetics(prior_set=bad)
    msg = str(err.value)
    assert "prior_set" in msg
    for name in PRIOR_SETS:
        assert repr(name) in msg
    if bad == "bcma_cart":
        assert "Did you mean 'bcma_car_t'" in msg


def test_config_round_trip_keeps_the_set():
    m = CellularKinetics(
        prior_set="bcma_car_t", priors={"Tmax": Prior.lognormal(14.0, 0.5, "FUMANBA-1")}
    )
    cfg = m.config()
    assert cfg["prior_set"] == "bcma_car_t"
    back = CellularKinetics.from_config(copy.deepcopy(cfg))
    assert back.prior_set == "bcma_car_t" and back.priors == m.priors
    assert back.config() == cfg
    # a config saved before prior sets existed: the generic set
    old = {k: v for k, v in CellularKinetics().config().items() if k != "prior_set"}
    assert CellularKinetics.from_config(old).prior_set == "cd19_car_t"


def test_prior_sets_table_lists_every_set_with_sources():
    table = CellularKinetics.prior_sets()
    assert list(table.columns[:2]) == ["prior_set", "description"]
    assert set(table["prior_set"]) == set(PRIOR_SETS)
    assert table["source"].str.strip().astype(bool).all()
    bcma = table[table["prior_set"] == "bcma_car_t"].set_index("parameter")
    assert bcma.loc["Tmax", "prior"] == "lognormal(median=12.7, sd=0.3)"


# -- the study spec ------------------------------------------------------------------------
def _raw() -> dict:
    with open(STUDY_A, "rb") as fh:
        return tomllib.load(fh)


def test_spec_selects_a_prior_set():
    data = _raw()
    data["models"]["ck"]["prior_set"] = "bcma_car_t"
    data["models"]["ck"].pop("priors", None)
    spec = parse_spec(data)
    assert spec.models["ck"].options["prior_set"] == "bcma_car_t"
    m = CellularKinetics(**spec.models["ck"].options, priors=spec.models["ck"].priors)
    assert m.prior_set == "bcma_car_t"
    assert m.priors["Tmax"].params == {"median": 12.7, "sd": 0.3}


def test_bundled_study_a_uses_the_bcma_set():
    spec = load_spec(STUDY_A)
    ck = spec.models["ck"]
    assert ck.options["prior_set"] == "bcma_car_t"
    m = CellularKinetics(**ck.options, priors=ck.priors)
    # Cmax from the set; Tmax the study's own product (CT103A, FUMANBA-1)
    assert m.priors["Cmax"].params["median"] == pytest.approx(42518.8, abs=0.1)
    assert m.priors["Tmax"].params == {"median": 14.0, "sd": 0.5}


@pytest.mark.parametrize(
    ("where", "value", "what"),
    [
        ("ck", "bcma_cart", "Did you mean 'bcma_car_t'"),
        ("ck", "car_nk", "Known: cd19_car_t, bcma_car_t"),
        ("ck", 3, "expected a string"),
        ("il6", "bcma_car_t", "CytokinePD has no named prior sets"),
    ],
)
def test_spec_bad_prior_set_names_the_key_path(where, value, what):
    data = _raw()
    data["models"][where]["prior_set"] = value
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    msg = str(err.value)
    assert msg.startswith(f"models.{where}.prior_set:"), msg
    assert what in msg, msg


def test_spec_prior_set_given_twice():
    data = _raw()
    data["models"]["ck"]["prior_set"] = "bcma_car_t"
    data["models"]["ck"].setdefault("options", {})["prior_set"] = "cd19_car_t"
    with pytest.raises(SpecError, match=r"models\.ck\.prior_set: given twice"):
        parse_spec(data)
