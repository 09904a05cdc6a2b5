"""The pkpd dataset: a NONMEM-style event table in a pandas DataFrame."""

from pkpd.data.examples import load_example
from pkpd.data.readers import read_adnca, read_nonmem, read_sdtm
from pkpd.data.roles import ROLE_ALIASES, Roles, resolve_roles
from pkpd.data.table import EventTable, prepare_event_table

__all__ = [
    "ROLE_ALIASES",
    "EventTable",
    "Roles",
    "load_example",
    "prepare_event_table",
    "read_adnca",
    "read_nonmem",
    "read_sdtm",
    "resolve_roles",
]
