"""QLQ-C30 / QLQ-MY20 scoring against hand calculations from the scoring manual."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pkpd.errors import ColumnError, DataError
from pkpd.study.qol import QLQ_C30_SCALES, score_qlq_c30, score_qlq_my20


def _c30(**answers):
    row = {"ID": 1, "TIME": 0.0, **{f"Q{i}": np.nan for i in range(1, 31)}}
    row.update({f"Q{k}": v for k, v in answers.items()})
    return pd.DataFrame([row])


def test_best_and_worst_answers_give_the_scale_ends():
    best = _c30(**{str(i): 1 for i in range(1, 29)}, **{"29": 7, "30": 7})
    worst = _c30(**{str(i): 4 for i in range(1, 29)}, **{"29": 1, "30": 1})
    b, w = score_qlq_c30(best).iloc[0], score_qlq_c30(worst).iloc[0]
    for s in QLQ_C30_SCALES:
        if s.kind == "functional":
            assert (b[s.code], w[s.code]) == (100.0, 0.0)
        elif s.kind == "symptom":
            assert (b[s.code], w[s.code]) == (0.0, 100.0)
        else:  # global health: 7 = excellent
            assert (b[s.code], w[s.code]) == (100.0, 0.0)


def test_hand_computed_scores_and_the_half_of_items_rule():
    items = _c30(
        **{"1": 1, "2": 2, "3": 1, "4": 2, "5": 2},  # PF: RS 1.6 -> (1 - 0.6/3) 100 = 80
        **{"29": 5, "30": 6},  # QL: RS 5.5 -> 4.5/6 100 = 75
        **{"10": 2, "12": 3},  # FA: 2 of 3 items -> RS 2.5 -> 1.5/3 100 = 50
        **{"15": 2},  # NV: 1 of 2 items (half) -> RS 2 -> 33.33
        **{"21": 3},  # EF: 1 of 4 items, fewer than half -> missing
        **{"6": 4, "7": 3},  # RF: RS 3.5 -> (1 - 2.5/3) 100 = 16.67
    )
    out = score_qlq_c30(items).iloc[0]
    assert out["PF2"] == pytest.approx(80.0)
    assert out["QL2"] == pytest.approx(75.0)
    assert out["FA"] == pytest.approx(50.0)
    assert out["NV"] == pytest.approx(100 / 3)
    assert out["RF2"] == pytest.approx(100 / 6)
    assert np.isnan(out["EF"]) and np.isnan(out["SF"]) and np.isnan(out["DY"])


def test_my20_scales():
    row = {"ID": "A", "TIME": 28.0, **{f"Q{i}": 1 for i in range(31, 51)}}
    row.update({"Q31": 3, "Q32": 2, "Q47": 2, "Q48": 4, "Q49": 3, "Q50": np.nan})
    out = score_qlq_my20(pd.DataFrame([row])).iloc[0]
    # DS: items 31-36 = 3, 2, 1, 1, 1, 1 -> RS 1.5 -> 0.5/3 100
    assert out["MYDS"] == pytest.approx(100 / 6)
    assert out["MYSE"] == 0.0
    assert out["MYBI"] == pytest.approx((1 - 1 / 3) * 100)
    # FP: 4 and 3 answered of 3 -> RS 3.5 -> (1 - 2.5/3) 100
    assert out["MYFP"] == pytest.approx(100 / 6)
    assert (out["ID"], out["TIME"]) == ("A", 28.0)


def test_bad_responses_and_columns_raise():
    with pytest.raises(DataError, match=r"'Q3'.*1-4.*subject 1"):
        score_qlq_c30(_c30(**{"3": 5}))
    with pytest.raises(DataError, match="1-7"):
        score_qlq_c30(_c30(**{"29": 0}))
    with pytest.raises(DataError, match="integer"):
        score_qlq_c30(_c30(**{"3": 2.5}))
    with pytest.raises(ColumnError, match="Q30"):
        score_qlq_c30(_c30().drop(columns="Q30"))


def test_item_columns_mapping():
    items = _c30(**{str(i): 2 for i in range(1, 6)}).rename(columns={"Q1": "PF_WALK"})
    out = score_qlq_c30(items, item_columns={1: "PF_WALK"}).iloc[0]
    assert out["PF2"] == pytest.approx((1 - 1 / 3) * 100)
