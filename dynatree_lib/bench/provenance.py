"""Provenance of result rows: see models/provenance.py (it sits in the bottom layer because cost calibrations,
below the benchmark harness, carry it too)."""
from ..models.provenance import *  # noqa: F401,F403
from ..models.provenance import REPO, _version, cpu_model, git_state, pair_info, provenance, row_provenance, utc_now  # noqa: F401
