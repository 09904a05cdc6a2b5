"""Population fit benchmark: ``PopPK`` (closed form) vs the same model as an ODE.

Run from the repository root (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/pk_fit.py                  # full run (about 13 minutes on 2 cores)
    .venv/bin/python benchmarks/pk_fit.py --quick          # smoke test (about 2.5 minutes)
    .venv/bin/python benchmarks/pk_fit.py --json out.json  # also write JSON

What it does:

1. Simulates the 60-subject recovery design of the 2-compartment oral model
   (``PopPK(compartments=2, absorption="first-order", conc_unit="ng/mL")``): 40 mg
   every 24 h from 0 h (4 doses, ``ADDL=3``), then a steady-state 40 mg dose at 168 h
   (``SS=1, II=24``); 13 samples from 0.5 h to 190 h; CL 15 L/h, Vc 80 L, Q 6 L/h,
   Vp 120 L, ka 1.2 /h, BSV 0.25-0.4, residual SD 0.15 on ln C.
2. pkpd: times ``PopPK(...).fit(data, draws=1000, tune=1000, chains=4)`` (nutpie), the
   whole call, and reads its compile and sampling times; then again with the naive
   path's chains, draws and tuning, for a like-for-like ESS/s ratio.
3. Naive: the same statistical model (same priors, non-centred hierarchy, likelihood: a
   subclass that overrides only ``log_prediction``) with the structural prediction from
   a fixed-step RK4 integration of the depot/central/peripheral ODE in ``pytensor.scan``
   (all subjects and both dosing episodes at once). The SS record is approximated by a
   run-in of 20 daily doses before it. Checks the ODE against the closed form on the
   simulated design, then samples it with nutpie, with fewer draws (2 chains x 100 after
   100 tuning: ESS per second is a rate, so the runs compare; one gradient of the ODE
   model costs about 40 ms, so 4 x 1000 after 1000 would take about 1.5 hours).
4. Times a fixed number of log-density gradient evaluations of both compiled models.
5. Prints a Markdown table of both paths side by side and the targets with PASS/FAIL.

This is a benchmark, not a test: it never fails on speed (unless ``--check-target``).

Measured 2026-12-01 on a shared 2-core machine (load average 2.7-3.1 from other jobs;
pkpd at a111a0c with uncommitted changes), seeds (1, 1): pkpd 4 x 1000 after 1000 took
78.1 s wall (18.6 s compilation, 56.3 s sampling), min bulk ESS of the population
parameters 484 (mu_CL), 8.6 ESS/s, 0 divergences, max r_hat 1.006 (z[48, Vc]). The
naive ODE model, 2 x 100 after 100: 627 s wall, 0.039 ESS/s; pkpd at those settings
5.2 ESS/s, i.e. 134x (220x for the run as asked). One logp + gradient: 0.275 ms
(pkpd) vs 45.4 ms (naive), 165x; ESS per gradient is the same for both (1.0-1.2x).
All four targets PASS. The full table and notes are in ``benchmarks/README.md``
(section ``pk_fit.py``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._fitbench import (  # noqa: E402
    _f,
    check_ode,
    environment,
    evaluate_targets,
    finish,
    log,
    naive_run,
    parse_args,
    pkpd_runs,
    print_header,
    print_table,
    print_targets,
)

# ---- design and targets ------------------------------------------------------------------
N_SUBJECTS = 60
TRUTH = {"CL": 15.0, "Vc": 80.0, "Q": 6.0, "Vp": 120.0, "ka": 1.2}  # L/h, L, L/h, L, 1/h
OMEGA = {"CL": 0.3, "Vc": 0.25, "Q": 0.3, "Vp": 0.3, "ka": 0.4}
SIGMA = 0.15
DOSES = [
    {"TIME": 0.0, "AMT": 40.0, "ADDL": 3, "II": 24.0},
    {"TIME": 168.0, "AMT": 40.0, "SS": 1, "II": 24.0},
]
TIMES = [0.5, 1, 2, 4, 8, 24, 72.5, 96, 168.5, 170, 172, 176, 190]
PARAMS = ("CL", "Vc", "Q", "Vp", "ka")

TARGET_WALL_S = 90.0  # pkpd fit, 4 x 1000 draws after 1000 tuning, compilation included
TARGET_RATIO = 20.0  # pkpd ESS/s >= 20 x naive ESS/s
TARGET_RHAT = 1.01
TARGET_LINE = (
    "target (2 cores): pkpd fit <= 90 s wall incl. compilation, ESS/s >= 20x naive, "
    "0 divergences, all r_hat <= 1.01"
)

#: RK4 grid of the naive model: step (h) over each dosing episode's sampled part, step
#: over the steady-state run-in, and the number of run-in doses before an SS record.
STEP = 0.125
RUN_IN_STEP = 0.25
RUN_IN_DOSES = 20
RK4_STABILITY = 2.785  # RK4 is stable for y' = -lambda y while lambda h < 2.785

ODE_TOLERANCE = 1e-3  # max relative error of the ODE solution on the design


def make_model():
    from pkpd.models import PopPK

    # ka itself (TRUTH, OMEGA and the naive ODE model are written in ka)
    return PopPK(
        compartments=2, absorption="first-order", conc_unit="ng/mL", absorption_constraint=None
    )


def simulate(seed: int):
    """The recovery design: ``(data, truth)`` (truth: the individual parameters)."""
    return make_model().simulate(
        N_SUBJECTS,
        doses=DOSES,
        times=TIMES,
        typical=TRUTH,
        omega=OMEGA,
        sigma=SIGMA,
        seed=seed,
        conc_unit="ng/mL",
        return_truth=True,
    )


# ---- the naive model ---------------------------------------------------------------------
def make_naive_class():
    """``PopPK`` (2 compartments, oral) with the prediction from a numerical ODE solution."""
    import pytensor
    import pytensor.tensor as pt

    from pkpd.models import PopPK

    class NaivePopPK(PopPK):
        r"""The 2-compartment oral model written as an ODE and integrated by fixed-step RK4.

        Amounts in the depot, central and peripheral compartments:

        .. math::

            A_d' = -k_a A_d, \quad
            A_c' = k_a A_d - \frac{CL}{V_c} A_c - \frac{Q}{V_c} A_c + \frac{Q}{V_p} A_p,
            \quad A_p' = \frac{Q}{V_c} A_c - \frac{Q}{V_p} A_p

        with each dose added to :math:`A_d` at its time and :math:`C = s A_c / V_c`
        (:math:`s`: the unit factor). A reset (here the ``SS=1`` record) starts a new
        dosing episode from zero amounts; the episodes are integrated side by side in
        one ``scan`` over three state arrays ``A_d, A_c, A_p``, each ``episode x
        subject``, every episode with its own step sequence (zero steps pad the
        shorter one).

        Steady state is **approximated** by a run-in: an ``SS=1`` dose of amount
        :math:`A` and interval :math:`\tau` at :math:`t_{ss}` becomes ``run_in_doses``
        doses :math:`A` at :math:`t_{ss} - k\tau` (:math:`k` = ``run_in_doses``
        ... 1) before the dose at :math:`t_{ss}`, integrated from empty compartments
        with step ``run_in_step``. The truncated tail of the dose train is
        :math:`\propto e^{-\lambda_z k \tau}` of the trough: for this design, 20 doses
        put the worst subject at the true parameters within 1e-3 of the exact
        steady state (10 doses: 2e-2). After the first dose of an episode the step
        is ``step``. Dose and sampling times must fall on grid points (they do for
        this design), so C is read at grid points without interpolation. A depot
        dose does not change :math:`A_c`, so a sample at a dose time reads the same
        C before and after it.

        Supports only what the benchmark design needs: depot doses, no lag, no
        estimated F, the same dose times, II and resets for every subject (amounts
        may differ).
        """

        step = STEP
        run_in_step = RUN_IN_STEP
        run_in_doses = RUN_IN_DOSES

        def ode_plan(self, d, subject, time, key=None) -> dict:
            """Grid, per-episode steps and doses, and grid positions of the samples."""
            if self.compartments != 2 or self.absorption != "first-order":
                raise ValueError("the naive ODE model is the 2-compartment oral model")
            if self.lag or self.bioavailability or d.meta["routes"] != ["depot"]:
                raise ValueError("the naive ODE model supports depot doses only, no lag, no F")
            a = d.arrays
            dose_t, amt = a["depot_time"][1], a["depot_amt"][1]
            ii, epoch = a["depot_ii"][1], a["depot_epoch"][1]
            for arr in (dose_t, ii, epoch, a["reset_time"][1]):
                if not np.array_equal(arr, np.broadcast_to(arr[:1], arr.shape)):
                    raise ValueError("the naive ODE model needs the same dose times everywhere")
            subject = np.asarray(subject)
            time = np.asarray(time, dtype=float)
            reset_t = a["reset_time"][1][subject]
            if key is None:
                obs_e = (reset_t <= time[:, None]).sum(axis=1)
            else:
                reset_k = a["reset_key"][1][subject]
                k = np.asarray(key, dtype=float)[:, None]
                t = time[:, None]
                obs_e = ((reset_t < t) | ((reset_t == t) & (reset_k < k))).sum(axis=1)
            n_episodes = int(obs_e.max()) + 1
            grids, doses, obs_k = [], [], np.zeros(len(time), dtype=np.int64)
            for e in range(n_episodes):
                sel = np.flatnonzero(epoch[0] == e)
                if not len(sel):
                    raise ValueError(f"dosing episode {e} has samples but no dose")
                times_e, ii_e = dose_t[0, sel], ii[0, sel]
                if np.any(ii_e[1:] > 0):
                    raise ValueError("SS doses are supported only as an episode's first dose")
                first = times_e[0]
                sampled = obs_e == e
                end = float(time[sampled].max())
                if time[sampled].min() < first:
                    raise ValueError("a sample before its episode's first dose")
                n_obs_steps = math.ceil((end - first) / self.step - 1e-9)
                grid = first + self.step * np.arange(n_obs_steps + 1)
                dose_times, dose_amt = list(times_e), [amt[:, j] for j in sel]
                if ii_e[0] > 0:  # SS record: run-in of daily (II) doses before it
                    n_run = round(self.run_in_doses * ii_e[0] / self.run_in_step)
                    start = first - self.run_in_doses * ii_e[0]
                    grid = np.r_[start + self.run_in_step * np.arange(n_run), grid]
                    for k in range(self.run_in_doses, 0, -1):
                        dose_times.insert(0, first - k * ii_e[0])
                        dose_amt.insert(0, amt[:, sel[0]])
                dose_e = np.zeros((len(grid), amt.shape[0]))
                for t, amount in zip(dose_times, dose_amt, strict=True):
                    dose_e[self._on_grid(grid, t, "dose")] += amount
                obs_k[sampled] = self._on_grid(grid, time[sampled], "sample")
                grids.append(grid)
                doses.append(dose_e)
            n_steps = max(len(g) for g in grids) - 1
            steps = np.zeros((n_steps, n_episodes))
            dose_arr = np.zeros((n_steps + 1, n_episodes, amt.shape[0]))
            for e, (g, de) in enumerate(zip(grids, doses, strict=True)):
                steps[: len(g) - 1, e] = np.diff(g)
                dose_arr[: len(g), e] = de
            return {"steps": steps, "doses": dose_arr, "obs_k": obs_k, "obs_e": obs_e,
                    "grids": grids}  # fmt: skip

        @staticmethod
        def _on_grid(grid, t, what):
            idx = np.clip(np.searchsorted(grid, np.asarray(t) - 1e-9), 0, len(grid) - 1)
            if not np.allclose(grid[idx], t, rtol=0, atol=1e-9):
                raise ValueError(f"a {what} time is not on the RK4 grid")
            return idx

        def log_prediction(self, theta, extra, d, subject, time, matrix):
            key = d.obs_row + 1.0 if time is d.obs_time else None
            subject = np.asarray(subject)
            plan = self.ode_plan(d, subject, time, key)
            cl, vc, q, vp, ka = (pt.as_tensor(theta[k]) for k in PARAMS)
            k10, k12, k21 = cl / vc, q / vc, q / vp
            doses = pt.as_tensor(plan["doses"])  # (n_steps + 1, episode, subject)
            zero = 0.0 * doses[0] + 0.0 * ka  # (episode, subject)

            def rk4_step(h, dose, ad, ac, ap, ka, k10, k12, k21):
                h = h[:, None]  # (episode, 1)

                def rhs(ad, ac, ap):
                    return (-ka * ad, ka * ad - k10 * ac - k12 * ac + k21 * ap, k12 * ac - k21 * ap)

                y = (ad, ac, ap)
                k1 = rhs(*y)
                k2 = rhs(*(yi + 0.5 * h * ki for yi, ki in zip(y, k1, strict=True)))
                k3 = rhs(*(yi + 0.5 * h * ki for yi, ki in zip(y, k2, strict=True)))
                k4 = rhs(*(yi + h * ki for yi, ki in zip(y, k3, strict=True)))
                ad, ac, ap = (
                    yi + h / 6.0 * (a + 2.0 * b + 2.0 * c + e)
                    for yi, a, b, c, e in zip(y, k1, k2, k3, k4, strict=True)
                )
                return ad + dose, ac, ap

            _, central, _ = pytensor.scan(
                rk4_step,
                sequences=[pt.as_tensor(plan["steps"]), doses[1:]],
                outputs_info=[doses[0] + zero, zero, zero],
                non_sequences=[ka, k10, k12, k21],
                return_updates=False,
            )
            central = pt.concatenate([zero[None], central])  # (n_steps + 1, episode, subject)
            c = central[plan["obs_k"], plan["obs_e"], subject] / vc[subject]
            c = c * d.meta["conc_scale"]
            return pt.log(pt.maximum(c, d.meta["conc_floor"]))

    return NaivePopPK


def ode_error(naive, d, thetas: list[dict]) -> list[float]:
    """Max relative error of the naive ``C`` against the closed form, per ``theta``."""
    import pytensor
    import pytensor.tensor as pt

    inputs = {k: pt.dvector(k) for k in PARAMS}
    out = naive.log_prediction(inputs, {}, d, d.obs_subject, d.obs_time, d.obs_matrix)
    fn = pytensor.function([inputs[k] for k in PARAMS], out, mode="NUMBA")
    closed = make_model()
    errors = []
    for theta in thetas:
        th = {k: np.asarray(theta[k], dtype=float) for k in PARAMS}
        ode = fn(*th.values())
        exact = closed.log_prediction(th, {}, d, d.obs_subject, d.obs_time, d.obs_matrix)
        errors.append(float(np.max(np.abs(np.expm1(ode - exact)))))
    return errors


def fastest_rate(theta: dict) -> float:
    """Largest of ka_i and the fast disposition rate alpha_i (1/h) over subjects."""
    k10 = theta["CL"] / theta["Vc"]
    k12, k21 = theta["Q"] / theta["Vc"], theta["Q"] / theta["Vp"]
    s = k10 + k12 + k21
    alpha = 0.5 * (s + np.sqrt(s**2 - 4.0 * k10 * k21))
    return float(max(np.max(theta["ka"]), np.max(alpha)))


# ---- measurements ------------------------------------------------------------------------
def recovery(dt) -> dict:
    """Per population parameter: truth, posterior median and 90% interval, covered?"""
    post = dt["posterior"].to_dataset()
    truth = {**TRUTH, **{f"omega_{k}": v for k, v in OMEGA.items()}, "sigma": SIGMA}
    out = {}
    for name, value in truth.items():
        x = np.asarray(post[name]).ravel()
        lo, med, hi = np.quantile(x, [0.05, 0.5, 0.95])
        out[name] = {"truth": value, "median": med, "q5": lo, "q95": hi,
                     "covered": bool(lo <= value <= hi)}  # fmt: skip
    return out


def covered(r: dict) -> str:
    """Table cell: how many population parameters have the truth in their 90% interval."""
    rec = r["recovery"]
    return f"{sum(v['covered'] for v in rec.values())} of {len(rec)}"


def with_recovery(dt) -> dict:
    return {"recovery": recovery(dt)}


# ---- report ------------------------------------------------------------------------------
def recovery_table(pk: dict) -> str:
    """Truth against the pkpd posterior (run as asked): median and 90% interval."""
    lines = ["| parameter | truth | median | 5% | 95% | covered |", "|---|---:|---:|---:|---:|:-:|"]
    for name, v in pk["recovery"].items():
        lines.append(
            f"| {name} | {v['truth']:g} | {_f(v['median'])} | {_f(v['q5'])} | {_f(v['q95'])} "
            f"| {'yes' if v['covered'] else 'no'} |"
        )
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        __doc__.split("\n\n")[0],
        argv,
        naive_draws=100,
        quick_maxdepth=5,
        grad_evals=100,
        quick_grad_evals=10,
    )

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    env = environment()
    closed = make_model()
    data, truth = simulate(args.seed)
    d = closed.prepare(data)
    free_names = [rv.name for rv in closed.build_model(d).free_RVs]

    pk, pm_, fit = pkpd_runs(
        make_model, data, d, args, free_names=free_names, t_start=t_start, extra=with_recovery
    )

    naive = make_naive_class()(
        compartments=2, absorption="first-order", conc_unit="ng/mL", absorption_constraint=None
    )
    plan = naive.ode_plan(d, d.obs_subject, d.obs_time, d.obs_row + 1.0)
    n_steps, n_episodes = plan["steps"].shape
    grid_sizes = [len(g) - 1 for g in plan["grids"]]
    log(f"... ODE check: RK4, {n_episodes} episodes of {grid_sizes} steps, vs the closed form")
    thetas, err_truth, err_post = check_ode(ode_error, naive, d, truth, fit, PARAMS)
    stiff = max(fastest_rate(th) for th in thetas[1:]) * max(RUN_IN_STEP, STEP)
    log(f"    done at {time.perf_counter() - t_start:.0f} s")

    nv = naive_run(
        naive,
        d,
        args,
        free_names=free_names,
        t_start=t_start,
        target_accept=naive.default_target_accept,
        extra=with_recovery,
    )

    targets = evaluate_targets(
        pk, pm_, nv, wall_s=TARGET_WALL_S, ratio=TARGET_RATIO, rhat=TARGET_RHAT
    )
    load_end = os.getloadavg()
    n_obs, n_blq = d.n_obs, int(d.obs_blq.sum())
    print_header(
        "PopPK",
        env,
        args.quick,
        f"data: {N_SUBJECTS} subjects, 2-compartment oral, 40 mg q24h x 4 from 0 h and an SS "
        f"dose (II 24 h) at 168 h, {n_obs} samples (0.5-190 h), {n_blq} BLQ; seed "
        f"{args.seed}; sampler seed {args.fit_seed}",
        load_start,
        load_end,
    )
    print(
        f"naive ODE: RK4 in one scan of {n_steps} steps over {n_episodes} dosing episodes side "
        f"by side ({' and '.join(map(str, grid_sizes))} steps): step {STEP:g} h from each "
        f"episode's first dose, steady state approximated by a run-in of {RUN_IN_DOSES} "
        f"doses every II at step {RUN_IN_STEP:g} h before the SS dose. Max relative error of "
        f"C against the closed form at the {n_obs} samples: {err_truth:.2e} at the true "
        f"parameters (tolerance {ODE_TOLERANCE:g}), {err_post:.2e} over {len(thetas) - 1} "
        f"posterior draws of the pkpd fit (largest rate x step there: {stiff:.2g}; RK4 is "
        f"unstable above {RK4_STABILITY:.3g}).\n"
    )
    print_table(
        pk,
        pm_,
        nv,
        env,
        args.naive_maxdepth,
        extra_rows=[("truth in 90% interval (population)", covered)],
        note=" Truth in 90% interval: typical values, omega_* and sigma (11) against the "
        "simulation's values.",
    )
    print("\nRecovery, pkpd run as asked (posterior median and 5-95% interval):\n")
    print(recovery_table(pk))
    print_targets(pk, nv, targets, TARGET_LINE, err_truth, ODE_TOLERANCE)

    return finish(
        args,
        ".pk_fit.",
        env=env,
        data={
            "n_subjects": N_SUBJECTS,
            "n_obs": n_obs,
            "n_blq": n_blq,
            "doses": DOSES,
            "times": TIMES,
            "truth": TRUTH,
            "omega": OMEGA,
            "sigma": SIGMA,
        },
        ode={
            "step": STEP,
            "run_in_step": RUN_IN_STEP,
            "run_in_doses": RUN_IN_DOSES,
            "scan_steps": n_steps,
            "episode_steps": grid_sizes,
            "max_rel_error_truth": err_truth,
            "max_rel_error_posterior": err_post,
            "max_rate_step_posterior": stiff,
        },
        load_start=load_start,
        load_end=load_end,
        pk=pk,
        pm=pm_,
        nv=nv,
        targets=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
