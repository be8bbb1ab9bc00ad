"""Minimal pairs: which latents flip sign (or switch on/off) between the two words of a pair.

Data: ``analysis/data/minimal_pairs.tsv`` (``category, a, b``; ≥ 100 pairs: gendered nouns,
pronouns, antonym adjectives and verbs) and ``minimal_pair_templates.tsv`` (``category,
template`` with ``{}`` for the word). Both words of a pair go into the same templates; a
word's activation is read at its last token, the sentence preceded by BOS like the harvest.

With z_a, z_b [P, F] the SAE codes of the two words averaged over the templates:

* a signed SAE: latent i **flips** on pair p when z_a · z_b < 0 (both fire, opposite signs);
  one latent then carries both ends of the pair;
* a non-negative SAE: A_p = {i: z_a ≠ 0 = z_b} (on for a only), B_p = {i: z_b ≠ 0 = z_a};
  pair p is **split** when both are non-empty: it takes (at least) two latents, and the split
  is **antipodal** when some i ∈ A_p, j ∈ B_p have decoder cosine cos(d_i, d_j) < −0.9.

Coverage (:func:`coverage`): pairs covered, the most pairs one latent covers, and the latents
a greedy set cover needs for the covered pairs (a signed pair needs one flipping latent; a
split pair one latent from A_p and one from B_p).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["MinimalPair", "analyze_sae", "coverage", "flips", "load_pairs", "pair_codes",
           "per_latent", "sentences", "splits", "word_activations"]

ANTIPODAL_COS = -0.9


@dataclass(frozen=True)
class MinimalPair:
    category: str
    a: str
    b: str
    templates: tuple[str, ...]


def _rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [r for r in csv.reader(lines[1:], delimiter="\t")]


def load_pairs(pairs_file: str | Path | None = None,
               templates_file: str | Path | None = None) -> list[MinimalPair]:
    """The pairs with their templates (default: the files shipped in ``analysis/data``).
    ``ValueError`` for a category without templates or a template without ``{}``."""
    data = resources.files("abstopk.analysis") / "data"
    ptext = Path(pairs_file).read_text() if pairs_file else \
        (data / "minimal_pairs.tsv").read_text(encoding="utf-8")
    ttext = Path(templates_file).read_text() if templates_file else \
        (data / "minimal_pair_templates.tsv").read_text(encoding="utf-8")
    templates: dict[str, list[str]] = {}
    for cat, t in _rows(ttext):
        if t.count("{}") != 1:
            raise ValueError(f"template {t!r} must hold exactly one {{}}")
        templates.setdefault(cat, []).append(t)
    out = []
    for cat, a, b in _rows(ptext):
        if cat not in templates:
            raise ValueError(f"minimal pair {a}/{b}: category {cat!r} has no templates")
        out.append(MinimalPair(cat, a, b, tuple(templates[cat])))
    return out


@torch.no_grad()
def word_activations(model, tok, layer: int, site: str, sentences: Sequence[tuple[str, str]],
                     batch: int = 64) -> Tensor:
    """Activations [n, d] at the last token of ``word`` in each ``(template, word)``.

    Each sentence is [BOS] + tokens(template with the word); the word's last token is at
    len([BOS] + tokens(prefix + word)) − 1 (the prefix tokenises the same way inside the
    sentence because the word is followed by a space or punctuation).
    """
    from ..data.tokens import bos_token_id
    from ..lm.hooks import run_to_layer

    bos = bos_token_id(tok)
    ids, where = [], []
    for template, word in sentences:
        pre = template[: template.index("{}")] + word
        full = template.format(word)
        ids.append([bos] + tok(full, add_special_tokens=False)["input_ids"])
        where.append(len(tok(pre, add_special_tokens=False)["input_ids"]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else bos
    out = []
    for a in range(0, len(ids), batch):
        chunk = ids[a:a + batch]
        T = max(len(c) for c in chunk)
        x = torch.full((len(chunk), T), pad, dtype=torch.long)
        m = torch.zeros(len(chunk), T, dtype=torch.long)
        for r, c in enumerate(chunk):
            x[r, : len(c)] = torch.tensor(c)
            m[r, : len(c)] = 1
        h = run_to_layer(model, x, m, layers=layer, site=site)[layer]
        out.append(h[torch.arange(len(chunk)), torch.tensor(where[a:a + batch])].float())
    return torch.cat(out)


def pair_codes(sae, pairs: Sequence[MinimalPair], acts: Tensor) -> tuple[Tensor, Tensor]:
    """``(z_a, z_b)`` [P, F]: codes averaged over each pair's templates. ``acts`` holds, per
    pair in order, its templates' activations for a, then for b (see :func:`sentences`)."""
    with torch.no_grad():
        z = sae.eval().encode(acts.to(sae.dtype)).float()
    za, zb, i = [], [], 0
    for p in pairs:
        n = len(p.templates)
        za.append(z[i:i + n].mean(0))
        zb.append(z[i + n:i + 2 * n].mean(0))
        i += 2 * n
    return torch.stack(za), torch.stack(zb)


