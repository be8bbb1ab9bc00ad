"""The completion opposite test: the PMI arithmetic on hand-built log-probabilities, the
judge's labels and threshold with a fake completion scorer, the planted pair halves, and the
embedded model (slow): exact continuation log-probabilities and hot/cold above hot/printer."""

from __future__ import annotations

import re

import pytest

from abstopk.analysis.judge import JudgeConfig, judge_latents, load_prompts, validate
from abstopk.analysis.judge.completion import opposite_pmi, pmi_requests, render_templates
from abstopk.analysis.judge.config import THRESHOLDS
from abstopk.analysis.judge.planted import choose_threshold, planted_latents
from abstopk.analysis.judge.prompts import CompletionTemplate
from abstopk.analysis.minimal_pairs import load_pairs
from abstopk.errors import UserError

PAIRS = {frozenset((p.a, p.b)) for p in load_pairs()}


class Table:
    """log p(continuation | context) from a dict; counts the requests it was asked."""

    def __init__(self, table):
        self.table, self.asked = table, []

    def logprob(self, items):
        self.asked += list(items)
        return [self.table[i] for i in items]

    def chat(self, system, user, prefix):
        return f"<{system}|{user}>{prefix}"

    def meta(self):
        return {"kind": "table"}


class PairOracle(Table):
    """−1 when the context's and the continuation's words form a minimal pair, −9 otherwise:
    PMI 8 for the two sides of a pair, 0 for anything else."""

    def __init__(self):
        super().__init__({})

    def logprob(self, items):
        out = []
        for ctx, cont in items:
            x, y = re.search(r'"([^"]*)" is "$', ctx).group(1), cont.rstrip('"')
            out.append(-1.0 if frozenset((x, y)) in PAIRS else -9.0)
        return out


T1 = ("A {word} ->", " {word}.")
T2 = ("B {word} ->", " {word}.")


def test_pmi_is_symmetrised_and_averaged_by_hand():
    t = Table({("A hot ->", " cold."): -1.0, ("A thing ->", " cold."): -5.0,   # fwd PMI 4
               ("A cold ->", " hot."): -2.0, ("A thing ->", " hot."): -4.0,    # bwd PMI 2
               ("B hot ->", " cold."): -3.0, ("B thing ->", " cold."): -3.0,   # 0
               ("B cold ->", " hot."): -6.0, ("B thing ->", " hot."): -5.0})   # −1
    assert opposite_pmi([(["hot"], ["cold"])], t, [T1], "thing") == [pytest.approx(3.0)]
    # template 2: (0 + −1)/2 = −0.5; the mean of the templates: (3 − 0.5)/2
    t.asked = []
    both = opposite_pmi([(["hot"], ["cold"]), (["cold"], ["hot"])], t, [T1, T2], "thing")
    assert both == [pytest.approx(1.25), pytest.approx(1.25)]       # symmetric in A and B
    # every request scored once although two poles need the same ones
    assert len(t.asked) == len(set(t.asked)) == 8


def test_pmi_means_over_word_pairs_and_skips_identical_words():
    t = Table({("A a ->", " b."): -1.0, ("A b ->", " a."): -1.0,
               ("A c ->", " b."): -7.0, ("A b ->", " c."): -3.0,
               ("A n ->", " b."): -4.0, ("A n ->", " a."): -2.0, ("A n ->", " c."): -3.0})
    # pairs (a, b), (c, b): fwd = mean(−1+4, −7+4) = 0, bwd = mean(−1+2, −3+3) = 0.5
    assert opposite_pmi([(["a", "c"], ["b"])], t, [T1], "n") == [pytest.approx(0.25)]
    # identical words (case ignored) are no pair; no pair left: None
    assert opposite_pmi([(["B"], ["b"]), ([], ["b"])], t, [T1], "n") == [None, None]
    assert len(pmi_requests(["a", "c"], ["b"], [T1, T2], "n")) == 2 * 2 * 2 * 2
    with pytest.raises(ValueError, match="template"):
        opposite_pmi([(["a"], ["b"])], t, [], "n")


