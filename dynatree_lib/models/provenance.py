"""Where a number came from: code version, software, hardware, settings and time, attached to every result row; and
where and how the project's files are written (data_dir, write_atomic).

Results are only comparable when their provenance matches, and a resumed sweep can mix processes (even commits),
so each row carries its own copy rather than trusting one header for the whole file.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
# Results written by the benchmarks themselves must not make the tree look dirty.
_NOT_SOURCE = (":(exclude)data/results",)


def data_dir() -> Path:
    """The data/ folder: $DYNATREE_DATA if set, else data/ next to dynatree_lib/ in a checkout."""
    env = os.environ.get("DYNATREE_DATA")
    return Path(env) if env else REPO / "data"


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """A temporary file beside `path` for the block to write (by any writer: pandas, torch.save, a stream); synced to
    disk and renamed over `path` when the block ends, removed when it fails. A reader, or a writer killed at any
    moment, sees the old file or the new one, never half of one. Temporary names: `.<name>.<random>.tmp`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the data on disk before the rename makes it visible (a power cut keeps one or other)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically (atomic_path): every file the project writes goes through
    here or through atomic_path."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """Commit hash, whether tracked or untracked source differs from it, and which files do."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": None, "git_changes": []}
    status = _git("status", "--porcelain", "--", ".", *_NOT_SOURCE) or ""
    changes = [line for line in status.splitlines() if line.strip()]
    return {"git_commit": commit, "git_dirty": bool(changes), "git_changes": changes}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def pair_info(pair) -> dict:
    """Model names, dtype, device and parameter bytes of a ModelPair (the draft counted once if it is the target)."""
    models = [pair.target] + ([pair.draft] if pair.draft is not None and pair.draft is not pair.target else [])
    from .quant import model_memory_bytes  # parameters and buffers: int8/int4 weights are buffers

    param_bytes = sum(model_memory_bytes(m) for m in models)
    return {
        "pair": pair.name or f"{_model_name(pair.target)}/{_model_name(pair.draft)}",
        "target_model": _model_name(pair.target),
        "draft_model": _model_name(pair.draft),
        "dtype": str(pair.dtype).removeprefix("torch."),
        "device": str(pair.device),
        "param_bytes": param_bytes,
    }


def _model_name(model) -> str | None:
    if model is None:
        return None
    config = model.config
    name = getattr(config, "name_or_path", None)
    return public_path(name) if name else f"{config.model_type}-{config.num_hidden_layers}L"


def provenance(pair=None, params: dict | None = None) -> dict:
    """Everything needed to tell whether two results are comparable. JSON-serialisable."""
    from .quant import native_bf16_matmul

    info = {
        "date_utc": utc_now(),
        **git_state(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": package_version("transformers"),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_bf16": native_bf16_matmul(),  # the same model name covers CPUs with and without bf16 arithmetic
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "argv": scrub_paths(" ".join(sys.argv)),
        "params": json.loads(scrub_paths(json.dumps(params or {}, default=str))),
    }
    if pair is not None:
        info.update(pair_info(pair))
    return info


# What every stored result file records (in its rows or its sidecar), each under one of these names.
RECORDED = {"commit": ("git_commit",), "dtype": ("dtype",), "torch": ("torch_version",),
            "transformers": ("transformers_version",), "hardware": ("cpu", "gpu"), "date": ("date_utc",)}


def write_table(df, path, session: dict) -> Path:
    """The writer of every result table (a pandas DataFrame): `session` (provenance()) on each row where the table
    has no column of that name (its params only in the sidecar: repeated on a full grid's 28,200 rows they were half
    of the file) and whole in the `<name>.meta.json` sidecar, both written atomically. A RECORDED field the session
    lacks but the rows hold one value of (a grid's dtype, from its units) goes into the sidecar too; a table that
    would record none of some RECORDED field is refused."""
    path = Path(path)
    session = dict(session)
    for names in RECORDED.values():
        for name in names:
            if session.get(name) is None and name in df.columns and df[name].nunique() == 1:
                session[name] = df[name].iloc[0]
    missing = [field for field, names in RECORDED.items()
               if not any(session.get(n) is not None or n in df.columns for n in names)]
    if missing:
        raise ValueError(f"{path}: its provenance lacks {missing}: give provenance() the pair that ran, or rows "
                         "that record it")
    row = {k: v for k, v in row_provenance(session).items() if k != "params"}
    write_atomic(path, df.assign(**{k: v for k, v in row.items() if k not in df.columns}).to_csv(index=False))
    write_atomic(path.with_suffix(".meta.json"), json.dumps(session, indent=2, default=str) + "\n")
    return path


def row_provenance(info: dict) -> dict:
    """The flat subset of `provenance()` that goes into every result row (the file list stays in the sidecar)."""
    skip = {"git_changes", "argv", "params", "platform"}
    row = {k: v for k, v in info.items() if k not in skip}
    row["params"] = json.dumps(info.get("params") or {}, sort_keys=True, default=str)
    return row


def repo_relative(path) -> str:
    """`path` as published pages and stored rows name it: relative to the repository (e.g. data/results/goal.csv),
    never a machine's absolute path; a file outside the repository is named by its file name alone."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return path.name


# The top-level folders of a checkout: a path through one of them is named from there on, whichever machine, clone or
# worktree wrote it (/tmp/bench/data/results and /work/main/data/results are both data/results).
_CHECKOUT_TOP = ("data", "benchmarks", "notebooks", "scripts", "dynatree_lib", "book", "tests")
# An absolute path of two or more components that does not continue a word, a number or a relative path
# ("HumanEval/10", "B=1/2/3" and "tok/s" are not paths).
_ABSOLUTE = re.compile(r"(?<![\w.~/-])/(?:[\w.@+-]+/)+[\w.@+-]+")


def public_path(path) -> str:
    """How stored rows and pages name `path`: a relative path or a hub id as given; an absolute path inside a checkout
    of this repository from the checkout's top-level folder on (data/results); any other (a model in the cache) by
    its last component. Never a machine's absolute path, and the same on every machine."""
    text = str(path)
    if not text.startswith("/"):
        return text
    try:  # this checkout first: a checkout that itself lives under a folder named like a top folder is named right
        return Path(text).relative_to(REPO).as_posix()
    except ValueError:
        pass
    parts = Path(text).parts
    for i, part in enumerate(parts[1:], start=1):
        if part in _CHECKOUT_TOP:
            return Path(*parts[i:]).as_posix()
    return parts[-1]


def scrub_paths(text: str) -> str:
    """`text` with every absolute path in it replaced by its `public_path`."""
    return _ABSOLUTE.sub(lambda m: public_path(m.group(0)), text)
