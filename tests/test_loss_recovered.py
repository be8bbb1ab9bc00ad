"""Loss recovered / KL: hand-computed CE, KL, ratios and bootstrap intervals; on the real
embedded model an identity SAE (loss recovered = 1), a zero SAE (= 0 against zero ablation),
an SAE that outputs the mean (= 0 against mean ablation), the spliced CE of a trained SAE
against an independent forward (blocks run by hand), and the site check catching a splice at
the wrong layer or position."""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import pytest
import torch
from cli_runner import cli_code as _cli

from abstopk.eval.loss_recovered import (
    LossRecoveredAccumulator,
    evaluate_loss_recovered,
    predicted_token_ce_kl,
)
from abstopk.sae import SAE, SAEConfig

LAYER, CTX = 3, 32


def test_ce_and_kl_hand_computed():
    # vocabulary of 2; logits (0, 0) → p = (½, ½); (log 3, 0) → p = (¾, ¼)
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [5.0, 5.0]]])
    tokens = torch.tensor([[0, 1, 0]])    # predicted: token 1 at pos 0, token 0 at pos 1
    ce, kl, lp = predicted_token_ce_kl(logits, tokens)
    assert kl is None and lp.shape == (1, 2, 2)
    assert ce[0].tolist() == pytest.approx([math.log(2), -math.log(0.75)])
    ref = torch.log(torch.tensor([[[0.75, 0.25], [0.5, 0.5]]]))
    _, kl, _ = predicted_token_ce_kl(logits, tokens, ref)
    kl1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    kl2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kl[0].tolist() == pytest.approx([kl1, kl2])


def test_accumulator_formula():
    acc = LossRecoveredAccumulator()
    acc.add("clean", torch.tensor([[1.0, 3.0]]))
    acc.add("spliced", torch.tensor([[2.0, 4.0]]), torch.tensor([[0.1, 0.3]]))
    acc.add("zero_ablated", torch.tensor([[6.0, 6.0]]), torch.tensor([[1.0, 1.0]]))
    acc.add("mean_ablated", torch.tensor([[4.0, 4.0]]), torch.tensor([[0.5, 0.5]]))
    r = acc.result(resamples=0)
    # CE clean 2, spliced 3, zero 6, mean 4 → (6 − 3)/(6 − 2) = 0.75, (4 − 3)/(4 − 2) = 0.5
    assert (r["ce_clean"], r["ce_spliced"], r["ce_zero_ablated"]) == (2.0, 3.0, 6.0)
    assert r["ce_mean_ablated"] == 4.0
    assert r["loss_recovered"] == pytest.approx(0.75)
    assert r["loss_recovered_mean_ablation"] == pytest.approx(0.5)
    assert r["kl"] == pytest.approx(0.2) and r["kl_zero_ablated"] == pytest.approx(1.0)
    assert r["kl_mean_ablated"] == pytest.approx(0.5)
    assert (r["lr_contexts"], r["lr_predicted_tokens"]) == (1, 2)
    assert "loss_recovered_ci" not in r and "ce_error_kept" not in r
    with pytest.raises(ValueError):
        LossRecoveredAccumulator().result()


