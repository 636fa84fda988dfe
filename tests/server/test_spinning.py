"""server.engine.spinning: the server asks libgomp for its short spin before torch loads, unless the operator chose.

The slowdown it prevents needs a machine busier than its cores (measured in the module's docstring); here the
choice itself is checked, and that the server's entry point reaches it before torch is imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.engine.spinning import SHORT_SPIN, spin_briefly

REPO = Path(__file__).resolve().parents[2]


def test_the_short_spin_is_set_where_nothing_was_chosen():
    environ = {"PATH": "/usr/bin"}
    assert spin_briefly(environ) is True
    assert environ == {"PATH": "/usr/bin", "GOMP_SPINCOUNT": SHORT_SPIN}


@pytest.mark.parametrize("chosen", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}])
def test_an_operators_policy_stays(chosen):
    environ = dict(chosen)
    assert spin_briefly(environ) is False
    assert environ == chosen


def test_the_entry_point_sets_it_before_torch_is_imported():
    # serve() with the process's own environment calls spin_briefly first; torch must not be loaded by then.
    probe = (
        "import sys, server.__main__ as entry\n"
        "seen = []\n"
        "entry.spin_briefly = lambda: seen.append('torch' in sys.modules)\n"
        "try:\n"
        "    entry.serve(['--port', 'not-a-port'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(seen)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[False]", done.stderr
