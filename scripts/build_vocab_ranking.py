"""Build the stored draft-vocabulary ranking: token counts over Python's standard library source.

    python scripts/build_vocab_ranking.py [--out data/vocab] [--tokenizer PATH]

Counts every token of the standard library's .py files (the running Python's, `sysconfig.get_paths()["stdlib"]`)
with the embedded pair's tokenizer, leaving out: site-packages; test suites (test/, */tests/, idlelib/idle_test/);
`pydoc_data/` (its topics.py is the source of the technical benchmark prompts); and HELD_OUT, the files
benchmarks/vocab_costs.py measures acceptance on. Nothing from data/prompts/ is read. Writes <name>.npz (ids,
counts: the tokens seen) and <name>.json (tokenizer fingerprint, corpus hash, file count, versions), and the
SOURCES.md beside them. dynatree_lib.models.vocab.rank_from_counts turns the counts into the ranking at load time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import sysconfig
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dynatree_lib.models.provenance import atomic_path, write_atomic  # noqa: E402
from dynatree_lib.models.vocab import RANKING_FORMAT, tokenizer_fingerprint  # noqa: E402

NAME = "qwen2.5-stdlib"
HELD_OUT = ("textwrap.py", "fractions.py", "shlex.py")  # stdlib files the acceptance measurement reads
SKIP_DIRS = ("site-packages", "test", "tests", "idle_test", "pydoc_data")


def corpus_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS for part in rel.parts[:-1]) or str(rel) in HELD_OUT:
            continue
        files.append(path)
    return files


def count_tokens(tokenizer, files: list[Path], root: Path) -> tuple[np.ndarray, np.ndarray, str, int]:
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    digest = hashlib.sha256()
    chars = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        digest.update(str(path.relative_to(root)).encode() + b"\0" + text.encode() + b"\0")
        chars += len(text)
        ids = np.asarray(tokenizer(text)["input_ids"], dtype=np.int64)
        counts += np.bincount(ids, minlength=len(counts))[: len(counts)]
    seen = np.nonzero(counts)[0]
    return seen.astype(np.int32), counts[seen].astype(np.int64), digest.hexdigest(), chars


def main() -> None:
    from transformers import AutoTokenizer

    from dynatree_lib.models.embedded import fetch_embedded

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "data" / "vocab")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded pair's target)")
    args = ap.parse_args()
    folder = args.tokenizer or str(fetch_embedded()["target"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    root = Path(sysconfig.get_paths()["stdlib"])
    files = corpus_files(root)
    ids, counts, corpus_sha, chars = count_tokens(tokenizer, files, root)
    import tokenizers
    import transformers

    from dynatree_lib.models.pair import vocab_size  # noqa: F401  (the size a ranking must match)
    from dynatree_lib.models.embedded import EMBEDDED_NAME

    config = json.loads(Path(folder, "config.json").read_text()) if Path(folder, "config.json").exists() else {}
    meta = {
        "format": RANKING_FORMAT,
        "name": NAME,
        "tokenizer": EMBEDDED_NAME if args.tokenizer is None else folder,
        "tokenizer_sha1": tokenizer_fingerprint(tokenizer),
        "vocab_size": int(config.get("vocab_size", len(tokenizer))),
        "corpus": f"Python {sys.version.split()[0]} standard library .py files",
        "corpus_files": len(files),
        "corpus_chars": chars,
        "corpus_tokens": int(counts.sum()),
        "corpus_sha256": corpus_sha,
        "skipped_dirs": list(SKIP_DIRS),
        "held_out": list(HELD_OUT),
        "distinct_tokens": len(ids),
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "command": "python scripts/build_vocab_ranking.py",
    }
    with atomic_path(args.out / f"{NAME}.npz") as tmp, tmp.open("wb") as f:  # a file object: no ".npz" appended
        np.savez_compressed(f, ids=ids, counts=counts)
    write_atomic(args.out / f"{NAME}.json", json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
