"""Stored results: one CSV per experiment under data/results/, appended atomically, keyed for resume."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd

from ..methods.names import identity
from .specs import canonical, row_identities

# A stored configuration: the method's type and parameters (methods.names.identity), the prompt, the length, the
# model pair as run. Rows stored under an older spelling of the same method have the same key (specs.row_identities).
KEY = ("method_type", "method_params", "prompt_id", "max_new_tokens", "pair", "dtype", "device")


def results_dir() -> Path:
    """data/results/ (under $DYNATREE_DATA when set)."""
    from .prompts import data_dir

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


def read_results(path) -> pd.DataFrame:
    """A results CSV as written by run_benchmark (empty DataFrame when absent)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    # Only empty cells are missing values: a prompt id such as "NA" stays a string.
    table = pd.read_csv(path, dtype={"prompt_id": str, "method": str, "pair": str}, keep_default_na=False,
                        na_values=[""])
    return canonical(table)  # method columns in today's spelling (rewritten so on the next append)


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
    _write_atomic(path, table.to_csv(index=False))
    return table


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_meta(path: Path, session: dict) -> None:
    meta_path = path.with_suffix(".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"experiment": path.stem, "sessions": []}
    meta["sessions"].append(session)
    meta["updated_utc"] = session["date_utc"]
    _write_atomic(meta_path, json.dumps(meta, indent=2, default=str) + "\n")