def test_bootstrap_matches_a_plain_loop():
    """The intervals are the quantiles of the ratio of resampled sums, resamples drawn as
    ``rng.integers(0, C, (B, C))`` — recomputed here with a plain loop."""
    g = torch.Generator().manual_seed(0)
    C, P = 7, 5
    ce = {"clean": torch.rand(C, P, generator=g) + 1,
          "spliced": torch.rand(C, P, generator=g) + 2,
          "zero_ablated": torch.rand(C, P, generator=g) + 6,
          "mean_ablated": torch.rand(C, P, generator=g) + 3}
    kl = torch.rand(C, P, generator=g)
    acc = LossRecoveredAccumulator()
    for run, v in ce.items():                 # two batches: 3 + 4 contexts
        acc.add(run, v[:3], kl[:3] if run == "spliced" else None)
        acc.add(run, v[3:], kl[3:] if run == "spliced" else None)
    r = acc.result(resamples=200, seed=5, level=0.9)
    idx = np.random.default_rng(5).integers(0, C, size=(200, C))
    s = {k: v.double().sum(1).numpy() for k, v in ce.items()}
    lr = [(s["zero_ablated"][i].sum() - s["spliced"][i].sum())
          / (s["zero_ablated"][i].sum() - s["clean"][i].sum()) for i in idx]
    lrm = [(s["mean_ablated"][i].sum() - s["spliced"][i].sum())
           / (s["mean_ablated"][i].sum() - s["clean"][i].sum()) for i in idx]
    kls = [kl.double().sum(1).numpy()[i].sum() / (len(i) * P) for i in idx]
    for key, vals in (("loss_recovered", lr), ("loss_recovered_mean_ablation", lrm),
                      ("kl", kls)):
        assert r[f"{key}_ci"] == pytest.approx([np.quantile(vals, 0.05),
                                                np.quantile(vals, 0.95)], rel=1e-12), key
        assert r[f"{key}_ci"][0] <= r[key] <= r[f"{key}_ci"][1]
    assert r["bootstrap"] == {"resamples": 200, "seed": 5, "level": 0.9, "unit": "context"}
    # identical contexts: every resample gives the point estimate
    same = LossRecoveredAccumulator()
    for run in ce:
        same.add(run, ce[run][:1].expand(4, P))
    rs = same.result(resamples=50)
    assert rs["loss_recovered_ci"] == pytest.approx([rs["loss_recovered"]] * 2, rel=1e-12)
    with pytest.raises(ValueError, match="saw 3 contexts"):
        bad = LossRecoveredAccumulator()
        bad.add("clean", ce["clean"][:4])
        bad.add("spliced", ce["spliced"][:3])
        bad.result()


# ------------------------------------------------------------------ real embedded model


@pytest.fixture(scope="module")
def contexts(lm):
    from abstopk.data.tokens import iter_contexts

    _, tok, _ = lm
    return list(itertools.islice(
        iter_contexts(tok, split="heldout", context_size=CTX, seed=None), 2))  # file order


def _special(tok):
    from abstopk.data.tokens import bos_token_id

    return {bos_token_id(tok), tok.pad_token_id}


def identity_sae(d: int) -> SAE:
    """AbsTopK with k = d_sae = d_in and W = I, b = 0 is the identity map."""
    sae = SAE(SAEConfig(d_in=d, d_sae=d, architecture="abstopk", k=d, hook_layer=LAYER,
                        hook_site="resid_post", model_name="smollm2-135m", context_size=CTX))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _lr(sae, lm, contexts, **kw):
    model, tok, _ = lm
    return evaluate_loss_recovered(sae, model, contexts, layer=LAYER, site="resid_post",
                                   batch_size=2, skip_token_ids=_special(tok), **kw)


