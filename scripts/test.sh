#!/usr/bin/env bash
# The test command: set up the pinned environment, fetch the embedded pair (once), run every test.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not embedded"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_chromium.sh || echo "test.sh: chromium could not be installed; the browser test will skip"
. .venv/bin/activate
python -m dynatree_lib fetch
python -m pytest -q -p no:cacheprovider "$@"
