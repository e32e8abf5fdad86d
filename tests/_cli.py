"""Several ``roadnet`` command lines in one fresh interpreter, with what each imported.

One process for a list of refusals costs one start-up instead of one per case, and shows
which heavy libraries each command had imported by the time it answered: a command whose
arguments are refused before its heavy imports leaves them out of ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

#: Libraries that take seconds to import; argument checks must not wait for them.
HEAVY = ("dask", "distributed", "xarray", "rasterio", "geopandas", "tensorflow", "keras")

_DRIVER = """
import contextlib, io, json, sys
from roadnet.pipeline import cli
cases, watched = json.loads(sys.argv[1]), json.loads(sys.argv[2])
answers = []
for args in cases:
    sys.argv = ["roadnet", *args]
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err):
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code
    heavy = [m for m in watched if m in sys.modules]
    answers.append({"code": code, "stderr": err.getvalue(), "heavy": heavy})
print("ANSWERS", json.dumps(answers))
"""


@dataclass(frozen=True)
class Answer:
    """One command line's exit code, standard error, and the heavy modules imported by then."""

    code: int
    stderr: str
    heavy: list[str]


def run_in_one_process(cases: list[list[str]], *, timeout: float = 300) -> list[Answer]:
    """Run each argument list through ``roadnet``'s entry point, in order, in one process."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(cases), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    marker = [line for line in proc.stdout.splitlines() if line.startswith("ANSWERS ")]
    assert marker, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [Answer(**a) for a in json.loads(marker[-1].removeprefix("ANSWERS "))]