def test_identity_sae_recovers_everything(lm, contexts):
    d = lm[2].d_model
    r = _lr(identity_sae(d), lm, contexts)
    assert r["lr_contexts"] == 2 and r["lr_predicted_tokens"] == 2 * (CTX - 1)
    assert r["ce_zero_ablated"] > r["ce_clean"] + 0.5    # ablating the stream hurts a lot
    assert r["ce_mean_ablated"] > r["ce_clean"] + 0.1
    assert r["ce_spliced"] == pytest.approx(r["ce_clean"], abs=1e-5)
    assert r["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert r["loss_recovered_mean_ablation"] == pytest.approx(1.0, abs=1e-4)
    assert r["kl"] == pytest.approx(0.0, abs=1e-6)
    assert r["site_check_max_rel_diff"] < 1e-6


def test_zero_sae_recovers_nothing_and_bos_stays_clean(lm, contexts):
    from abstopk.data.tokens import bos_token_id

    model, tok, info = lm
    sae = identity_sae(info.d_model)
    with torch.no_grad():
        sae.W_dec.zero_()
    r = _lr(sae, lm, contexts, mean_ablation=False)
    assert r["ce_spliced"] == pytest.approx(r["ce_zero_ablated"], abs=1e-6)
    assert r["loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert r["kl"] == pytest.approx(r["kl_zero_ablated"], rel=1e-6)
    assert r["kl"] > 0.1
    assert "ce_mean_ablated" not in r and "loss_recovered_mean_ablation" not in r
    # BOS positions keep their clean activation unless splice_bos: ablating them too differs
    assert int(contexts[0][0]) == bos_token_id(tok)   # the held-out stream starts with BOS
    all_pos = _lr(sae, lm, contexts, mean_ablation=False, splice_bos=True)
    assert all_pos["ce_clean"] == r["ce_clean"]
    assert abs(all_pos["ce_zero_ablated"] - r["ce_zero_ablated"]) > 1e-3


def test_mean_ablation_is_the_mean_over_the_evaluation_positions(lm, contexts):
    """An SAE whose output is the mean activation μ (computed here from a plain forward's
    hidden states, BOS positions excluded) scores exactly the mean-ablated CE."""
    model, tok, info = lm
    ids = torch.stack(contexts)
    h = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[LAYER + 1]
    keep = torch.isin(ids, torch.tensor(sorted(_special(tok))))
    mu = h[~keep].double().mean(0).float()
    sae = identity_sae(info.d_model)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.copy_(mu)
    r = _lr(sae, lm, contexts)
    assert r["mean_ablation_source"] == "evaluation contexts"
    assert r["mean_ablation_positions"] == int((~keep).sum())
    assert r["ce_spliced"] == pytest.approx(r["ce_mean_ablated"], abs=1e-5)
    assert r["loss_recovered_mean_ablation"] == pytest.approx(0.0, abs=1e-4)
    assert r["ce_zero_ablated"] > r["ce_mean_ablated"] + 0.1      # μ is far from 0
    given = _lr(sae, lm, contexts, mean_activation=torch.zeros(info.d_model))
    assert given["mean_ablation_source"] == "given"
    assert given["ce_mean_ablated"] == pytest.approx(given["ce_zero_ablated"], abs=1e-6)


@pytest.fixture(scope="module")
def trained_sae(lm):
    """An AbsTopK SAE trained for 120 steps on ~3k layer-3 activations of train contexts."""
    from abstopk.data.tokens import iter_contexts, special_position_mask
    from abstopk.lm import run_to_layer
    from abstopk.train.config import TrainConfig
    from abstopk.train.trainer import Trainer

    model, tok, info = lm
    ids = torch.stack(list(itertools.islice(
        iter_contexts(tok, split="train", context_size=CTX), 96)))
    acts = run_to_layer(model, ids, layers=LAYER, site="resid_post")[LAYER]
    x = acts[~special_position_mask(ids, tok)].float()
    cfg = TrainConfig(architecture="abstopk", k=16, d_sae=2 * info.d_model, steps=120,
                      batch_size=256, lr=2e-3, seed=0, progress=False, checkpoint_every=0)
    sae = Trainer(cfg, x).fit().eval()
    sae.cfg.hook_layer, sae.cfg.hook_site = LAYER, "resid_post"
    return sae


@torch.no_grad()
def _hand_ce(model, ids: torch.Tensor, layer: int, replace) -> float:
    """CE over predicted tokens with block ``layer``'s output h replaced by ``replace(h)``,
    the later blocks, final norm and unembedding run by hand from the HF modules (explicit
    causal mask, rotary embeddings from the model's own module), in float64 at the end."""
    inner = model.model
    T = ids.shape[1]
    h = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[layer + 1]
    h = replace(h)
    pos = torch.arange(T)[None]
    rope = inner.rotary_emb(h, position_ids=pos)
    mask = torch.full((T, T), float("-inf")).triu(1)[None, None]
    for block in inner.layers[layer + 1:]:
        out = block(h, attention_mask=mask, position_ids=pos, position_embeddings=rope)
        h = out[0] if isinstance(out, tuple) else out
    logits = model.lm_head(inner.norm(h)).double()
    lp = torch.log_softmax(logits[:, :-1], -1)
    return float(-lp.gather(-1, ids[:, 1:, None]).mean())


def test_spliced_ce_of_a_trained_sae_matches_an_independent_forward(lm, contexts, trained_sae):
    model, tok, _ = lm
    ids = torch.stack(contexts)
    keep = torch.isin(ids, torch.tensor(sorted(_special(tok))))
    r = _lr(trained_sae, lm, contexts)
    # the SAE is trained and non-trivial: far better than a random one, yet not exact
    assert 0.5 < r["loss_recovered"] < 0.999, r
    assert r["ce_spliced"] > r["ce_clean"] + 1e-3
    d = lm[2].d_model
    rand = _lr(SAE(SAEConfig(d_in=d, d_sae=2 * d, architecture="abstopk", k=16), seed=0),
               lm, contexts)
    # measured: trained 0.838 (zero) / 0.760 (mean), random 0.104 / −0.328
    assert r["loss_recovered"] >= rand["loss_recovered"] + 0.5
    assert r["loss_recovered_mean_ablation"] >= rand["loss_recovered_mean_ablation"] + 0.5
    assert rand["loss_recovered_mean_ablation"] < rand["loss_recovered"]  # the stricter one
    clean_by_hand = _hand_ce(model, ids, LAYER, lambda h: h)
    assert clean_by_hand == pytest.approx(r["ce_clean"], abs=1e-4)     # the hand route is right

    def splice(h):
        x_hat = trained_sae(h.reshape(-1, h.shape[-1])).x_hat.reshape(h.shape)
        return torch.where(keep[..., None], h, x_hat)

    assert _hand_ce(model, ids, LAYER, splice) == pytest.approx(r["ce_spliced"], abs=1e-4)
    # splicing the same x̂ one block later gives another CE: the figure pins the layer
    assert abs(_hand_ce(model, ids, LAYER + 1, splice) - r["ce_spliced"]) > 1e-3


def test_min_position_keeps_the_first_positions_clean_in_every_run(lm, contexts, trained_sae):
    """With ``min_position`` 3 the positions 0–2 keep their clean activation in the spliced,
    zero- and mean-ablated runs: each CE equals the independent forward that replaces only the
    other positions, and μ is the mean over those positions."""
    model, tok, _ = lm
    ids = torch.stack(contexts)
    keep = torch.isin(ids, torch.tensor(sorted(_special(tok))))
    keep[:, :3] = True
    r = _lr(trained_sae, lm, contexts, min_position=3)
    h = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[LAYER + 1]
    mu = h[~keep].double().mean(0).float()
    assert r["lr_min_position"] == 3 and r["mean_ablation_positions"] == int((~keep).sum())

    def only_later(fn):
        return lambda h: torch.where(keep[..., None], h, fn(h))

    def recon(h):
        return trained_sae(h.reshape(-1, h.shape[-1])).x_hat.reshape(h.shape)

    assert _hand_ce(model, ids, LAYER, only_later(recon)) == pytest.approx(r["ce_spliced"],
                                                                          abs=1e-4)
    zero = _hand_ce(model, ids, LAYER, only_later(torch.zeros_like))
    assert zero == pytest.approx(r["ce_zero_ablated"], abs=1e-4)
    mean = _hand_ce(model, ids, LAYER, only_later(lambda h: mu.expand_as(h)))
    assert mean == pytest.approx(r["ce_mean_ablated"], abs=1e-4)
    # every position replaced (the default) gives other numbers: the option is not a no-op
    full = _lr(trained_sae, lm, contexts)
    assert full["lr_min_position"] == 0
    assert abs(full["ce_zero_ablated"] - r["ce_zero_ablated"]) > 1e-3
    with pytest.raises(ValueError, match="leaves no position"):
        _lr(trained_sae, lm, contexts, min_position=CTX)
    with pytest.raises(ValueError, match="integer >= 0"):
        _lr(trained_sae, lm, contexts, min_position=-1)


def test_site_check_catches_a_splice_at_the_wrong_layer_or_position(lm, contexts, monkeypatch):
    import abstopk.lm.hooks as hooks

    real = hooks.replace_activation
    sae = identity_sae(lm[2].d_model)
    monkeypatch.setattr(hooks, "replace_activation",
                        lambda m, layer, site, fn: real(m, layer + 1, site, fn))
    with pytest.raises(RuntimeError, match="site check failed"):
        _lr(sae, lm, contexts, mean_ablation=False)

    def shifted(m, layer, site, fn):          # positions off by one
        return real(m, layer, site, lambda a: fn(torch.roll(a, 1, dims=1)))

    monkeypatch.setattr(hooks, "replace_activation", shifted)
    with pytest.raises(RuntimeError, match="site check failed"):
        _lr(sae, lm, contexts, mean_ablation=False)
    monkeypatch.setattr(hooks, "replace_activation", real)
    assert _lr(sae, lm, contexts, mean_ablation=False)["site_check_max_rel_diff"] < 1e-6


def test_harvested_reconstruction_matches_manual(lm):
    from abstopk.data.tokens import iter_contexts, special_position_mask
    from abstopk.eval.metrics import evaluate_reconstruction
    from abstopk.eval.run import harvest_reconstruction
    from abstopk.lm import run_to_layer

    model, tok, info = lm
    sae = SAE(SAEConfig(d_in=info.d_model, d_sae=1024, architecture="abstopk", k=16), seed=1)
    got = harvest_reconstruction(sae, model, tok, layer=LAYER, site="resid_post",
                                 n_tokens=100, context_size=CTX, batch_size=2)
    ids = torch.stack(list(itertools.islice(iter_contexts(tok, split="heldout",
                                                          context_size=CTX), 4)))
    acts = run_to_layer(model, ids, layers=LAYER, site="resid_post")[LAYER]
    x = acts.reshape(-1, acts.shape[-1])[~special_position_mask(ids, tok).reshape(-1)][:100]
    ref = evaluate_reconstruction(sae, x)
    assert got.summary["n_tokens"] == 100
    for key in ("mse", "nmse", "explained_variance", "cosine", "l0", "n_bidirectional"):
        assert got.summary[key] == pytest.approx(ref.summary[key], rel=1e-5), key
    assert got.summary["l0"] == 16.0


def test_cli_eval_identity(lm, tmp_path):
    identity_sae(lm[2].d_model).save(tmp_path / "sae")
    out = tmp_path / "eval.json"
    assert _cli(["eval", "--sae", str(tmp_path / "sae"), "--tokens", "64", "--contexts", "2",
                 "--batch-size", "2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("mse", "nmse", "explained_variance", "l0", "dead_fraction", "ce_clean",
                "ce_spliced", "ce_zero_ablated", "loss_recovered", "kl", "cosine",
                "n_bidirectional", "negative_firing_fraction", "ce_mean_ablated",
                "loss_recovered_mean_ablation", "loss_recovered_ci", "kl_ci", "bootstrap",
                "site_check_max_rel_diff", "mean_ablation_source", "lr_source_mix"):
        assert key in r, key
    assert sum(r["lr_source_mix"].values()) == pytest.approx(1.0, abs=1e-3)
    assert r["loss_recovered_mean_ablation"] == pytest.approx(1.0, abs=1e-4)
    assert (r["layer"], r["site"], r["context_size"]) == (LAYER, "resid_post", CTX)
    assert r["hook_name"] == f"blocks.{LAYER}.hook_resid_post"
    assert r["n_tokens"] == 64 and r["mse"] < 1e-10 and r["cosine"] == pytest.approx(1.0)
    assert r["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert r["l0"] == pytest.approx(r["d_in"], abs=1.0)       # every coordinate ≠ 0
    assert r["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert r["negative_firing_fraction"] > 0.2                # residuals have both signs


def test_cli_eval_bad_input(tmp_path, capsys):
    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture="abstopk", k=2))
    sae.save(tmp_path / "nolayer")
    for argv in (["eval", "--sae", str(tmp_path / "missing")],
                 ["eval", "--sae", str(tmp_path / "nolayer")],
                 ["eval", "--sae", str(tmp_path / "nolayer"), "--layer", "1", "--tasks", "nope"]):
        assert _cli(argv) == 2
    err = capsys.readouterr().err
    assert "hook_layer" in err and "unknown task" in err


def _tiny_cache(path, *, layer: int, site: str, d_in: int, rows: int = 64):
    """A complete one-shard activation cache (format version 1) of random rows."""
    import hashlib

    from abstopk.files import atomic_save_safetensors, atomic_write_json

    path.mkdir()
    x = torch.randn(rows, d_in, generator=torch.Generator().manual_seed(0))
    atomic_save_safetensors(path / "shard_000000.safetensors",
                            {"activations": x.to(torch.float16),
                             "token_ids": torch.arange(rows)})
    digest = hashlib.sha256((path / "shard_000000.safetensors").read_bytes()).hexdigest()
    atomic_write_json(path / "manifest.json", {
        "format": "abstopk-activation-cache", "version": 1, "model": "smollm2-135m",
        "model_revision": "0", "layer": layer, "site": site,
        "hook_name": f"blocks.{layer}.hook_{site}", "d_in": d_in, "dtype": "float16",
        "context_size": CTX, "keep_bos": False, "batch_size": 4, "corpus": {"name": "t"},
        "requested_tokens": rows, "total_rows": rows, "contexts_consumed": rows // CTX,
        "complete": True, "abstopk_version": "0.1.0",
        "shards": [{"file": "shard_000000.safetensors", "rows": rows, "sha256": digest}]})
    return x


def test_eval_refuses_a_cache_of_another_layer_site_or_width(tmp_path, capsys):
    """Library: EvalMismatchError (a UserError) naming both sides; CLI: one line, exit 2.
    The matching cache is evaluated (its rows, its numbers)."""
    import numpy as np

    from abstopk.errors import EvalMismatchError, UserError
    from abstopk.eval.metrics import evaluate_reconstruction
    from abstopk.eval.run import evaluate_sae

    sae = SAE(SAEConfig(d_in=16, d_sae=32, architecture="abstopk", k=4, hook_layer=LAYER,
                        hook_site="resid_post", context_size=CTX), seed=0)
    sae.save(tmp_path / "sae")
    good = _tiny_cache(tmp_path / "good", layer=LAYER, site="resid_post", d_in=16)
    _tiny_cache(tmp_path / "layer", layer=LAYER + 2, site="resid_post", d_in=16)
    _tiny_cache(tmp_path / "site", layer=LAYER, site="mlp_out", d_in=16)
    _tiny_cache(tmp_path / "width", layer=LAYER, site="resid_post", d_in=12)
    np.save(tmp_path / "wide.npy", np.zeros((8, 20), np.float32))
    r = evaluate_sae(sae, cache=tmp_path / "good", tokens=64, contexts=0, progress=False)
    ref = evaluate_reconstruction(sae, good.to(torch.float16).float())
    assert r["n_tokens"] == 64 and r["nmse"] == pytest.approx(ref.summary["nmse"], rel=1e-6)
    expect = {"layer": f"holds layer {LAYER + 2} resid_post",
              "site": f"holds layer {LAYER} mlp_out", "width": "(d_in 12)",
              "wide.npy": "width 20 but the SAE expects d_in = 16"}
    for name, text in expect.items():
        with pytest.raises(EvalMismatchError, match=re.escape(text)) as err:
            evaluate_sae(sae, cache=tmp_path / name, tokens=64, contexts=0, progress=False)
        assert isinstance(err.value, UserError)
        assert _cli(["eval", "--sae", str(tmp_path / "sae"), "--cache", str(tmp_path / name),
                     "--tokens", "64", "--contexts", "0"]) == 2
        out = capsys.readouterr().err
        assert text in out and "Traceback" not in out


def test_eval_refuses_an_sae_of_another_width_than_the_model(lm, tmp_path, capsys):
    from abstopk.errors import EvalMismatchError
    from abstopk.eval.run import evaluate_sae

    sae = SAE(SAEConfig(d_in=16, d_sae=32, architecture="abstopk", k=4, hook_layer=LAYER),
              seed=0)
    with pytest.raises(EvalMismatchError, match="has width 576 but the SAE expects d_in = 16"):
        evaluate_sae(sae, tokens=8, contexts=0, loaded=lm, progress=False)
    far = SAE(SAEConfig(d_in=576, d_sae=32, architecture="abstopk", k=4, hook_layer=99), seed=0)
    with pytest.raises(EvalMismatchError, match="layer 99 out of range"):
        evaluate_sae(far, tokens=8, contexts=0, loaded=lm, progress=False)
    sae.save(tmp_path / "narrow")
    assert _cli(["eval", "--sae", str(tmp_path / "narrow"), "--tokens", "8",
                 "--contexts", "0"]) == 2
    assert "has width 576 but the SAE expects d_in = 16" in capsys.readouterr().err


def test_tasks_dispatch_to_probing_registry(lm, monkeypatch):
    import abstopk.eval.probing as probing
    from abstopk.eval.run import evaluate_sae

    seen = {}

    def echo(sae, model, tokenizer, **kw):
        seen.update(kw)
        return {"d_sae": sae.cfg.d_sae, "vocab": len(tokenizer)}

    monkeypatch.setitem(probing.TASKS, "echo", echo)
    r = evaluate_sae(identity_sae(lm[2].d_model), tokens=0, contexts=0, tasks=["echo"],
                     task_examples=7, loaded=lm, progress=False)
    assert r["tasks"]["echo"] == {"d_sae": lm[2].d_model, "vocab": len(lm[1])}
    assert (seen["layer"], seen["site"], seen["n_examples"]) == (LAYER, "resid_post", 7)
    assert "mse" not in r and "loss_recovered" not in r
    assert set(probing.TASKS) >= {"sparse_probing", "absorption", "scr", "tpp"}
