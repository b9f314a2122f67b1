"""Spec-Bench, the field's speculative-decoding benchmark, as a prompt set: its 480 questions in six tasks.

The question file is stored verbatim in data/prompts/spec_bench/ (with its licence and where it came from, see
SOURCE.md there) and checked against its SHA-256 on every read, so a changed file is refused rather than measured.
Spec-Bench's tasks: "mt_bench" (MT-bench's 80 two-turn questions in 8 categories) and 80 single-turn questions each of
"translation", "summarization", "qa", "math_reasoning", "rag". Like Spec-Bench's own single-turn runs we ask the first
turn only, as one user message that `generate` wraps in the tokenizer's chat template.
"""
from __future__ import annotations

import hashlib
import json

import pandas as pd

from ..core.checks import _check_int
from ..models.provenance import data_dir

SOURCE = {
    "repository": "https://github.com/hemingkx/Spec-Bench",
    "commit": "fd2c1cd7d2201ef71db4c5f4e455008f017967bf",
    "path": "data/spec_bench/question.jsonl",
    "licence": "Apache-2.0 (data/prompts/spec_bench/LICENSE)",
    "sha256": "4b6d33e79484f9841c487ee87d1cf6aa8c6066f61d5d482ff09e5a007fafdf04",
}
TASKS = ("mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag")
# Spec-Bench's evaluation/speed.py counts these MT-bench categories as its "mt_bench" task.
MT_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")


def task_of(category: str) -> str:
    """Spec-Bench's task for a question's category."""
    if category in MT_BENCH_CATEGORIES:
        return "mt_bench"
    if category in TASKS:
        return category
    raise ValueError(f"unknown Spec-Bench category {category!r}")


def task_of_id(prompt_id: str) -> str:
    """The task named in a prompt id made by `spec_bench_prompts` ("spec_bench/qa/321" -> "qa")."""
    parts = str(prompt_id).split("/")
    if len(parts) != 3 or parts[0] != "spec_bench" or parts[1] not in TASKS:
        raise ValueError(f"{prompt_id!r} is not a Spec-Bench prompt id (spec_bench/<task>/<question_id>)")
    return parts[1]


def spec_bench_questions() -> pd.DataFrame:
    """All 480 questions in file order: question_id, category, task, turns (as stored), reference (if any).
    Refuses a file whose SHA-256 differs from the one recorded when it was fetched."""
    path = data_dir() / "prompts" / "spec_bench" / "question.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing; it is stored in the repository (see data/prompts/spec_bench/SOURCE.md)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE["sha256"]:
        raise ValueError(f"{path} has sha256 {digest}, not the {SOURCE['sha256']} recorded for Spec-Bench's "
                         f"question file at commit {SOURCE['commit'][:7]}: restore it from the repository")
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    df = pd.DataFrame(rows)
    df.insert(2, "task", df["category"].map(task_of))
    return df


def spec_bench_prompts(per_task: int = 5, tasks=None) -> pd.DataFrame:
    """`per_task` questions of each task in `tasks` (all six if None), as a prompt set for `run_benchmark`: columns
    id ("spec_bench/<task>/<question_id>"), prompt (the first turn as a one-message chat conversation), task,
    question_id, category and question (the first turn's text).

    The choice is deterministic and spread over the task: of a task's n questions in file order, the i-th chosen is
    question floor(i * n / per_task), so 5 of MT-bench's 80 come from 5 of its 8 categories rather than all from
    "writing". Asking for more questions than a task has is an error, not a short result."""
    tasks = TASKS if tasks is None else tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown Spec-Bench task(s) {unknown or tasks!r}; valid: {', '.join(TASKS)}")
    _check_int("per_task", per_task, 1)
    questions = spec_bench_questions()
    chosen = []
    for task in dict.fromkeys(tasks):
        rows = questions[questions["task"] == task]
        if per_task > len(rows):
            raise ValueError(f"per_task={per_task} but task {task!r} has {len(rows)} questions")
        chosen.append(rows.iloc[[i * len(rows) // per_task for i in range(per_task)]])
    df = pd.concat(chosen, ignore_index=True)
    first = df["turns"].map(lambda turns: turns[0])
    return pd.DataFrame({
        "id": [f"spec_bench/{t}/{q}" for t, q in zip(df["task"], df["question_id"])],
        "prompt": [[{"role": "user", "content": text}] for text in first],
        "task": df["task"],
        "question_id": df["question_id"],
        "category": df["category"],
        "question": first,
    })
