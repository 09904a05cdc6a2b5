"""Closed-form structural model solutions, usable from numpy and PyTensor alike."""

from pkpd.structural.cellular import (
    ck_auc,
    ck_conc,
    ck_log_conc,
    ck_peak,
    ck_smooth_log_peak,
    ck_time_below,
    smooth_auc_window,
    smooth_log_profile,
    smooth_peak,
    stein_auc,
    stein_auc_window,
    stein_log_profile,
)

__all__ = [
    "ck_auc",
    "ck_conc",
    "ck_log_conc",
    "ck_peak",
    "ck_smooth_log_peak",
    "ck_time_below",
    "smooth_auc_window",
    "smooth_log_profile",
    "smooth_peak",
    "stein_auc",
    "stein_auc_window",
    "stein_log_profile",
]
