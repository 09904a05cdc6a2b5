"""Command line interface: ``pkpd nca``, ``pkpd simulate``, ``pkpd run`` and ``pkpd demo``.

``pkpd nca``: options and parameter names are those of :func:`pkpd.nca`; run
``pkpd nca --help`` for the list. ``pkpd simulate SPEC -o data.csv``: a virtual trial
from a study specification (:func:`pkpd.study.simulate_trial`). ``pkpd run SPEC --data
DATA -o OUT/``: the study end to end into a report folder (:func:`pkpd.report.run_study`);
``pkpd demo``: study A on its virtual trial, every fit sampled until converged
(``--quick``: a smoke run; ``docs/study/run.md``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

import pandas as pd

from pkpd.errors import OptionError, PKPDError
from pkpd.io import ID_COLUMNS

__all__ = ["main"]


def _interval(text: str) -> tuple[float, float]:
    try:
        a, b = text.split(",")
        return float(a), (math.inf if b.strip().lower() in ("inf", "infinity") else float(b))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"interval {text!r} must be START,END (END may be inf)"
        ) from None


def _blq_value(text: str):
    return text if text in ("keep", "drop") else float(text)


def _nca_parser(sub) -> None:
    p = sub.add_parser(
        "nca",
        help="non-compartmental analysis of a CSV or Parquet event table",
        description="Non-compartmental analysis (PKNCA/WinNonlin rules) of an event table.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("data", nargs="?",
                     help="CSV or Parquet (.parquet) file: a NONMEM-style event table")  # fmt: skip
    src.add_argument("--example", choices=["theoph"], help="use a bundled example dataset")
    p.add_argument("-o", "--output", help="write the results to this file (atomically): "
                   "Parquet for a .parquet name, else CSV")  # fmt: skip
    p.add_argument("--wide", action="store_true", help="one row per profile and interval")
    p.add_argument("--method", default="linlog", choices=["linlog", "linear", "lin-log"])
    p.add_argument(
        "--interval", action="append", type=_interval, metavar="START,END",
        help="NCA interval (repeatable); default: from each dose to the next or to infinity",
    )  # fmt: skip
    p.add_argument("--route", default="extravascular",
                   choices=["extravascular", "iv_bolus", "iv_infusion"])  # fmt: skip
    p.add_argument("--dose", type=float, help="dose amount when the data have no dose records")
    p.add_argument("--dose-time", type=float, default=0.0)
    for key in ("first", "middle", "last"):
        default = "drop" if key == "middle" else "keep"
        p.add_argument(f"--blq-{key}", type=_blq_value, default=default, metavar="RULE",
                       help=f"BLQ rule for {key} BLQ samples: keep, drop or a number "
                       f"(default {default})")  # fmt: skip
    p.add_argument("--min-hl-points", type=int, default=3)
    p.add_argument("--adj-r2-factor", type=float, default=1e-4)
    p.add_argument("--allow-tmax-in-half-life", action="store_true")
    p.add_argument("--impute", choices=["start_conc0", "start_logslope"])
    p.add_argument("--parameters", help="comma-separated PPTESTCD codes to report")
    p.add_argument("--group", action="append", help="extra grouping column (repeatable)")
    p.add_argument("--column", action="append", metavar="ROLE=NAME",
                   help="map a column role, e.g. --column id=USUBJID (repeatable)")  # fmt: skip
    p.add_argument("--time-unit", default="")
    p.add_argument("--conc-unit", default="")
    p.add_argument("--dose-unit", default="")
    p.add_argument("--summary", action="store_true", help="print the summary table too")
    p.add_argument("--encoding", default="utf-8", help="text encoding of DATA (default utf-8)")
    p.add_argument("--pp", metavar="STUDYID",
                   help="write the results as the CDISC SDTM PP domain with this STUDYID "
                   "(with -o)")  # fmt: skip


def _run_nca(args) -> int:
    import pkpd

    columns = {}
    for item in args.column or []:
        role, _, name = item.partition("=")
        columns[role.strip()] = name.strip()
    if args.pp and not args.output:
        raise OptionError("--pp STUDYID writes the PP domain to a file: give -o PP.csv too.")
    text_ids: list[str] = []
    if args.example:
        data = pkpd.load_example(args.example)
        units = {"time": "h", "conc": "mg/L", "dose": "mg"}
    else:
        from pkpd.data.files import read_table_file

        # subject ids are read as text: "0101" and "101" are two subjects
        ids = (*ID_COLUMNS, *([columns["id"]] if columns.get("id") else []))
        data, text_ids = read_table_file(args.data, "data file", id_columns=ids,
                                         encoding=args.encoding)  # fmt: skip
        units = {}
    units.update({k: v for k, v in (("time", args.time_unit), ("conc", args.conc_unit),
                                    ("dose", args.dose_unit)) if v})  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pkpd.PKPDWarning)
        res = pkpd.nca(
            data,
            method=args.method,
            intervals=args.interval,
            route=args.route,
            dose=args.dose,
            dose_time=args.dose_time,
            blq={"first": args.blq_first, "middle": args.blq_middle, "last": args.blq_last},
            min_hl_points=args.min_hl_points,
            adj_r2_factor=args.adj_r2_factor,
            allow_tmax_in_half_life=args.allow_tmax_in_half_life,
            impute=args.impute,
            parameters=args.parameters.split(",") if args.parameters else None,
            groups=args.group,
            columns=columns or None,
            units=units,
        )
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.pp:
        pp = res.to_pp(args.pp, path=args.output)
        print(f"wrote {len(pp)} PP records to {args.output}", file=sys.stderr)
    elif args.output:
        from pkpd.data.files import write_table_file

        table = res.wide if args.wide else res.long  # the long table only when asked for
        write_table_file(table, args.output, text_columns=text_ids)
        print(f"wrote {len(table)} rows to {args.output}", file=sys.stderr)
    else:
        with pd.option_context("display.max_rows", None, "display.width", 200,
                               "display.max_columns", None, "display.float_format", "{:.6g}".format):  # fmt: skip # noqa: E501
            print(res.wide.to_string(index=False))
    if args.summary:
        print(res.summary().to_string(index=False))
    return 0


def _simulate_parser(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a virtual trial from a study specification (TOML)",
        description=(
            "Simulate a virtual trial from a study specification (models/*.toml). Writes the "
            "event table to OUTPUT and, beside it, OUTPUT-stem.subjects.csv (one row per "
            "subject: arm, covariates, endpoints), .ae.csv (adverse-event listing), "
            ".truth.csv (true individual parameters) and .provenance.json (spec hash, seed)."
        ),
    )
    p.add_argument("spec", help="study specification (TOML), e.g. models/ct103a_selinexor.toml")
    p.add_argument("-o", "--output", required=True, help="event table CSV to write (atomically)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--subjects", type=int, help="subjects per arm (default: the spec's arm sizes)")


def _run_simulate(args) -> int:
    from pkpd.study import simulate_trial

    trial = simulate_trial(args.spec, seed=args.seed, subjects=args.subjects)
    paths = trial.write(args.output)
    for row in trial.simulators.to_dict(orient="records"):
        if row["simulator"] != "class":
            print(f"note: {row['part']} ({row['class']}): {row['simulator']}, {row['note']}",
                  file=sys.stderr)  # fmt: skip
    others = ", ".join(str(p) for k, p in paths.items() if k != "events")
    print(
        f"wrote {len(trial.events)} event rows for {len(trial.subjects)} subjects to "
        f"{paths['events']} (and {others}); spec {trial.spec.hash[:12]}, seed {args.seed}",
        file=sys.stderr,
    )
    return 0


def _run_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="analyse a study end to end into a report folder (tables, fits, report.html)",
        description=(
            "Analyse one study from its specification and data: NCA of the PK endpoints, "
            "population and endpoint fits, efficacy and safety tables, figures and a "
            "self-contained report.html. OUT is replaced as a whole, atomically."
        ),
    )
    p.add_argument("spec", help="study specification (TOML), e.g. models/ct103a_selinexor.toml")
    p.add_argument("--data", help="event table CSV from `pkpd simulate` (default: the virtual "
                   "trial of the spec and seed)")  # fmt: skip
    p.add_argument("-o", "--output", required=True, help="output folder (replaced atomically)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fits (and virtual trial)")
    p.add_argument("--quick", action="store_true", help="2 chains x 150 draws: a smoke run "
                   "(default: every fit samples until converged)")  # fmt: skip
    p.add_argument("--budget", help="time budget of each fit, e.g. 600 or 10min "
                   "(default 600 s)")  # fmt: skip
    p.add_argument("--subjects", type=int, help="subjects per arm of the virtual trial")
    p.add_argument("--no-fit", action="store_true", help="skip the Bayesian fits")
    p.add_argument("--joint", action="store_true", help="fit the kinetics and the endpoints "
                   "the objectives map to it as one JointModel (default: sequential)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace OUT even if it is not a "
                   "previous pkpd output (it has no provenance.json)")  # fmt: skip


def _demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="study A (CT103A + selinexor) end to end on its virtual trial",
        description="Run study A end to end on its virtual trial; every fit samples until "
        "converged (--quick: a 2 x 150-draw smoke run).",
    )
    p.add_argument("--quick", action="store_true", help="2 chains x 150 draws: a smoke run")
    p.add_argument("--budget", help="time budget of each fit, e.g. 600 or 10min")
    p.add_argument("-o", "--output", default="pkpd-demo", help="output folder (default pkpd-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace OUT even if it is not a "
                   "previous pkpd output")  # fmt: skip


def _run_run(args, argv) -> int:
    from pkpd.report import run_study

    command = "pkpd " + " ".join(argv if argv is not None else sys.argv[1:])
    res = run_study(args.spec, args.data, args.output, seed=args.seed, quick=args.quick,
                    subjects=args.subjects, fit=not args.no_fit, joint=args.joint,
                    command=command, force=args.force, budget=args.budget)  # fmt: skip
    # a quick run is a smoke run: its fits are not expected to converge
    return 0 if res.converged or args.quick else 1


def _run_demo(args) -> int:
    from pkpd.report import demo

    res = demo(args.output, seed=args.seed, force=args.force, quick=args.quick,
               budget=args.budget)  # fmt: skip
    print(f"open {res.out}/report.html", file=sys.stderr)
    # a quick run is a smoke run: its fits are not expected to converge
    return 0 if res.converged or args.quick else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pkpd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true")
    sub = parser.add_subparsers(dest="command")
    _nca_parser(sub)
    _simulate_parser(sub)
    _run_parser(sub)
    _demo_parser(sub)
    args = parser.parse_args(argv)
    if args.version:
        from pkpd import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "nca":
            return _run_nca(args)
        if args.command == "simulate":
            return _run_simulate(args)
        if args.command == "run":
            return _run_run(args, argv)
        if args.command == "demo":
            return _run_demo(args)
    except PKPDError as err:
        _error(str(err))
        return 2
    except OSError as err:  # writing the output: permission, disk full, a folder in the way
        where = f" {err.filename!r}" if getattr(err, "filename", None) else ""
        _error(f"cannot write or read{where}: {err.strerror or err}. Check the path and space.")
        return 2
    except KeyboardInterrupt:
        _error("interrupted; no partial output was left behind.")
        return 130
    except Exception as err:
        if os.environ.get("PKPD_TRACEBACK"):
            raise
        _error(
            f"unexpected {type(err).__name__}: {err}. This is a bug in pkpd: please report "
            "it with the command (set PKPD_TRACEBACK=1 to see the traceback)."
        )
        return 3
    return 2


def _error(message: str) -> None:
    """One line on stderr, whatever the message holds."""
    print("error: " + " ".join(message.split()), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
