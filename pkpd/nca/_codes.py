"""Integer codes shared by the numba kernels and the pandas front-end.

Kernels write small integers (no strings in nopython code); the front-end
turns them into the texts below. One table, so the two never drift apart.
"""

# --- methods ------------------------------------------------------------------
METHOD_LINEAR = 0
METHOD_LINLOG = 1  # linear-up / log-down
METHOD_LIN_LOG_TMAX = 2  # linear to tmax, log after

METHODS = {"linear": METHOD_LINEAR, "linlog": METHOD_LINLOG, "lin-log": METHOD_LIN_LOG_TMAX}
METHOD_ALIASES = {
    "lin up/log down": "linlog",
    "linear-up/log-down": "linlog",
    "linuplogdown": "linlog",
    "lin_up_log_down": "linlog",
    "linear": "linear",
    "lin-log": "lin-log",
    "linlog_tmax": "lin-log",
}

# --- routes -------------------------------------------------------------------
ROUTE_EXTRAVASCULAR = 0
ROUTE_IV_BOLUS = 1
ROUTE_IV_INFUSION = 2
ROUTES = {
    "extravascular": ROUTE_EXTRAVASCULAR,
    "iv_bolus": ROUTE_IV_BOLUS,
    "iv_infusion": ROUTE_IV_INFUSION,
}
ROUTE_ALIASES = {
    "ev": "extravascular",
    "oral": "extravascular",
    "po": "extravascular",
    "sc": "extravascular",
    "extravascular": "extravascular",
    "iv": "iv_bolus",
    "bolus": "iv_bolus",
    "iv bolus": "iv_bolus",
    "iv_bolus": "iv_bolus",
    "intravascular": "iv_bolus",
    "infusion": "iv_infusion",
    "iv infusion": "iv_infusion",
    "iv_infusion": "iv_infusion",
}

# --- BLQ rule actions -----------------------------------------------------------
BLQ_KEEP = 0  # keep as concentration 0
BLQ_DROP = 1
BLQ_VALUE = 2  # replace by a number
BLQ_BY_POSITION = 0  # first / middle / last
BLQ_BY_TMAX = 1  # before_tmax / after_tmax

NA_DROP = 0
NA_VALUE = 1

IMPUTE_NONE = 0
IMPUTE_CONC0 = 1  # concentration 0 at the interval start
IMPUTE_LOGSLOPE = 2  # C0 back-extrapolated (IV bolus)
IMPUTE = {None: IMPUTE_NONE, "start_conc0": IMPUTE_CONC0, "start_logslope": IMPUTE_LOGSLOPE}

# --- reasons (why a value is missing, or a caveat) --------------------------------
R_OK = 0
R_NO_DATA = 1
R_ONE_POINT = 2
R_ALL_BLQ = 3
R_START_BEFORE_FIRST = 4
R_TOO_FEW_HL_POINTS = 5
R_NO_TERMINAL_PHASE = 6
R_ROUTE = 7
R_INFINITE_END = 8
R_NO_SAMPLE_AT_END = 9
R_LAMBDA_Z = 10
R_DOSE = 11
R_AUC_NOT_POSITIVE = 12
R_CMIN_NOT_POSITIVE = 13
R_MANUAL_HL_POINTS = 14
R_DEPENDENCY = 15
R_NO_C0 = 16
R_NO_REFERENCE = 17

REASONS = {
    R_OK: "",
    R_NO_DATA: "no concentrations in the interval",
    R_ONE_POINT: "only one concentration in the interval",
    R_ALL_BLQ: "all concentrations BLQ",
    R_START_BEFORE_FIRST: (
        "interval start is before the first sample (pass impute='start_conc0' or "
        "'start_logslope' to impute it)"
    ),
    R_TOO_FEW_HL_POINTS: "too few points after tmax for lambda_z (min_hl_points)",
    R_NO_TERMINAL_PHASE: (
        "no valid terminal phase: no window with lambda_z > 0 within adj_r2_factor of the "
        "best adjusted R2"
    ),
    R_ROUTE: "not applicable to this route",
    R_INFINITE_END: "needs a finite interval end (dosing interval tau)",
    R_NO_SAMPLE_AT_END: "no sample at the end of the interval",
    R_LAMBDA_Z: "lambda_z not estimable",
    R_DOSE: "dose unknown or zero",
    R_AUC_NOT_POSITIVE: "AUC is zero or not estimable",
    R_CMIN_NOT_POSITIVE: "Cmin is zero (BLQ)",
    R_MANUAL_HL_POINTS: "fewer than 2 usable points manually selected for lambda_z",
    R_DEPENDENCY: "a parameter it depends on is not estimable",
    R_NO_C0: "C0 not estimable: no positive concentration after the dose",
    R_NO_REFERENCE: "no earlier interval of the same length to compare with",
}

# --- per-sample flags -------------------------------------------------------------
P_USED = 0
P_NA_DROPPED = 1
P_NA_REPLACED = 2
P_BLQ_KEPT = 3
P_BLQ_DROPPED_FIRST = 4
P_BLQ_DROPPED_MIDDLE = 5
P_BLQ_DROPPED_LAST = 6
P_BLQ_DROPPED_BEFORE_TMAX = 7
P_BLQ_DROPPED_AFTER_TMAX = 8
P_BLQ_REPLACED = 9

POINT_FLAGS = {
    P_USED: "",
    P_NA_DROPPED: "missing concentration dropped (conc_na='drop')",
    P_NA_REPLACED: "missing concentration replaced (conc_na)",
    P_BLQ_KEPT: "BLQ kept as 0",
    P_BLQ_DROPPED_FIRST: "BLQ dropped (rule 'first')",
    P_BLQ_DROPPED_MIDDLE: "BLQ dropped (rule 'middle')",
    P_BLQ_DROPPED_LAST: "BLQ dropped (rule 'last')",
    P_BLQ_DROPPED_BEFORE_TMAX: "BLQ dropped (rule 'before_tmax')",
    P_BLQ_DROPPED_AFTER_TMAX: "BLQ dropped (rule 'after_tmax')",
    P_BLQ_REPLACED: "BLQ replaced by a number (blq rule)",
}
POINT_EXCLUDED = frozenset(
    {
        P_NA_DROPPED,
        P_BLQ_DROPPED_FIRST,
        P_BLQ_DROPPED_MIDDLE,
        P_BLQ_DROPPED_LAST,
        P_BLQ_DROPPED_BEFORE_TMAX,
        P_BLQ_DROPPED_AFTER_TMAX,
    }
)
