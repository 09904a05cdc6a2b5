"""NCA of dask DataFrames: :func:`pkpd.nca.nca_dask` equals :func:`pkpd.nca` exactly."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")

import pkpd  # noqa: E402
from pkpd import DataError, DoseError, OptionError, PKPDWarning  # noqa: E402
from pkpd.nca import NCADaskResult, nca_dask  # noqa: E402
from pkpd.nca import dask as nca_dask_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SYNC = {"scheduler": "sync"}
TABLES = ("long", "wide", "points", "excluded")
# dask's own Parquet writer, under pandas 3.1
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")
SORT = {
    "long": ["ID", "START", "END", "PPTESTCD"],
    "wide": ["ID", "START", "END"],
    "points": ["ID", "START", "END", "TIME"],
    "excluded": ["row", "START", "END", "reason"],
}


def cohort(copies=6, seed=0, str_ids=False):
    """Theoph replicated to ``12 * copies`` subjects: varied ids in random order, BLQ rows
    (first, middle and last), MDV=1 and missing concentrations, a pre-dose sample."""
    th = pkpd.load_example("theoph")
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(100, 1_000_000), size=12 * copies, replace=False)
    frames = []
    for k in range(copies):
        f = th.copy()
        f["ID"] = ids[k * 12 + f["ID"].to_numpy() - 1]
        obs = f["EVID"] == 0
        f.loc[obs, "DV"] = f.loc[obs, "DV"] * (0.3 + 0.25 * k)
        frames.append(f)
    data = pd.concat(frames, ignore_index=True)
    data["LLOQ"] = 0.5
    obs_rows = np.flatnonzero((data["EVID"] == 0).to_numpy() & (data["TIME"] > 1).to_numpy())
    middle = rng.choice(obs_rows, size=len(obs_rows) // 20, replace=False)
    data.loc[middle, "DV"] = 0.2  # below the LLOQ: BLQ in the middle of a profile
    nan_rows = rng.choice(np.setdiff1d(obs_rows, middle), size=4, replace=False)
    data.loc[nan_rows, "DV"] = np.nan
    mdv_rows = rng.choice(np.setdiff1d(obs_rows, np.r_[middle, nan_rows]), size=3, replace=False)
    data.loc[mdv_rows, "MDV"] = 1
    pre = data[data["ID"] == ids[0]].iloc[[1]].assign(TIME=-0.5, DV=0.7)
    data = pd.concat([pre, data], ignore_index=True)  # observed before the dose
    if str_ids:
        data["ID"] = "S-" + data["ID"].astype(str).str.zfill(7)
    # subjects in random order, each subject's rows in time order
    order = {s: i for i, s in enumerate(rng.permutation(pd.unique(data["ID"])))}
    data = data.assign(_o=data["ID"].map(order)).sort_values(["_o", "TIME"], kind="stable")
    data = data.drop(columns="_o").reset_index(drop=True)
    # the dose before the time-0 sample
    return data


def reference(data, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PKPDWarning)
        return pkpd.nca(data, **options)


def assert_identical(computed: dict, ref, tables=TABLES, groups=()):
    """Same rows and exactly the same values as the in-memory result, after sorting."""
    for name in tables:
        got = computed[name]
        want = getattr(ref, name)
        if name == "wide":  # dask's wide has every parameter the options may report
            extra = [c for c in got.columns if c not in want.columns]
            assert got[extra].isna().all().all(), extra
            got = got.drop(columns=extra)
        if name == "excluded":
            want = want[got.columns]  # in memory, set-aside-only tables order columns apart
        keys = SORT[name] if name == "excluded" else ["ID", *groups, *SORT[name][1:]]
        got = got.sort_values(keys, kind="stable").reset_index(drop=True)
        want = want.sort_values(keys, kind="stable").reset_index(drop=True)
        assert len(got) == len(want), name
        pd.testing.assert_frame_equal(
            got,
            want,
            check_exact=True,
            check_dtype=name != "excluded",
            check_column_type=False,
            obj=name,
        )


@pytest.fixture(scope="module")
def data():
    return cohort()


@pytest.fixture(scope="module")
def ref(data):
    return reference(data)


def test_cohort_has_excluded_points_of_every_kind(ref):
    reasons = set(ref.excluded["reason"])
    assert {"MDV=1: not an observation", "sample before the first dose"} <= reasons
    assert len(reasons) >= 4, reasons  # + BLQ dropped, missing concentration dropped
    assert ref.wide["ID"].nunique() == 72


@pytest.mark.parametrize("npartitions", [1, 7])
def test_identical_to_in_memory_after_shuffle(data, ref, npartitions):
    ddf = dd.from_pandas(data, npartitions=npartitions, sort=False)
    res = nca_dask(ddf)
    assert res.shuffled == (npartitions > 1)
    out = res.compute(tables=TABLES, **SYNC)
    assert_identical(out, ref)
    # excluded rows are positions in the input, as in memory
    assert set(out["excluded"]["row"]) == set(ref.excluded["row"])
    for name in TABLES:  # meta matches the partitions
        assert getattr(res, name).dtypes.to_dict() == out[name].dtypes.to_dict(), name


def test_more_partitions_than_subjects():
    data = cohort(copies=1, seed=3)  # 12 subjects in 40 partitions: most are empty
    many = nca_dask(dd.from_pandas(data, npartitions=2, sort=False), npartitions=40)
    assert many.npartitions == 40
    assert_identical(many.compute(tables=TABLES, **SYNC), reference(data))


def test_string_ids_and_options_pass_through():
    data = cohort(copies=3, seed=1, str_ids=True)
    options = {
        "method": "linear",
        "blq": {"first": "keep", "middle": 0.1, "last": "drop"},
        "intervals": [(0, 12), (0, np.inf)],
        "parameters": ["CMAX", "TMAX", "AUCLST", "LAMZ", "AUCIFO", "AUCINT"],
        "units": {"time": "h", "conc": "mg/L", "dose": "mg"},
        "min_hl_points": 4,
    }
    ref = reference(data, **options)
    res = nca_dask(dd.from_pandas(data, npartitions=4, sort=False), **options)
    out = res.compute(tables=TABLES, **SYNC)
    assert out["long"]["ID"].str.startswith("S-").all()
    assert_identical(out, ref)
    assert set(res.wide.columns) == {"ID", "START", "END", *options["parameters"]}


def test_analytes_and_multiple_doses(data):
    """Grouping columns (DVID) and dose intervals: finite and infinite rows, per analyte."""
    obs = data[data["EVID"] == 0]
    metabolite = obs.assign(DVID=2, DV=obs["DV"] * 0.4)
    subjects = pd.unique(data["ID"])[::2]
    second = data[(data["EVID"] == 1) & data["ID"].isin(subjects)].assign(TIME=12.0)
    both = pd.concat([data.assign(DVID=1), metabolite, second.assign(DVID=1)])
    both = both.sort_values(["ID", "TIME", "EVID"], kind="stable").reset_index(drop=True)
    ref = reference(both)
    assert np.isfinite(ref.wide["END"]).any() and set(ref.wide["DVID"]) == {1, 2}
    res = nca_dask(dd.from_pandas(both, npartitions=5, sort=False))
    out = res.compute(tables=TABLES, **SYNC)
    assert_identical(out, ref, groups=["DVID"])


def test_interval_table_with_subject_rows_and_flags(data):
    subjects = pd.unique(data["ID"])
    intervals = pd.DataFrame(
        {
            "ID": np.r_[subjects, subjects[:10]],
            "START": np.r_[np.zeros(len(subjects)), np.full(10, 2.0)],
            "END": np.r_[np.full(len(subjects), 24.0), np.full(10, np.inf)],
            "CMAX": True,
            "AUCINT": np.r_[np.ones(len(subjects), bool), np.zeros(10, bool)],
            "LAMZ": np.r_[np.zeros(len(subjects), bool), np.ones(10, bool)],
        }
    )
    ref = reference(data, intervals=intervals)
    res = nca_dask(dd.from_pandas(data, npartitions=4, sort=False), intervals=intervals)
    assert list(res.wide.columns) == ["ID", "START", "END", "CMAX", "LAMZ", "AUCINT"]
    assert_identical(res.compute(tables=TABLES, **SYNC), ref)


def test_dose_option_and_concentration_table(data):
    conc = data[data["EVID"] == 0].drop(columns=["AMT", "EVID", "MDV", "CMT"])
    conc = conc[conc["TIME"] >= 0].reset_index(drop=True)
    doses = {s: 320.0 + (s % 7) for s in pd.unique(conc["ID"])}
    ref = reference(conc, dose=doses, route="oral")
    res = nca_dask(dd.from_pandas(conc, npartitions=5, sort=False), dose=doses, route="oral")
    assert_identical(res.compute(tables=("long", "excluded"), **SYNC), ref, ("long", "excluded"))


def test_user_partitioning_kept_when_whole_subjects(data, ref):
    by_subject = dd.from_pandas(data.set_index("ID"), npartitions=5)  # known divisions
    res = nca_dask(by_subject)
    assert not res.shuffled and res.npartitions == 5
    assert_identical(res.compute(tables=("long", "wide"), **SYNC), reference(data), ("long",))
    # partitioned=True: the id column is checked, then the partitions are used as they are
    cut = np.flatnonzero(data["ID"].ne(data["ID"].shift()).to_numpy())[[0, 20, 45]]
    parts = [data.iloc[a:b] for a, b in zip(cut, [*cut[1:], len(data)], strict=True)]
    ddf = dd.concat([dd.from_pandas(p, npartitions=1, sort=False) for p in parts])
    res = nca_dask(ddf, partitioned=True)
    assert not res.shuffled and res.npartitions == 3
    assert_identical(res.compute(tables=("long", "excluded"), **SYNC), ref, ("long", "excluded"))


def test_subject_split_across_partitions_is_an_error(data):
    ddf = dd.from_pandas(data, npartitions=6, sort=False)  # cuts every 40-odd rows
    seen = pd.concat(
        [pd.Series(ddf.get_partition(k)["ID"].unique().compute(**SYNC)) for k in range(6)]
    )
    split = seen[seen.duplicated()].tolist()
    assert split
    with pytest.raises(DataError, match="lie in more than one partition") as info:
        nca_dask(ddf, partitioned=True)
    for subject in split:
        assert f"subject {int(subject)} in partitions" in str(info.value)
    # unchecked (an explicit opt-out), the parts of a subject are analysed apart: here the
    # part without the dose record fails
    with pytest.raises(DoseError, match="no dose record"):
        nca_dask(ddf, partitioned=True, verify=False).long.compute(**SYNC)
    # letting nca_dask repartition avoids the split
    assert not nca_dask(ddf).wide.compute(**SYNC)["ID"].duplicated().any()


def test_partition_with_only_a_dose_record(data):
    lone = pd.DataFrame({"ID": [1], "TIME": [0.0], "DV": [np.nan], "AMT": [320.0],
                         "EVID": [1], "MDV": [1], "CMT": [1]})  # fmt: skip
    ddf = dd.concat(
        [dd.from_pandas(data, npartitions=1), dd.from_pandas(lone.astype(data.dtypes[lone.columns]),
                                                             npartitions=1)]
    )  # fmt: skip
    ref = reference(pd.concat([data, lone], ignore_index=True))
    out = nca_dask(ddf, partitioned=True).compute(**SYNC)
    assert set(out) == {"wide", "excluded"}  # the default: no long table
    assert_identical(out, ref, ("wide", "excluded"))


def test_engine_runs_once_per_partition(data, monkeypatch):
    calls = []

    def counting(frame, **options):
        calls.append(len(frame))
        return reference(frame, **options)

    monkeypatch.setattr(nca_dask_module, "nca", counting)
    res = nca_dask(dd.from_pandas(data, npartitions=4, sort=False))
    res.compute(tables=TABLES, **SYNC)
    assert len(calls) == 4
    assert sum(calls) == len(data)


def test_errors(data):
    ddf = dd.from_pandas(data, npartitions=3, sort=False)
    with pytest.raises(TypeError, match=r"pkpd\.nca"):
        nca_dask(data)
    with pytest.raises(TypeError, match="does not take"):
        nca_dask(ddf, methd="linear")
    with pytest.raises(OptionError, match="AUC method"):
        nca_dask(ddf, method="cubic")  # raised now, not on the workers
    with pytest.raises(OptionError):
        nca_dask(ddf, parameters=["NOPE"])
    bad = data.copy()
    subject = bad.loc[10, "ID"]
    bad.loc[10, "DV"] = -1.0
    res = nca_dask(dd.from_pandas(bad, npartitions=3, sort=False))
    with pytest.raises(DataError, match=rf"subject {subject}.*nca_dask: in partition \d"):
        res.long.compute(**SYNC)


def test_parquet_dataset_round_trip(data, ref, tmp_path):
    source = tmp_path / "profiles"
    source.mkdir()
    subjects = pd.unique(data["ID"])
    for k, chunk in enumerate(np.array_split(subjects, 5)):  # whole subjects per file
        data[data["ID"].isin(chunk)].to_parquet(source / f"part-{k:03d}.parquet", index=False)
    ddf = dd.read_parquet(source)
    res = nca_dask(ddf, partitioned=True)
    # row = position in the dataset (files in order), which is this concatenation:
    flat = ddf.compute().reset_index(drop=True)
    ref = reference(flat)
    assert_identical(res.compute(tables=("long", "points", "excluded"), **SYNC), ref,
                     ("long", "points", "excluded"))  # fmt: skip
    res.to_parquet(tmp_path / "out", compute_kwargs=SYNC)  # default: wide and excluded
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["excluded", "wide"]
    wide = pd.read_parquet(tmp_path / "out" / "wide")
    excluded = pd.read_parquet(tmp_path / "out" / "excluded")
    assert_identical({"wide": wide, "excluded": excluded}, ref, ("wide", "excluded"))
    res.to_parquet(tmp_path / "out2", tables="long", compute_kwargs=SYNC)
    assert_identical({"long": pd.read_parquet(tmp_path / "out2" / "long")}, ref, ("long",))


def test_wide_and_parquet_never_build_the_long_table(data, ref, tmp_path, monkeypatch):
    def refuse(self):
        raise AssertionError("the long table was built")

    monkeypatch.setattr(pkpd.NCAResult, "long", property(refuse))
    res = nca_dask(dd.from_pandas(data, npartitions=3, sort=False))
    assert_identical(res.compute(**SYNC), ref, ("wide", "excluded"))
    res.to_parquet(tmp_path / "out", compute_kwargs=SYNC)
    assert_identical({"wide": pd.read_parquet(tmp_path / "out" / "wide")}, ref, ("wide",))


# ---- pkpd.nca(dask DataFrame) dispatches to nca_dask ------------------------------------
def test_pkpd_nca_of_a_dask_dataframe_equals_in_memory(data, ref):
    res = pkpd.nca(dd.from_pandas(data, npartitions=4, sort=False))
    assert isinstance(res, NCADaskResult) and res.shuffled
    out = res.compute(tables=TABLES, **SYNC)
    assert_identical(out, ref)
    # options pass through, as to pkpd.nca on pandas
    options = {"method": "linear", "parameters": ["CMAX", "AUCLST", "LAMZ"], "min_hl_points": 4}
    res = pkpd.nca(dd.from_pandas(data, npartitions=3, sort=False), **options)
    assert set(res.wide.columns) == {"ID", "START", "END", *options["parameters"]}
    assert_identical(res.compute(tables=("long", "wide"), **SYNC), reference(data, **options),
                     ("long", "wide"))  # fmt: skip


def test_pkpd_nca_takes_the_dask_keywords(data, ref):
    subjects = pd.unique(data["ID"])
    parts = [data[data["ID"].isin(chunk)] for chunk in np.array_split(subjects, 3)]
    ddf = dd.concat([dd.from_pandas(p, npartitions=1, sort=False) for p in parts])
    kept = pkpd.nca(ddf, partitioned=True)  # checked, then used as they are
    assert not kept.shuffled and kept.npartitions == 3
    assert_identical(kept.compute(tables=("long", "wide"), **SYNC), ref, ("long", "wide"))
    reshuffled = pkpd.nca(ddf, partitioned=False, npartitions=5, shuffle_method="tasks")
    assert reshuffled.shuffled and reshuffled.npartitions == 5
    assert_identical(reshuffled.compute(tables=("long",), **SYNC), ref, ("long",))
    split = dd.from_pandas(data, npartitions=6, sort=False)  # cuts through subjects
    with pytest.raises(DataError, match="lie in more than one partition"):
        pkpd.nca(split, partitioned=True)
    unchecked = pkpd.nca(split, partitioned=True, verify=False)  # builds the graph only
    assert not unchecked.shuffled and unchecked.npartitions == 6


def test_pkpd_nca_dask_keywords_with_pandas_input_are_an_error(data):
    with pytest.raises(OptionError, match=r"partitioned= applies only to a dask DataFrame"):
        pkpd.nca(data, partitioned=True)
    with pytest.raises(OptionError, match=r"verify=, npartitions= apply only to a dask"):
        pkpd.nca(data, verify=False, npartitions=4)
    with pytest.raises(TypeError, match="pandas or dask DataFrame, not a Series"):
        pkpd.nca(dd.from_pandas(data, npartitions=2)["DV"])
    # nca_dask keeps rejecting what pkpd.nca takes for every partition only
    with pytest.raises(TypeError, match="does not take"):
        nca_dask(dd.from_pandas(data, npartitions=2), methd="linear")


def test_importing_pkpd_nca_imports_neither_dask_nor_pymc():
    code = (
        "import sys, warnings\n"
        "import pkpd.nca, pkpd\n"
        "for name in ('dask', 'distributed', 'pymc'):\n"
        "    assert name not in sys.modules, name + ' was imported by import pkpd.nca'\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore')\n"
        "    pkpd.nca(pkpd.load_example('theoph'), parameters=['CMAX'])\n"
        "assert 'dask' not in sys.modules, 'dask was imported by pkpd.nca(pandas)'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            memory_limit="1GiB",
        ) as cluster,
        distributed.Client(cluster) as c,
    ):  # fmt: skip
        yield c


def test_distributed_cluster_parquet(data, tmp_path, client):
    distributed = pytest.importorskip("distributed")
    source = tmp_path / "profiles"
    source.mkdir()
    for k, chunk in enumerate(np.array_split(data["ID"].unique(), 4)):
        data[data["ID"].isin(chunk)].to_parquet(source / f"part-{k}.parquet", index=False)
    flat = pd.concat([pd.read_parquet(source / f"part-{k}.parquet") for k in range(4)])
    ref = reference(flat.reset_index(drop=True))
    ddf = dd.read_parquet(source)
    with distributed.get_task_stream(client) as tasks:
        kept = nca_dask(ddf, partitioned=True).compute(tables=TABLES)
    assert_identical(kept, ref)
    ran = {t["worker"] for t in tasks.data if "_analyse_partition" in str(t["key"])}
    assert ran and ran <= set(client.scheduler_info()["workers"])  # on the cluster's workers
    shuffled = nca_dask(ddf, partitioned=False, npartitions=3)  # shuffle through the cluster
    assert shuffled.shuffled and shuffled.npartitions == 3
    assert_identical(shuffled.compute(tables=("long", "excluded")), ref, ("long", "excluded"))