def sentences(pairs: Sequence[MinimalPair]) -> list[tuple[str, str]]:
    """``(template, word)`` in the order :func:`pair_codes` expects."""
    out = []
    for p in pairs:
        out += [(t, p.a) for t in p.templates] + [(t, p.b) for t in p.templates]
    return out


def flips(za: Tensor, zb: Tensor) -> Tensor:
    """[P, F] bool: the latent fires on both words with opposite signs."""
    return (za * zb) < 0


def splits(za: Tensor, zb: Tensor) -> tuple[Tensor, Tensor]:
    """``(A, B)`` [P, F] bool: on for a only (z_a ≠ 0 = z_b), on for b only (for a
    non-negative SAE ≠ 0 is > 0)."""
    return (za != 0) & (zb == 0), (zb != 0) & (za == 0)


def _greedy_cover(needs: list[list[set]]) -> int:
    """Latents a greedy set cover picks so that every pair's every need (a set of latents, one
    of which must be chosen) is met."""
    open_needs = [(p, k, s) for p, ss in enumerate(needs) for k, s in enumerate(ss)]
    chosen = 0
    while open_needs:
        count: dict[int, int] = {}
        for _, _, s in open_needs:
            for i in s:
                count[i] = count.get(i, 0) + 1
        best = max(count, key=lambda i: (count[i], -i))
        open_needs = [n for n in open_needs if best not in n[2]]
        chosen += 1
    return chosen


def coverage(za: Tensor, zb: Tensor, signed: bool, W_dec: Tensor | None = None,
             pairs: Sequence[MinimalPair] | None = None) -> dict[str, Any]:
    """How many pairs the SAE's latents cover and how many latents that takes (module docstring).

    Returns ``{"pairs", "covered", "max_pairs_one_latent", "best_latent", "best_latent_pairs",
    "latents_needed", "split_covered"}`` plus, for a non-negative SAE with ``W_dec``,
    ``"antipodal_covered"``. ``split_covered`` (any SAE): pairs with a latent on for a only
    and one on for b only (the way a one-sided code must separate them);
    ``split_latents_needed``: the greedy cover of those.
    """
    P = za.shape[0]
    name = (lambda p: f"{pairs[p].a}/{pairs[p].b}") if pairs else str
    out: dict[str, Any] = {"pairs": P, "signed": signed}
    A, B = splits(za, zb)
    split = A.any(1) & B.any(1)
    out["split_covered"] = int(split.sum())
    out["split_latents_needed"] = _greedy_cover(
        [[set(torch.nonzero(A[p]).flatten().tolist()), set(torch.nonzero(B[p]).flatten().tolist())]
         for p in range(P) if bool(split[p])])
    if signed:
        fl = flips(za, zb)
        per_latent = fl.sum(0)
        needs = [[set(torch.nonzero(fl[p]).flatten().tolist())] for p in range(P)
                 if bool(fl[p].any())]
        best = int(per_latent.argmax()) if P else -1
        out.update(covered=len(needs), max_pairs_one_latent=int(per_latent.max()) if P else 0,
                   best_latent=best,
                   best_latent_pairs=[name(p) for p in
                                      torch.nonzero(fl[:, best]).flatten().tolist()] if P else [],
                   latents_needed=_greedy_cover(needs))
        return out
    covered = A.any(1) & B.any(1)
    per_latent = (A | B)[covered].sum(0) if bool(covered.any()) else torch.zeros(za.shape[1])
    needs = [[set(torch.nonzero(A[p]).flatten().tolist()),
              set(torch.nonzero(B[p]).flatten().tolist())] for p in range(P) if bool(covered[p])]
    best = int(per_latent.argmax()) if P else -1
    out.update(covered=int(covered.sum()), max_pairs_one_latent=int(per_latent.max()) if P else 0,
               best_latent=best, latents_needed=_greedy_cover(needs),
               best_latent_pairs=[name(p) for p in torch.nonzero(((A | B)[:, best]) & covered)
                                  .flatten().tolist()] if P else [])
    if W_dec is not None:
        W = W_dec.float() / W_dec.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
        anti = 0
        for p in range(P):
            if not bool(covered[p]):
                continue
            ia, ib = torch.nonzero(A[p]).flatten(), torch.nonzero(B[p]).flatten()
            if bool(((W[ia] @ W[ib].T) < ANTIPODAL_COS).any()):
                anti += 1
        out["antipodal_covered"] = anti
    return out


