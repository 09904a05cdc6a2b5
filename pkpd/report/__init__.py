"""Study reports: ``pkpd run SPEC --data DATA -o OUT/`` and ``pkpd demo``.

- :func:`run_study` analyses one study end to end from its specification
  (:func:`pkpd.study.load_spec`) and its data (the event table written by
  ``pkpd simulate``, with its ``.subjects.csv`` and ``.ae.csv`` siblings, or a virtual
  trial simulated from the spec): NCA of the protocol's PK endpoints, the population
  fits the spec names, efficacy and safety endpoints with intervals, longitudinal
  summaries, and a self-contained ``report.html``;
- :func:`load_trial` reads and checks the data against the spec;
- the output folder is written atomically as a whole (:func:`atomic_directory`).

The layout of the output folder is documented in ``docs/study/run.md``.
"""

from pkpd.report._data import load_trial
from pkpd.report._output import atomic_directory
from pkpd.report.run import DEMO_SPEC, RunResult, demo, run_study

__all__ = ["DEMO_SPEC", "RunResult", "atomic_directory", "demo", "load_trial", "run_study"]
