"""Render the figures of the two study walkthroughs (docs/study/walkthrough-*.md).

Runs ``pkpd run`` on each study's virtual trial (quick mode, fixed seeds) and copies
the report's figures into ``docs/study/figures/<study>/`` as PNG files::

    .venv/bin/python docs/study/make_figures.py            # both studies, ~5 min on 2 cores

The figures are the report's own (base64 PNG in ``report.html``), so the walkthroughs
show exactly what ``pkpd run`` writes.
"""

from __future__ import annotations

import base64
import re
import sys
import tempfile
from pathlib import Path

from pkpd.io import atomic_path
from pkpd.report import run_study

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STUDIES = {
    "study-a": ("ct103a_selinexor.toml", {"seed": 0, "subjects": None}),
    "study-b": ("bcma_car_nk.toml", {"seed": 1, "subjects": 3}),
}
IMG = re.compile(r"<img\b[^>]*>")
SRC = re.compile(r'src="data:image/png;base64,([^"]+)"')
ALT = re.compile(r'alt="([^"]*)"')


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("&#x27;", "")).strip("-")[:60]


def main() -> int:
    for name, (spec, opts) in STUDIES.items():
        out_dir = HERE / "figures" / name
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            res = run_study(ROOT / "models" / spec, None, Path(tmp) / "out", quick=True, **opts)
            html = (res.out / "report.html").read_text()
        for tag in IMG.findall(html):
            data, alt = SRC.search(tag), ALT.search(tag)
            if data is None or alt is None:
                continue
            data, alt = data.group(1), alt.group(1)
            with atomic_path(out_dir / f"{slug(alt)}.png") as path:
                path.write_bytes(base64.b64decode(data))
            print(f"{name}: {slug(alt)}.png  ({alt})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
