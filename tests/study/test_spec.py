"""Study specifications: the bundled specs load; bad specs fail naming the key path."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path

import pytest

from pkpd.errors import PKPDError
from pkpd.models._priors import Prior
from pkpd.study import SpecError, StudySpec, load_spec, parse_spec, spec_hash
from pkpd.study.spec import UNITS, canonical_unit, time_factor

ROOT = Path(__file__).resolve().parents[2]
STUDY_A = ROOT / "models" / "ct103a_selinexor.toml"
STUDY_B = ROOT / "models" / "bcma_car_nk.toml"


def raw(path=STUDY_A) -> dict:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


# -- the bundled specs ------------------------------------------------------------------
def test_study_a_design():
    spec = load_spec(STUDY_A)
    assert isinstance(spec, StudySpec)
    assert spec.study.time_unit == "day"
    assert [a.name for a in spec.arms] == ["SEL20", "SEL40"]
    assert [a.subjects for a in spec.arms] == [9, 9]
    assert 16 <= spec.n_subjects <= 20  # synopsis: 8-10 per group, 16-20 in all
    for arm, mg in zip(spec.arms, (20.0, 40.0), strict=True):
        car = arm.dose_of("CT103A")
        assert (car.amount, car.unit, car.times) == (1.0e6, "cells/kg", (0.0,))
        sel = arm.dose_of("SELINEXOR")
        assert (sel.amount, sel.unit, sel.interval, sel.count) == (mg, "mg", 7.0, 52)
        assert sel.start >= 30.0  # at least one month after the infusion
        assert sel.stop_at == "progression"
    ck = spec.samplings("CART")
    assert len(ck) == 1 and ck[0].unit == "copies/ug gDNA" and ck[0].lloq == 50.0
    assert ck[0].times[0] >= 1 and ck[0].times[-1] >= 365
    sel = spec.samplings("SELINEXOR")
    assert {s.after for s in sel} == {"SELINEXOR"} and {s.time_unit for s in sel} == {"h"}
    assert {m.class_name for m in spec.models.values()} == {
        "CellularKinetics",
        "SelinexorPK",
        "CytokinePD",
    }
    assert spec.models["selinexor_pk"].time_unit == "h"
    assert set(spec.endpoints) == {"bor", "mrd", "crs", "os", "pfs", "dor"}
    assert spec.endpoints["pfs"].ended_by == "os"
    prior = spec.models["ck"].priors["Tmax"]
    assert isinstance(prior, Prior) and prior.params == {"median": 14.0, "sd": 0.5}
    assert "FUMANBA" in prior.source
    nca = next(o for o in spec.objectives if o.method == "nca")
    assert nca.params["parameters"] == ["CMAX", "TMAX", "AUCINT"]
    assert nca.params["intervals"] == [[0, 28], [0, 90]]
    assert {o.type for o in spec.objectives} >= {"primary", "secondary"}


def test_study_b_design():
    spec = load_spec(STUDY_B)
    assert [a.name for a in spec.arms] == ["DL1", "DL2", "DL3"]
    assert spec.n_subjects == 18
    amounts = [a.dose_of("CARNK").amount for a in spec.arms]
    assert amounts == [1.5e8, 3.0e8, 6.0e8]
    assert all(a.dose_of("CARNK").times == (0.0, 7.0) for a in spec.arms)
    assert {(s.analyte, s.matrix) for s in spec.sampling} >= {("CARNK", "PB"), ("CARNK", "BM")}
    assert {s.analyte for s in spec.sampling} >= {"CRP", "IL6", "IL15", "GZMB", "BMPC"}
    assert spec.endpoints["dlt"].class_name == "BLRM"
    assert spec.models["ck"].options == {"dose_effect": True, "dose_reference": 3.0e8}
    assert spec.models["ck"].truth["matrix_scale"] == {"BM": 0.5}


def test_every_truth_and_prior_has_a_source():
    for path in (STUDY_A, STUDY_B):
        spec = load_spec(path)
        for part in (*spec.models.values(), *spec.endpoints.values()):
            if part.truth:
                assert part.truth["source"].strip()
            for prior in part.priors.values():
                assert prior.source.strip()
        for ae in spec.adverse_events:
            assert ae.source.strip() or ae.from_endpoint


def test_hash_is_sha256_of_canonical_json(tmp_path):
    data = raw()
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert load_spec(STUDY_A).hash == expected == spec_hash(data)
    assert load_spec(STUDY_A).hash == load_spec(STUDY_A).hash
    # comments and blank lines do not change it; a value does
    text = STUDY_A.read_text()
    reformatted = tmp_path / "a.toml"
    reformatted.write_text("# another comment\n\n" + text.replace("\n\n", "\n\n\n"))
    assert load_spec(reformatted).hash == expected
    changed = tmp_path / "b.toml"
    changed.write_text(text.replace("hold_probability = 0.05", "hold_probability = 0.06"))
    assert load_spec(changed).hash != expected
    assert load_spec(STUDY_B).hash != expected


def test_units_vocabulary():
    assert canonical_unit("copies/ug") == "copies/ug gDNA"
    assert canonical_unit("hours") == "h"
    assert canonical_unit("furlongs") is None
    assert time_factor("h", "day") == pytest.approx(1 / 24)
    assert time_factor("week", "day") == 7.0
    kinds = {kind for kind, _ in UNITS.values()}
    assert kinds == {"time", "dose", "level", "covariate"}
    for unit in ("cells", "cells/kg", "mg", "copies/ug gDNA", "cells/uL", "ng/mL", "pg/mL"):
        assert unit in UNITS


# -- bad specs ------------------------------------------------------------------------------
def edit(path, value=None, *, delete=False, base=None):
    """A copy of study A (or ``base``) with the value at ``path`` set or deleted."""
    data = copy.deepcopy(base or raw())
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


BAD = [
    # (change, expected key path in the message, expected text)
    (edit(["study", "folow_up"], 30), "study.folow_up", "Did you mean 'follow_up'"),
    (
        edit(["arms", 0, "doses", 1, "intervall"], 7.0),
        "arms[0].doses[1].intervall",
        "Did you mean 'interval'",
    ),
    (edit(["arms", 0, "doses", 0, "unit"], delete=True), "arms[0].doses[0].unit", "required"),
    (edit(["arms", 0, "doses", 0, "unit"], "cell/kgg"), "arms[0].doses[0].unit", "unknown unit"),
    (edit(["arms", 0, "doses", 1, "unit"], "ng/mL"), "arms[0].doses[1].unit", "level unit"),
    (edit(["sampling", 0, "unit"], "mg"), "sampling[0].unit", "'mg' is a dose unit"),
    (edit(["sampling", 0, "unit"], delete=True), "sampling[0].unit", "a unit is required"),
    (edit(["sampling", 1, "time_unit"], "hrs"), "sampling[1].time_unit", "unknown unit"),
    (edit(["study", "time_unit"], "kg"), "study.time_unit", "covariate unit"),
    (edit(["sampling", 0, "times"], [1, 4, 4, 7]), "sampling[0].times", "increase strictly"),
    (edit(["sampling", 0, "times"], [1, 7, 4]), "sampling[0].times", "position 2"),
    (edit(["sampling", 0, "times"], [-1, 4, 7]), "sampling[0].times", "before the first dose"),
    (edit(["study", "follow_up"], 500), "sampling[0].times", "after the end of follow-up"),
    (edit(["study", "follow_up"], 300), "arms[0].doses[1].count", "after the end of follow-up"),
    (edit(["arms", 1, "subjects"], 0), "arms[1].subjects", "has 0"),
    (edit(["arms", 1, "doses"], []), "arms[1].doses", "no [[arms.doses]]"),
    (
        edit(["models", "ck", "class"], "CellularKinetic"),
        "models.ck.class",
        "Did you mean 'CellularKinetics'",
    ),
    (edit(["endpoints", "pfs", "class"], "WeibulTTE"), "endpoints.pfs.class", "'WeibullTTE'"),
    (edit(["models", "ck", "options"], {"lagg": True}), "models.ck.options.lagg", "'lag'"),
    (
        edit(["models", "ck", "truth", "typical", "Cmx"], 1.0),
        "models.ck.truth.typical.Cmx",
        "Did you mean 'Cmax'",
    ),
    (
        edit(["models", "selinexor_pk", "truth", "effects"], {}),
        "models.selinexor_pk.truth.effects",
        "beta_CL_WT",
    ),
    (edit(["models", "ck", "truth", "source"], delete=True), "models.ck.truth.source", "source"),
    (
        edit(["models", "ck", "priors", "Tmax", "source"], ""),
        "models.ck.priors.Tmax.source",
        "source",
    ),
    (
        edit(["models", "ck", "priors", "Tmax", "kind"], "gamma"),
        "models.ck.priors.Tmax",
        "Unknown prior kind",
    ),
    (edit(["models", "ck", "analyte"], "CAR"), "models.ck.analyte", "Did you mean 'CART'"),
    (
        edit(["endpoints", "bor", "predictors"], ["Cmx"]),
        "endpoints.bor.predictors[0]",
        "unknown column 'Cmx'",
    ),
    (
        edit(["endpoints", "bor", "truth", "b_Cmax"], delete=True),
        "endpoints.bor.truth.b_Cmax",
        "true effect",
    ),
    (
        edit(["endpoints", "pfs", "truth", "b_ARM"], {"SEL80": -0.2}),
        "endpoints.pfs.truth.b_ARM.SEL80",
        "not a level of 'ARM'",
    ),
    (
        edit(["adverse_events", 3, "incidence"], {"SEL20": 0.4, "SEL2O": 0.5}),
        "adverse_events[3].incidence.SEL2O",
        "Did you mean 'SEL20'",
    ),
    (
        edit(["objectives", 6, "parameters"], ["CMAX", "AUC028"]),
        "objectives[6].parameters[1]",
        "AUC028",
    ),
    (edit(["sampling", 1, "occasions"], [1, 60]), "sampling[1].occasions", "has 52 doses"),
    (edit(["arms", 0, "doses", 1, "treatment"], "SELINEXORR"), "treatment", "'SELINEXOR'"),
    (edit(["schema"], 2), "schema", "schema 1"),
    (edit(["study", "follow_up"], "two years"), "study.follow_up", "expected a number"),
    # issue 16: checks that match the schema
    (
        edit(["models", "ck", "options"], {"lag": "false"}),
        "models.ck.options.lag",
        "expected true or false, got the string 'false'",
    ),
    (
        edit(["endpoints", "bor", "truth", "p_reff"], 0.3),
        "endpoints.bor.truth.p_reff",
        "Did you mean 'p_ref'",
    ),
    (edit(["endpoints", "pfs", "truth", "shap"], 1.2), "endpoints.pfs.truth.shap", "'shape'"),
    (
        edit(["endpoints", "bor", "predictors"], [{"column": "Cmax", "reference": -45000.0}]),
        "endpoints.bor.predictors[0].reference",
        "must be > 0",
    ),
    (
        edit(["models", "ck", "truth", "sigma"], 1000.0),
        "models.ck.truth.sigma",
        "overflow",
    ),
    (
        edit(["arms", 0, "doses", 1, "count"], 200),
        "arms[0].doses[1].count",
        "after the end of follow-up",
    ),
    (edit(["arms", 0, "doses", 0, "times"], [0.0, 800.0]), "arms[0].doses[0].times", "follow-up"),
    (edit(["arms", 0, "subjects"], 10**9), "arms[0].subjects", "at most 100000"),
    (edit(["arms", 0, "doses", 1, "count"], 10**7), "arms[0].doses[1].count", "at most 10000"),
]


@pytest.mark.parametrize(("data", "where", "what"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_spec_names_the_key_path(data, where, what):
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    message = str(err.value)
    assert message.startswith(where) or f"{where}:" in message, message
    assert what in message, message
    assert isinstance(err.value, PKPDError)


def test_predose_baseline_allowed_when_flagged():
    data = edit(["sampling", 0, "times"], [-1, 4, 7])
    data["sampling"][0]["allow_predose"] = True
    assert parse_spec(data).sampling[0].times == (-1.0, 4.0, 7.0)


def test_study_b_bad_matrix_scale_and_blrm_doses():
    with pytest.raises(
        SpecError, match=r"models\.ck\.truth\.matrix_scale\.BM: a scale must be > 0"
    ):
        parse_spec(edit(["models", "ck", "truth", "matrix_scale", "BM"], 0.0, base=raw(STUDY_B)))
    with pytest.raises(SpecError, match=r"endpoints\.dlt\.options\.doses"):
        parse_spec(edit(["endpoints", "dlt", "options", "doses"], [1.5e8, -3e8], base=raw(STUDY_B)))


def test_toml_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = 1\n[study\nid = 'x'\n")
    with pytest.raises(SpecError, match=r"bad\.toml: not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="No study specification"):
        load_spec(tmp_path / "missing.toml")


def test_strings_are_never_evaluated(tmp_path):
    # a spec is data: a "number" given as an expression is a type error, not evaluated
    data = edit(["arms", 0, "doses", 0, "amount"], "__import__('os').getcwd()")
    with pytest.raises(SpecError, match=r"arms\[0\]\.doses\[0\]\.amount: expected a number"):
        parse_spec(data)


def test_documented_example_loads_and_simulates(tmp_path):
    from pkpd.study import simulate_trial

    page = (ROOT / "docs" / "study" / "spec.md").read_text()
    block = page.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "demo.toml"
    path.write_text(block)
    spec = load_spec(path)
    assert spec.n_subjects == 12 and list(spec.models) == ["ck"]
    trial = simulate_trial(spec, seed=1)
    obs = trial.events[trial.events["EVID"] == 0]
    assert sorted(set(obs["TIME"])) == [1, 4, 7, 14, 28, 90, 180]


def test_endpoint_options_checked_against_the_class():
    data = edit(["endpoints", "os", "options"], {"time_units": "day"})
    with pytest.raises(SpecError, match=r"endpoints\.os\.options\.time_units: .*'time_unit'"):
        parse_spec(data)


# -- issue 16: the checks above on study B's options, and bounded work -----------------------
def test_study_b_bool_string_and_dose_reference():
    b = raw(STUDY_B)
    with pytest.raises(SpecError, match=r"options\.dose_effect: expected true or false"):
        parse_spec(edit(["models", "ck", "options", "dose_effect"], "true", base=b))
    for value in (-3.0e8, 0.0):
        with pytest.raises(SpecError, match=r"models\.ck\.options\.dose_reference: .*> 0"):
            parse_spec(edit(["models", "ck", "options", "dose_reference"], value, base=b))
    with pytest.raises(SpecError, match=r"endpoints\.dlt\.options\.reference_dose: .*> 0"):
        parse_spec(edit(["endpoints", "dlt", "options", "reference_dose"], -1.0, base=b))
    # a dose after follow-up: the second infusion on day 400 of a 365-day study
    with pytest.raises(SpecError, match=r"arms\[2\]\.doses\[0\]\.times: arm 'DL3'"):
        parse_spec(edit(["arms", 2, "doses", 0, "times"], [0.0, 400.0], base=b))


def test_event_rows_bound_and_subjects_option():
    from pkpd.errors import OptionError
    from pkpd.study import simulate_trial
    from pkpd.study.spec import MAX_EVENT_ROWS

    spec = load_spec(STUDY_B)
    # 18 subjects: per subject 2 infusions + every scheduled sample, counted by hand
    per_subject = 2 + sum(len(s.times) * max(1, len(s.occasions)) for s in spec.sampling)
    assert spec.event_rows() == 18 * per_subject
    assert spec.event_rows(per_arm=10) == 30 * per_subject
    with pytest.raises(OptionError, match=r"subjects=100000 per arm would make .* event rows"):
        simulate_trial(spec, subjects=100_000)
    with pytest.raises(OptionError, match="at most 100000"):
        simulate_trial(spec, subjects=10**9)
    # the same bound on the spec's own sizes
    big = raw(STUDY_B)
    for arm in big["arms"]:
        arm["subjects"] = MAX_EVENT_ROWS // (3 * per_subject) + 1
    with pytest.raises(SpecError, match=r"arms: the virtual trial would have"):
        parse_spec(big)


def test_simulated_overflow_is_a_spec_error():
    from pkpd.study import simulate_trial

    data = edit(["models", "ck", "truth", "typical", "Cmax"], 1e306, base=raw(STUDY_B))
    data["models"]["ck"]["truth"]["sigma"] = 9.0
    with pytest.raises(SpecError, match=r"models\.ck\.truth: .* overflow to infinity"):
        simulate_trial(parse_spec(data), seed=0, subjects=1)