def analyze_sae(sae, model=None, tok=None, *, model_ref: str | None = None,
                pairs: Sequence[MinimalPair] | None = None) -> dict[str, Any]:
    """Coverage of the shipped (or given) pairs by one SAE, at its own hook site.

    ``model``/``tok``: a loaded LM (else ``model_ref``, else the SAE's ``model_name``, is
    loaded). Returns :func:`coverage`'s dict plus ``"per_pair"``: for each pair the flipping
    latents (signed SAEs) and, for any SAE, the latents on for one word only.
    """
    from ..errors import UserError
    from ..lm import load_model
    from ..lm.hooks import parse_hook_name

    c = sae.cfg
    if c.hook_layer is not None:
        layer, site = c.hook_layer, c.hook_site or "resid_post"
    elif c.hook_name:
        layer, site = parse_hook_name(c.hook_name)
    else:
        raise UserError("the SAE records no hook layer; it cannot be run on words")
    if model is None:
        ref = model_ref or c.model_name
        if not ref:
            raise UserError("the SAE records no model_name; name the model to run")
        model, tok, _ = load_model(ref)
    pairs = list(pairs) if pairs is not None else load_pairs()
    acts = word_activations(model, tok, layer, site, sentences(pairs))
    za, zb = pair_codes(sae, pairs, acts)
    signed = bool(sae.op.signed)
    out = coverage(za, zb, signed, sae.W_dec.detach(), pairs)
    out.update(architecture=c.architecture, d_sae=c.d_sae, k=c.k, layer=layer, site=site)
    per = []
    fl = flips(za, zb) if signed else None
    A, B = splits(za, zb)
    for p, pr in enumerate(pairs):
        rec: dict[str, Any] = {"a": pr.a, "b": pr.b, "category": pr.category}
        if fl is not None:       # signed: the flipping latents
            ids = torch.nonzero(fl[p]).flatten().tolist()
            rec.update(latents=ids, z_a=[float(za[p, i]) for i in ids],
                       z_b=[float(zb[p, i]) for i in ids])
        # any SAE: the latents on for one word only
        ia, ib = torch.nonzero(A[p]).flatten().tolist(), torch.nonzero(B[p]).flatten().tolist()
        rec.update(on_a_only=ia, on_b_only=ib, z_on_a_only=[float(za[p, i]) for i in ia],
                   z_on_b_only=[float(zb[p, i]) for i in ib])
        per.append(rec)
    out["per_pair"] = per
    return out


def per_latent(result: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """:func:`analyze_sae`'s ``per_pair`` turned around: latent → the pairs it separates,
    ``[{"a", "b", "category", "z_a", "z_b", "kind"}]`` with ``kind`` = ``"flip"`` (fires on
    both with opposite signs), ``"a_only"`` or ``"b_only"`` (on for one word only: z of the
    other word is 0)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for pr in result.get("per_pair", []):
        base = {"a": pr["a"], "b": pr["b"], "category": pr["category"]}
        for k, i in enumerate(pr.get("latents", [])):
            out.setdefault(int(i), []).append({**base, "z_a": pr["z_a"][k], "z_b": pr["z_b"][k],
                                               "kind": "flip"})
        for side, other in (("a", "b"), ("b", "a")):
            zs = pr.get(f"z_on_{side}_only") or [None] * len(pr.get(f"on_{side}_only", []))
            for i, z in zip(pr.get(f"on_{side}_only", []), zs, strict=True):
                out.setdefault(int(i), []).append({**base, f"z_{side}": z, f"z_{other}": 0.0,
                                                   "kind": f"{side}_only"})
    return out
