"""Population fit benchmark: ``CellularKinetics`` (closed form) vs the same model as an ODE.

Run from the repository root (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/ck_fit.py                  # full run (3-5 minutes on 2 cores)
    .venv/bin/python benchmarks/ck_fit.py --quick          # smoke test (under 2 minutes)
    .venv/bin/python benchmarks/ck_fit.py --json out.json  # also write JSON

What it does:

1. Simulates the 40-subject cohort of the Stein 2019 model
   (``CellularKinetics().simulate(40, lloq=50.0, seed=...)``: 12 samples from day 1 to
   day 365, Stein typical values and BSV, residual SD 0.56, LLOQ 50).
2. pkpd: times ``CellularKinetics().fit(data, draws=1000, tune=1000, chains=4)`` (nutpie),
   the whole call, and reads its compile and sampling times; then again with the naive
   path's chains, draws and tuning, for a like-for-like ESS/s ratio.
3. Naive: the same statistical model (same priors, non-centred hierarchy, M3 censored
   likelihood: a subclass that overrides only ``log_prediction``) with the structural
   prediction from a fixed-step RK4 integration of the ODE in ``pytensor.scan``, read at
   the observation times by cubic Hermite interpolation. Checks that the ODE matches the
   closed form on the simulated design, then samples it with nutpie, with fewer draws
   (2 chains x 200 after 200 tuning: ESS per second is a rate, so the runs compare).
4. Times a fixed number of log-density gradient evaluations of both compiled models.
5. Prints a Markdown table of both paths side by side and the targets with PASS/FAIL.

This is a benchmark, not a test: it never fails on speed (unless ``--check-target``).
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
N_SUBJECTS = 40
LLOQ = 50.0

TARGET_WALL_S = 60.0  # pkpd fit, 4 x 1000 draws after 1000 tuning, compilation included
TARGET_RATIO = 20.0  # pkpd ESS/s >= 20 x naive ESS/s
TARGET_RHAT = 1.01
TARGET_LINE = (
    "target (2 cores): pkpd fit <= 60 s wall incl. compilation, ESS/s >= 20x naive, "
    "0 divergences, all r_hat <= 1.01"
)

#: RK4 grid of the naive model: steps over the expansion phase (0 to Tmax_i) and the
#: step length (days) over the contraction phase (Tmax_i to the last observation).
EXPANSION_STEPS = 50
CONTRACTION_STEP = 0.25

ODE_TOLERANCE = 1e-3  # max relative error of the ODE solution on the design


# ---- the naive model ---------------------------------------------------------------------
def make_naive_class():
    """``CellularKinetics`` with the structural prediction from a numerical ODE solution."""
    import pytensor
    import pytensor.tensor as pt

    from pkpd.models import CellularKinetics

    class NaiveCellularKinetics(CellularKinetics):
        r"""The Stein model written as an ODE and integrated by fixed-step RK4.

        Effector and memory cells, infused at :math:`\tau = 0` as
        :math:`E(0) = (1-F_B) C_0`, :math:`M(0) = F_B C_0` with
        :math:`C_0 = C_\mathrm{max}/\mathrm{foldx}`:

        .. math::

            E' = r_E(\tau) E, \quad M' = r_M(\tau) M, \qquad
            r_E = r_M = \rho = \ln(\mathrm{foldx}) / T_\mathrm{max}
            \ (\tau < T_\mathrm{max}), \quad
            r_E = -\alpha,\ r_M = -\beta \ (\tau \ge T_\mathrm{max})

        so that :math:`E(T_\mathrm{max}) = (1-F_B) C_\mathrm{max}` and
        :math:`M(T_\mathrm{max}) = F_B C_\mathrm{max}`, and :math:`C = E + M`. Per
        subject, the grid has ``expansion_steps`` steps from 0 to :math:`T_{\max,i}`
        and ``n2 = ceil(T_end / contraction_step)`` steps from :math:`T_{\max,i}` to
        the last observation time ``T_end`` (the switch falls on a grid point, so RK4
        keeps its order). All subjects are integrated together in one ``scan`` over a
        state array ``(E, M) x subject``; ``ln C`` at the observation times comes from
        cubic Hermite interpolation of E and M between grid points (slopes from the
        right-hand side). One infusion per subject at its first dose time, no lag, no
        dose effect.
        """

        expansion_steps = EXPANSION_STEPS
        contraction_step = CONTRACTION_STEP

        def grid_sizes(self, d) -> tuple[int, int, float]:
            tau = d.obs_time - d.arrays["dose_time"][1][d.obs_subject, 0]
            t_end = float(tau.max())
            return self.expansion_steps, math.ceil(t_end / self.contraction_step), t_end

        def log_prediction(self, theta, extra, d, subject, time, matrix):
            if self.lag or self.dose_effect:
                raise ValueError("the naive ODE model supports neither lag nor dose_effect")
            if np.any(d.arrays["dose_active"][1].sum(axis=1) != 1):
                raise ValueError("the naive ODE model supports one infusion per subject")
            subject = np.asarray(subject)
            tau = np.asarray(time, dtype=float) - d.arrays["dose_time"][1][subject, 0]
            n1, n2, t_end = self.grid_sizes(d)
            cmax, tmax, foldx, alpha, beta, fb = (
                pt.as_tensor(theta[k]) for k in ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")
            )
            rho = pt.log(foldx) / tmax
            h1 = tmax / n1
            h2 = pt.maximum(t_end - tmax, 1.0) / n2
            c0 = cmax / foldx
            y0 = pt.stack([(1.0 - fb) * c0, fb * c0])  # state (E, M) x subject
            rate_expansion = pt.stack([rho, rho])
            rate_contraction = pt.stack([-alpha, -beta])
            expanding = np.r_[np.ones(n1), np.zeros(n2)]

            def rk4_step(exp_phase, y, rate_expansion, rate_contraction, h1, h2):
                rate = pt.switch(exp_phase, rate_expansion, rate_contraction)
                h = pt.switch(exp_phase, h1, h2)

                def rhs(y):
                    return rate * y

                k1 = rhs(y)
                k2 = rhs(y + 0.5 * h * k1)
                k3 = rhs(y + 0.5 * h * k2)
                k4 = rhs(y + h * k3)
                return y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

            path = pytensor.scan(
                rk4_step,
                sequences=[pt.as_tensor(expanding)],
                outputs_info=[y0],
                non_sequences=[rate_expansion, rate_contraction, h1, h2],
                return_updates=False,
            )
            grid = pt.concatenate([y0[None], path])  # (n1 + n2 + 1, 2, n_subjects)

            # position on the grid, interval and cubic Hermite interpolation
            tm = tmax[subject]
            u = pt.switch(tau < tm, tau / h1[subject], n1 + (tau - tm) / h2[subject])
            kf = pt.clip(pt.floor(u), 0, n1 + n2 - 1)
            k = pt.cast(kf, "int64")
            s = u - kf
            in_exp = kf < n1
            h = pt.switch(in_exp, h1[subject], h2[subject])
            rate = pt.switch(
                in_exp, rate_expansion[:, subject], rate_contraction[:, subject]
            )  # (2, n_obs)
            y_lo = grid[k, :, subject].T  # (2, n_obs)
            y_hi = grid[k + 1, :, subject].T
            y = (
                (2 * s**3 - 3 * s**2 + 1) * y_lo
                + (s**3 - 2 * s**2 + s) * h * rate * y_lo
                + (-2 * s**3 + 3 * s**2) * y_hi
                + (s**3 - s**2) * h * rate * y_hi
            )
            log_c = pt.log(y[0] + y[1])
            return log_c + extra["log_matrix_scale"][np.asarray(matrix)]

    return NaiveCellularKinetics


def ode_error(naive, d, thetas: list[dict]) -> list[float]:
    """Max relative error of the naive ``C`` against the closed form, per ``theta``."""
    import pytensor
    import pytensor.tensor as pt

    from pkpd.models import CellularKinetics

    names = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")
    inputs = {k: pt.dvector(k) for k in names}
    extra = {"log_matrix_scale": pt.zeros(len(d.matrices)), "dose_exponent": 0.0}
    out = naive.log_prediction(inputs, extra, d, d.obs_subject, d.obs_time, d.obs_matrix)
    fn = pytensor.function([inputs[k] for k in names], out, mode="NUMBA")
    closed = CellularKinetics()
    extra_np = {"log_matrix_scale": np.zeros(len(d.matrices)), "dose_exponent": 0.0}
    errors = []
    for theta in thetas:
        ode = fn(*(np.asarray(theta[k], dtype=float) for k in names))
        exact = closed.log_prediction(theta, extra_np, d, d.obs_subject, d.obs_time, d.obs_matrix)
        errors.append(float(np.max(np.abs(np.expm1(ode - exact)))))
    return errors


# ---- main --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        __doc__.split("\n\n")[0],
        argv,
        naive_draws=200,
        quick_maxdepth=6,
        grad_evals=200,
        quick_grad_evals=20,
    )

    from pkpd.models import CellularKinetics

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    env = environment()
    closed = CellularKinetics()
    data, truth = closed.simulate(N_SUBJECTS, lloq=LLOQ, seed=args.seed, return_truth=True)
    d = closed.prepare(data)
    free_names = [rv.name for rv in closed.build_model(d).free_RVs]

    pk, pm_, fit = pkpd_runs(
        CellularKinetics, data, d, args, free_names=free_names, t_start=t_start
    )

    naive = make_naive_class()()
    n1, n2, t_end = naive.grid_sizes(d)
    log(f"... ODE check: RK4 grid {n1} + {n2} steps against the closed form")
    names = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")
    thetas, err_truth, err_post = check_ode(ode_error, naive, d, truth, fit, names)
    # RK4 is stable for y' = -alpha y while alpha h < 2.785: the largest alpha_i h of the draws
    stiff = max(
        float(np.max(th["alpha"] * np.maximum(t_end - th["Tmax"], 1.0) / n2)) for th in thetas[1:]
    )
    log(f"    done at {time.perf_counter() - t_start:.0f} s")

    nv = naive_run(naive, d, args, free_names=free_names, t_start=t_start, target_accept=0.8)

    targets = evaluate_targets(
        pk, pm_, nv, wall_s=TARGET_WALL_S, ratio=TARGET_RATIO, rhat=TARGET_RHAT
    )
    load_end = os.getloadavg()
    n_obs, n_blq = d.n_obs, int(d.obs_blq.sum())
    print_header(
        "CellularKinetics",
        env,
        args.quick,
        f"data: {N_SUBJECTS} subjects, {n_obs} samples (days 1-365), {n_blq} BLQ "
        f"(LLOQ {LLOQ:g}), seed {args.seed}; sampler seed {args.fit_seed}",
        load_start,
        load_end,
    )
    print(
        f"naive ODE: RK4, {n1} steps over 0-Tmax_i and {n2} over Tmax_i-{t_end:g} d "
        f"(step <= {CONTRACTION_STEP} d), Hermite interpolation. Max relative error of C "
        f"against the closed form at the {n_obs} samples: {err_truth:.2e} at the true "
        f"parameters (tolerance {ODE_TOLERANCE:g}), {err_post:.2e} over {len(thetas) - 1} "
        f"posterior draws of the pkpd fit (largest alpha_i x step there: {stiff:.2g}; RK4 is "
        "unstable above 2.79).\n"
    )
    print_table(pk, pm_, nv, env, args.naive_maxdepth)
    print_targets(pk, nv, targets, TARGET_LINE, err_truth, ODE_TOLERANCE)

    return finish(
        args,
        ".ck_fit.",
        env=env,
        data={"n_subjects": N_SUBJECTS, "n_obs": n_obs, "n_blq": n_blq, "lloq": LLOQ},
        ode={
            "expansion_steps": n1,
            "contraction_steps": n2,
            "t_end": t_end,
            "max_rel_error_truth": err_truth,
            "max_rel_error_posterior": err_post,
            "max_alpha_step_posterior": stiff,
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
