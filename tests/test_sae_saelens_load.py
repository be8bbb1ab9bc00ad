"""``load_sae`` reads SAELens folders: exports of every architecture come back computing the
same codes and reconstructions, a signed export comes back signed, and ``abstopk steer``
finds SAELens folders by their metadata."""

from __future__ import annotations

import json

import pytest
import torch

from abstopk.export import export_saelens
from abstopk.sae import SAE, SAEConfig, load_sae, sae_summary


def _trained_like(arch: str, seed: int = 0) -> SAE:
    torch.manual_seed(seed)
    kw = {"k": 3} if arch in ("topk", "abstopk") else {}
    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture=arch, hook_layer=5,
                        hook_site="resid_post", model_name="toy", **kw), seed=seed)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
        if sae.threshold is not None:
            sae.threshold.uniform_(0.05, 0.3)
    return sae.eval()


@pytest.mark.parametrize("arch,expect,width", [("abstopk", "abstopk", 16), ("topk", "topk", 16),
                                               ("relu", "relu", 16),
                                               ("jumprelu", "jumprelu", 16),
                                               ("absjumprelu", "absjumprelu", 16)])
def test_saelens_export_loads_back_exactly(tmp_path, arch, expect, width):
    sae = _trained_like(arch)
    sae.save(tmp_path / "own")
    export_saelens(tmp_path / "own", tmp_path / "sl")
    back = load_sae(tmp_path / "sl")
    assert back.cfg.architecture == expect and back.cfg.d_sae == width
    assert (back.cfg.hook_layer, back.cfg.hook_site) == (5, "resid_post")
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        own = SAE.load(tmp_path / "own")
        z0, z1 = own.encode(x), back.encode(x)
        assert torch.equal(z0, z1)                                 # same latents, same signs
        assert torch.allclose(own.decode(z0), back.decode(z1), atol=1e-6)
    assert sae_summary(tmp_path / "sl") == {"architecture": expect, "layer": 5,
                                            "site": "resid_post", "format": "saelens"}
    # this project's own layout goes through the same function
    assert load_sae(tmp_path / "own").cfg.architecture == arch


def test_doubled_weights_that_are_not_a_signed_export_stay_unsigned(tmp_path):
    sae = _trained_like("abstopk")
    export_saelens(sae, tmp_path / "sl")
    from safetensors.torch import load_file, save_file

    t = load_file(str(tmp_path / "sl" / "sae_weights.safetensors"))
    t["W_enc"][0, 20] += 1.0                     # breaks the [W, −W] form
    save_file(t, str(tmp_path / "sl" / "sae_weights.safetensors"))
    back = load_sae(tmp_path / "sl")
    assert back.cfg.architecture == "topk" and back.cfg.d_sae == 32


def test_hand_written_saelens_folder_and_unsupported_options(tmp_path):
    from safetensors.torch import save_file

    d = tmp_path / "std"
    d.mkdir()
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 10, generator=g)
    b = torch.randn(10, generator=g)
    D = torch.randn(10, 6, generator=g)
    c = torch.randn(6, generator=g)
    save_file({"W_enc": W, "b_enc": b, "W_dec": D, "b_dec": c}, str(d / "sae_weights.safetensors"))
    cfg = {"architecture": "standard", "d_in": 6, "d_sae": 10, "apply_b_dec_to_input": True,
           "normalize_activations": "none", "metadata": {"hook_name": "blocks.3.hook_mlp_out",
                                                         "model_name": "m"}}
    (d / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(d)
    x = torch.randn(5, 6, generator=g)
    ref = torch.relu((x - c) @ W + b)                 # SAELens's standard encoder
    assert torch.allclose(sae.encode(x), ref, atol=1e-6)
    assert torch.allclose(sae.decode(ref), ref @ D + c, atol=1e-5)
    assert (sae.cfg.architecture, sae.cfg.hook_layer, sae.cfg.hook_site) == ("relu", 3, "mlp_out")
    cfg["rescale_acts_by_decoder_norm"] = True
    (d / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rescale_acts_by_decoder_norm"):
        load_sae(d)
    cfg.pop("rescale_acts_by_decoder_norm")
    cfg["architecture"] = "gated"
    (d / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="gated"):
        load_sae(d)


def test_steer_finds_saelens_folders(tmp_path):
    from abstopk.commands.steer import find_saes

    _trained_like("abstopk").save(tmp_path / "own-abs")
    export_saelens(tmp_path / "own-abs", tmp_path / "saes" / "a-exported")
    _trained_like("topk").save(tmp_path / "saes" / "b-topk")
    found = find_saes(tmp_path / "saes", ["abstopk", "topk", "relu"], 5)
    assert found == {"abstopk": tmp_path / "saes" / "a-exported",
                     "topk": tmp_path / "saes" / "b-topk"}
    assert find_saes(tmp_path / "saes", ["abstopk"], 4) == {}