def test_chat_templates_are_rendered_by_the_scorer():
    temps = [CompletionTemplate('O "{word}" is "', '{word}"'),
             CompletionTemplate('O "{word}" is "', '{word}"', user='Opposite of "{word}"?')]
    r = render_templates(temps, Table({}), "sys")
    assert r[0] == ('O "{word}" is "', '{word}"')
    assert r[1] == ('<sys|Opposite of "{word}"?>O "{word}" is "', '{word}"')
    # the word fills the user message and the assistant's prefix alike
    req = pmi_requests(["hot"], ["cold"], r[1:], "thing")[0]
    assert req == ('<sys|Opposite of "hot"?>O "hot" is "', 'cold"')


def test_judge_uses_the_completion_test_and_its_threshold():
    planted = planted_latents(5, seed=3)
    lats = [lat for _, lat in planted]
    prompts = load_prompts()
    # the oracle's PMI: 8 × (matched pairs) / (word pairs) ≥ 8/3 for opposite poles, else 0
    recs = judge_latents(lats, None, prompts, JudgeConfig(opposite_threshold=1.0), signed=True,
                         completer=PairOracle())
    want = {"opposite": "bidirectional", "unrelated": "unidirectional",
            "one_sided": "unidirectional", "noise": "unclear"}
    assert [r["label"] for r in recs] == [want[t] for t, _ in planted]
    opp = [r for (t, _), r in zip(planted, recs, strict=True) if t == "opposite"]
    unr = [r for (t, _), r in zip(planted, recs, strict=True) if t == "unrelated"]
    # opposite poles hold whole pairs (PMI 8 for the matched words, 0 for the rest)
    assert all(r["opposite_test"] == "completion" and r["opposite_logodds"] is None
               and r["opposite_pmi"] == r["opposite_score"] > 0 for r in opp)
    assert all(r["opposite_score"] == 0.0 and not r["opposite"] for r in unr)
    # one-sided and noise latents lack a coherent pole: the completion test is not run
    assert all(r["opposite_score"] is None and not r["opposite"]
               for (t, _), r in zip(planted, recs, strict=True) if t in ("one_sided", "noise"))
    # the threshold is strict: a score equal to it is not "opposite"
    top = min(r["opposite_score"] for r in opp)
    recs2 = judge_latents(lats, None, prompts, JudgeConfig(opposite_threshold=top),
                          signed=True, completer=PairOracle())
    n_opp = sum(r["opposite"] for r in recs2)
    assert n_opp == sum(r["opposite_score"] > top for r in opp) < len(opp)
    assert JudgeConfig().threshold() == THRESHOLDS["completion"]
    assert JudgeConfig(opposite_threshold=2).threshold() == 2.0
    with pytest.raises(ValueError, match="completion scorer"):
        judge_latents(lats, None, prompts, JudgeConfig(), signed=True)
    v1 = load_prompts(prompts.source.replace("v2", "v1").replace("abstopk/", "src/abstopk/"))
    with pytest.raises(UserError, match="no completion templates"):
        judge_latents(lats, None, v1, JudgeConfig(), signed=True, completer=PairOracle())


def test_validation_with_pair_halves_and_related_latents():
    res = validate(None, JudgeConfig(), n_per_type=4, seed=0, pairs="even", related=4,
                   detect=False, completer=PairOracle())
    assert res["opposite_auc"] == 1.0
    # related latents (two same-side groups) hold no minimal pair: PMI 0, never opposite
    assert res["opposite_auc_related"] == 1.0
    assert res["judge"]["confusion"]["related"] == {"unidirectional": 4}
    assert res["opposite_test"] == "completion"
    thr = choose_threshold(res)
    assert 0.0 < thr < min(r["opposite_score"] for r in res["latents"]
                           if r["type"] == "opposite")


