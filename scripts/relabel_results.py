"""Recompute the `method` label and `method_params` of stored HardwareAware rows from their own stored parameters.

Session 6 (2026-11-28) made HardwareAware's default shapes="confidence"; a row stored before carries a label without
`shapes=`, which would now name that method. This gives such a row shapes="fixed" (the only planner when it was
measured) and writes the label `label()` gives it now. Measured values are never touched; a second run changes
nothing. Run from the repository root: python scripts/relabel_results.py [data/results]
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from dynatree_lib import HardwareAware, label
from dynatree_lib.bench.harness import _fields


def relabel(path: Path) -> int:
    """Rows of `path` whose label or parameters changed (the file is rewritten only then)."""
    text = path.read_text(encoding="utf-8")
    if "HardwareAware(" not in text:
        return 0
    rows = list(csv.DictReader(io.StringIO(text)))
    changed = 0
    for row in rows:
        if not row["method"].startswith("HardwareAware("):
            continue
        params = json.loads(row["method_params"])
        params.setdefault("shapes", "fixed")  # stored before the field existed: the fixed-shape planner
        method = HardwareAware(**params)
        new = label(method), json.dumps(_fields(method), sort_keys=True)
        changed += new != (row["method"], row["method_params"])
        row["method"], row["method_params"] = new
    if changed:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(out.getvalue(), encoding="utf-8")
    return changed


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "data/results")
    for csv_path in sorted(folder.glob("*.csv")):
        print(f"{csv_path}: {relabel(csv_path)} rows relabelled")
