"""Loss recovered / KL: hand-computed CE & KL, and the real embedded model with an identity
SAE (loss recovered = 1), a zero SAE (= 0) and the error-term sanity run (= clean)."""

from __future__ import annotations

import itertools
import json
import math

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
    acc.add("clean", torch.tensor([1.0, 3.0]))
    acc.add("spliced", torch.tensor([2.0, 4.0]), torch.tensor([0.1, 0.3]))
    acc.add("zero_ablated", torch.tensor([6.0, 6.0]), torch.tensor([1.0, 1.0]))
    acc.n_pred, acc.n_contexts = 2, 1
    r = acc.result()
    # CE clean 2, spliced 3, zero 6 → (6 − 3)/(6 − 2) = 0.75
    assert (r["ce_clean"], r["ce_spliced"], r["ce_zero_ablated"]) == (2.0, 3.0, 6.0)
    assert r["loss_recovered"] == pytest.approx(0.75)
    assert r["kl"] == pytest.approx(0.2) and r["kl_zero_ablated"] == pytest.approx(1.0)
    assert "ce_error_kept" not in r
    with pytest.raises(ValueError):
        LossRecoveredAccumulator().result()


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
    assert r["ce_spliced"] == pytest.approx(r["ce_clean"], abs=1e-5)
    assert r["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert r["kl"] == pytest.approx(0.0, abs=1e-6)


def test_zero_sae_recovers_nothing_and_bos_stays_clean(lm, contexts):
    from abstopk.data.tokens import bos_token_id

    model, tok, info = lm
    sae = identity_sae(info.d_model)
    with torch.no_grad():
        sae.W_dec.zero_()
    r = _lr(sae, lm, contexts, with_error_term=False)
    assert r["ce_spliced"] == pytest.approx(r["ce_zero_ablated"], abs=1e-6)
    assert r["loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert r["kl"] == pytest.approx(r["kl_zero_ablated"], rel=1e-6)
    assert r["kl"] > 0.1
    assert "ce_error_kept" not in r
    # BOS positions keep their clean activation unless splice_bos: ablating them too differs
    assert int(contexts[0][0]) == bos_token_id(tok)   # the held-out stream starts with BOS
    all_pos = _lr(sae, lm, contexts, with_error_term=False, splice_bos=True)
    assert all_pos["ce_clean"] == r["ce_clean"]
    assert abs(all_pos["ce_zero_ablated"] - r["ce_zero_ablated"]) > 1e-3


def test_error_term_kept_equals_clean_and_splice_matters(lm, contexts):
    d = lm[2].d_model
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, architecture="abstopk", k=8), seed=0)
    r = _lr(sae, lm, contexts)
    assert r["ce_error_kept"] == pytest.approx(r["ce_clean"], abs=1e-4)
    assert r["kl_error_kept"] == pytest.approx(0.0, abs=1e-4)
    assert r["kl"] > 1e-3                        # the random SAE's x̂ does change the output
    assert abs(r["ce_spliced"] - r["ce_clean"]) > 1e-3


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
                "n_bidirectional", "negative_firing_fraction"):
        assert key in r, key
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
