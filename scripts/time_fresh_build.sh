#!/usr/bin/env bash
# Times the main job as a new user meets it: `bash scripts/build_book.sh` in a fresh clone of this repository's
# HEAD with an empty model cache (the pair is fetched from PyPI wheels and converted by the job itself). Writes
# data/results/build/fresh_build.json (exit code, wall time, site and largest-page sizes, setup-log text found in
# chapter 1's outputs, provenance) and chapter1_fresh_cache.png (chapter 1 in headless Chromium, 1280x2000).
#
#   bash scripts/time_fresh_build.sh [scratch folder]     # default: a new folder under /tmp, removed afterwards
#
# Run it alone on the machine: the wall time is the measurement.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=${1:-$(mktemp -d)}
mkdir -p "$scratch"
git clone -q "$root" "$scratch/clone"
mkdir -p "$scratch/cache"
start=$(date +%s)
set +e
(cd "$scratch/clone" && DYNATREE_CACHE="$scratch/cache" bash scripts/build_book.sh) > "$scratch/build.log" 2>&1
code=$?
set -e
wall=$(( $(date +%s) - start ))
tail -3 "$scratch/build.log"
out=$root/data/results/build
mkdir -p "$out"
page=$(ls "$scratch"/clone/_build/_build/html/notebooks/01_*.html 2>/dev/null | head -1 || true)
[ -z "$page" ] || chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2000 \
  --screenshot="$out/chapter1_fresh_cache.png" "file://$page" 2>/dev/null
cd "$scratch/clone"  # the clone's library and git state, not the caller's
.venv/bin/python - "$scratch/clone" "$out/fresh_build.json" "$code" "$wall" <<'PY'
import json, os, sys
from pathlib import Path

from dynatree_lib.models.provenance import provenance, write_atomic

clone, path, code, wall = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
html = clone / "_build/_build/html"
pages = sorted(html.rglob("*.html"), key=lambda p: p.stat().st_size)
# What chapter 1 must not show: the fetch's pip log, which the main job prints on the terminal instead.
executed = next((clone / "notebooks/executed").glob("01_*.ipynb"), None)
outputs = "" if executed is None else json.dumps([c.get("outputs", []) for c in json.loads(executed.read_text())["cells"]])
info = provenance()
record = {
    "what": "bash scripts/build_book.sh in a fresh clone of main with an empty model cache (DYNATREE_CACHE pointed at "
            "an empty folder): the embedded pair fetched from PyPI wheels and converted by the main job, then every "
            "chapter executed and rendered; scripts/time_fresh_build.sh",
    **{k: info[k] for k in ("git_commit", "date_utc", "cpu", "cpu_bf16", "torch_version", "transformers_version")},
    "cores": os.cpu_count(),
    "exit_code": code,
    "wall_s": wall,
    "site_bytes": sum(p.stat().st_size for p in html.rglob("*") if p.is_file()) if html.exists() else None,
    "largest_page": str(pages[-1].relative_to(html)) if pages else None,
    "largest_page_bytes": pages[-1].stat().st_size if pages else None,
    "chapter1_setup_text": {name: outputs.count(text) for name, text in (
        ("pip", "pip"), ("Downloading", "Downloading"), ("ANSI escape", "\\u001b["),
        ("WARNING: Location", "WARNING: Location"))},
    "screenshot": "data/results/build/chapter1_fresh_cache.png (headless chromium, 1280x2000 window)",
}
write_atomic(path, json.dumps(record, indent=1) + "\n")
print(json.dumps(record, indent=1))
PY
[ -n "${1:-}" ] || rm -rf "$scratch"
exit "$code"