def _words(lat):
    return {ex["tokens"][1] for key in ("top_pos", "top_neg") for ex in lat[key]}


def test_pair_halves_share_no_pair_and_old_draws_are_kept():
    pairs = load_pairs()
    even = {w for i, p in enumerate(pairs) if i % 2 == 0 for w in (p.a, p.b)}
    odd = {w for i, p in enumerate(pairs) if i % 2 == 1 for w in (p.a, p.b)}
    ev = planted_latents(10, seed=0, pairs="even", related=5)
    od = planted_latents(10, seed=1, pairs="odd", related=5)
    words_ev = set().union(*(_words(lat) for t, lat in ev if t not in ("one_sided", "noise")))
    words_od = set().union(*(_words(lat) for t, lat in od if t not in ("one_sided", "noise")))
    assert words_ev <= even and words_od <= odd
    # words that sit in both halves (her: his and him) are the only overlap
    assert words_ev & words_od <= even & odd
    # related latents: two disjoint groups of the same side of gendered pairs
    side = {p.a: "a" for p in pairs} | {p.b: "b" for p in pairs}
    for t, lat in ev:
        if t == "related":
            pos = {ex["tokens"][1] for ex in lat["top_pos"]}
            neg = {ex["tokens"][1] for ex in lat["top_neg"]}
            assert not pos & neg and len({side[w] for w in pos | neg}) == 1
    # adding related latents leaves the four types' draws as they were
    assert planted_latents(10, seed=0) == planted_latents(10, seed=0, related=3)[:40]
    with pytest.raises(ValueError, match="pairs"):
        planted_latents(2, pairs="first")


@pytest.mark.slow
def test_embedded_completion_scores_hot_cold_above_hot_printer(lm):
    """Continuation log-probabilities equal a plain forward (multi-token words included);
    with the shipped templates hot/cold and man/woman score above the default threshold,
    hot/printer and king/window below it."""
    import torch

    from abstopk.analysis.judge.completion import CompletionScorer

    model, tok, _ = lm
    sc = CompletionScorer(model, tok, batch_size=2)
    items = [('The opposite of "hot" is "', 'cold"'), ('The opposite of "hot" is "', 'printer"'),
             ('The opposite of "hot" is "', 'policewoman"'), ('The opposite of "man" is "', 'wo"')]
    # contexts sharing a prefix (run once), and a call where they share none
    got = sc.logprob(items) + sc.logprob(items + [("x", "y")])
    for (c, w), g in zip(items + items + [("x", "y")], got, strict=True):
        ci = tok(c, add_special_tokens=False)["input_ids"]
        wi = tok(w, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = model(torch.tensor([ci + wi])).logits[0].float().log_softmax(-1)
        assert g == pytest.approx(sum(float(lp[len(ci) - 1 + k, wi[k]])
                                      for k in range(len(wi))), abs=1e-3)
    p = load_prompts()
    temps = render_templates(p.completion_templates, sc, p.completion_system)
    s = opposite_pmi([(["hot"], ["cold"]), (["hot"], ["printer"]), (["man"], ["woman"]),
                      (["king"], ["window"])], sc, temps, p.completion_neutral)
    thr = JudgeConfig().threshold()
    assert s[0] > thr > s[1] and s[2] > thr > s[3]


def test_cli_refuses_bad_choices_before_loading_a_model(capsys):
    from cli_runner import run_cli

    code, _, err = run_cli(["analyze", "judge-check", "--pairs", "first"], capsys)
    assert code == 2 and "all, even, odd" in err and "first" in err
    code, _, err = run_cli(["analyze", "judge-check", "--opposite-test", "vibes"], capsys)
    assert code == 2 and "opposite_test" in err
    code, _, err = run_cli(["analyze", "judge-check", "--endpoint-url", "http://127.0.0.1:9/v1",
                            "--endpoint-model", "m"], capsys)
    assert code == 2 and "needs a local model" in err
