"""Stored results: one CSV per experiment under data/results/, appended atomically, keyed for resume."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd

from ..methods.names import identity
from ..models.provenance import data_dir, write_atomic
from .specs import canonical, row_identities

# A stored configuration: the method's type and parameters (methods.names.identity), the prompt, the length, the
# model pair as run. Rows stored under an older spelling of the same method have the same key (specs.row_identities).
KEY = ("method_type", "method_params", "prompt_id", "max_new_tokens", "pair", "dtype", "device")


def results_dir() -> Path:
    """data/results/ (under $DYNATREE_DATA when set)."""
    return data_dir() / "results"


def results_path(experiment: str, out=None) -> Path:
    if not isinstance(experiment, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", experiment):
        raise ValueError(f"experiment must be a file-name-safe name (letters, digits, _ . -), got {experiment!r}")
    return Path(out if out is not None else results_dir()) / f"{experiment}.csv"


def distinct(df: pd.DataFrame, column: str, width: int | None = None) -> list[str]:
    """The distinct values of a results column as sorted strings, each cut to `width` characters ([] when the column
    is absent or empty): how provenance columns are summarised for a page."""
    if column not in df.columns:
        return []
    return sorted({str(v)[:width] for v in df[column].dropna()})


def read_results(path, keyed: bool = False) -> pd.DataFrame:
    """A results CSV as written by run_benchmark (empty DataFrame when absent), `match_ar` as booleans. A damaged file
    (empty, not text, its last row cut off, a malformed row, a match_ar cell neither True nor False; with `keyed`, as
    resume reads it, a KEY column missing or empty) is refused with its name and what to do: resuming from it would
    measure again and store a configuration twice."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):  # every writer ends a row with a newline: a crash mid-copy, a full disk
        raise damaged(path, "its last row is cut off (the file does not end with a newline)")
    try:
        # Only empty cells are missing values: a prompt id such as "NA" stays a string.
        table = pd.read_csv(io.BytesIO(raw), dtype={"prompt_id": str, "method": str, "pair": str},
                            keep_default_na=False, na_values=[""], encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise damaged(path, f"not a readable CSV ({str(e).strip()})") from None
    if keyed:
        needed = ("method", *KEY[2:])  # the rest of a row's identity is rebuilt from its method (specs)
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise damaged(path, f"it has no {missing} column (a results file keys its rows on {list(needed)})")
        empty = table.index[table[list(needed)].isna().any(axis=1)]
        if len(empty):
            raise damaged(path, f"row(s) {[int(i) + 2 for i in empty[:5]]} (file lines) have empty key cells")
    if "match_ar" in table.columns and table["match_ar"].dtype != bool:  # an empty cell keeps Python bools, or text
        bad = sorted({str(v) for v in table["match_ar"].dropna() if not isinstance(v, bool)})
        if bad:
            raise damaged(path, f"its match_ar column holds {bad[:3]} where True or False belongs")
    return canonical(table)  # method columns in today's spelling (rewritten so on the next append)


def damaged(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}. Restore it from git (git checkout -- FILE) or a copy, or "
                      "move it away to measure afresh; resuming from it would measure again and store rows twice")


def config_key(method, prompt_id, max_new_tokens: int, ident: dict) -> tuple:
    """The KEY of `method` on one prompt and length with the pair `ident` (models.provenance.pair_info)."""
    return (*identity(method), str(prompt_id), int(max_new_tokens), ident["pair"], ident["dtype"], ident["device"])


def _keys(table: pd.DataFrame) -> list[tuple]:
    if table.empty:
        return []
    cols = [table[c] for c in KEY[2:]]
    return [(*m, str(p), int(n), pair, d, dev) for m, p, n, pair, d, dev in zip(row_identities(table), *cols)]


def stored_keys(table: pd.DataFrame) -> set[tuple]:
    return set(_keys(table))


def _append(path: Path, table: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True) if not table.empty else pd.DataFrame(rows)
    write_atomic(path, table.to_csv(index=False))
    return table


def meta_path(path: Path) -> Path:
    return Path(path).with_suffix(".meta.json")


def read_meta(path: Path) -> dict:
    """The `.meta.json` sidecar of results file `path` (a fresh one when absent); a damaged one is refused with its
    name, before anything is measured."""
    sidecar = meta_path(path)
    if not sidecar.exists():
        return {"experiment": Path(path).stem, "sessions": []}
    try:
        meta = json.loads(sidecar.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(sidecar, f"not readable JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sessions"), list):
        raise damaged(sidecar, 'not a results sidecar (a JSON object with a "sessions" list)')
    return meta


def _write_meta(path: Path, session: dict) -> None:
    """Record one session that wrote rows to `path` in its sidecar."""
    meta = read_meta(path)
    meta["sessions"].append(session)
    meta["updated_utc"] = session["date_utc"]
    write_atomic(meta_path(path), json.dumps(meta, indent=2, default=str) + "\n")
