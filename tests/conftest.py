"""Test-suite configuration.

Under CI (``CI`` set) hypothesis runs derandomized, so a CI run is
reproducible; locally it explores new examples every run.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
