"""Rename the machine paths that older result files stored (absolute model folders, --out directories) the way
rows are written now (`models.provenance.public_path`): only path text changes, never a measured value.

    python scripts/scrub_paths.py            # rewrite data/results/*.csv and *.meta.json in place
    python scripts/scrub_paths.py --check    # exit 1 and name the files that still hold a machine path
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dynatree_lib.models.provenance import scrub_paths, write_atomic  # noqa: E402


def stored_files(root: Path = REPO / "data") -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".csv", ".json") and p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; fail if a file holds a machine path")
    args = parser.parse_args(argv)
    dirty = []
    for path in stored_files():
        text = path.read_text(encoding="utf-8")
        clean = scrub_paths(text)
        if clean != text:
            dirty.append(path.relative_to(REPO).as_posix())
            if not args.check:
                write_atomic(path, clean)
    print(("still holding machine paths: " if args.check else "rewrote: ") + (", ".join(dirty) or "none"))
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
