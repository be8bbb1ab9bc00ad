"""The local judge: prompts, the pipeline with an oracle scorer (known answers), the planted
validation, the endpoint scorer against a stub server, and the embedded model (slow)."""

from __future__ import annotations

import http.server
import json
import re
import threading

import pytest

from abstopk.analysis.judge import (
    EndpointScorer,
    JudgeConfig,
    judge_latents,
    load_prompts,
    planted_latents,
    validate,
)
from abstopk.analysis.judge.prompts import explain_pole, format_context, pole_words
from abstopk.analysis.minimal_pairs import load_pairs
from abstopk.errors import UserError

PAIRS = {(p.a, p.b) for p in load_pairs()} | {(p.b, p.a) for p in load_pairs()}
QUESTION = JudgeConfig(opposite_test="question")


class Oracle:
    """Answers like a perfect judge: Yes iff the marked word is one of the explanation's words;
    Yes iff group A and group B are the two sides of the same minimal pairs."""

    def __init__(self):
        self.calls = 0

    def meta(self):
        return {"kind": "oracle"}

    def score(self, messages):
        out = []
        for m in messages:
            self.calls += 1
            if m.startswith("Do "):
                first, second = m.split(" form a pair")[0][3:].split(" and ")
                a, b = re.findall(r'"([^"]*)"', first), re.findall(r'"([^"]*)"', second)
                ok = len(a) == len(b) and len(a) > 0 and all(
                    any((x, y) in PAIRS for y in b) for x in a)
            else:
                expl, text = m.split("Text:")
                marked = re.findall(r"«([^»]*)»", text)[0]
                ok = marked in re.findall(r"«([^»]*)»", expl)
            out.append(5.0 if ok else -5.0)
        return out


def test_prompts_file_is_versioned_and_checked(tmp_path):
    p = load_prompts()
    assert p.version == 2 and len(p.sha256) == 64 and len(p.completion_templates) == 2
    bad = tmp_path / "p.toml"
    bad.write_text('version = 2\nsystem = "s"\ndetection = "{explanation}"\nopposite = "x"\n')
    with pytest.raises(UserError, match="lacks the field"):
        load_prompts(bad)


def test_context_and_explanation_text():
    ex = {"tokens": ["The", " old", " man", " walked", "\n", "in"], "focus": 2}
    assert format_context(ex, 1) == "old «man» walked"
    assert format_context(ex, 10) == "The old «man» walked in"
    exs = [{"tokens": [" he"], "focus": 0}, {"tokens": [" she"], "focus": 0},
           {"tokens": [" she"], "focus": 0}]
    assert pole_words(exs, 5) == ["she", "he"]
    assert explain_pole(["she", "he"]) == "words such as «she», «he»"


def test_oracle_judge_labels_planted_latents_exactly():
    planted = planted_latents(6, seed=3)
    oracle = Oracle()
    recs = judge_latents([lat for _, lat in planted], oracle, load_prompts(), QUESTION,
                         signed=True)
    want = {"opposite": "bidirectional", "unrelated": "unidirectional",
            "one_sided": "unidirectional", "noise": "unclear"}
    assert [r["label"] for r in recs] == [want[t] for t, _ in planted]
    assert oracle.calls == len(planted)          # coherence poles: one opposite prompt each
    oracle = Oracle()
    recs = judge_latents([lat for _, lat in planted], oracle, load_prompts(),
                         JudgeConfig(pole_test="detection", opposite_test="question"),
                         signed=True)
    assert [r["label"] for r in recs] == [want[t] for t, _ in planted]
    # 2 poles × (2 held-out + 2 negatives) detection prompts + 1 opposite prompt per latent
    assert oracle.calls == len(planted) * 9


def test_unsigned_sae_is_never_bidirectional_but_reports_the_axis():
    planted = [lat for t, lat in planted_latents(4, seed=1) if t == "opposite"]
    recs = judge_latents(planted, Oracle(), load_prompts(), QUESTION, signed=False)
    assert all(r["label"] == "unidirectional" and r["opposite_axis"] for r in recs)


def test_validation_report_with_oracle_and_a_coin():
    res = validate(Oracle(), QUESTION, n_per_type=5, seed=0)
    for who in ("judge", "judge_coherence_poles", "judge_detection_poles"):
        assert res[who]["accuracy"]["accuracy"] == 1.0, who
    assert res["detection_auc"] == 1.0 and res["opposite_auc"] == 1.0
    # the proxy calls two coherent unrelated poles bidirectional: it cannot tell opposites
    assert res["proxy"]["confusion"]["unrelated"].get("bidirectional", 0) == 5
    assert res["proxy"]["accuracy"]["correct"] == 15

    class Always:
        def meta(self):
            return {"kind": "yes"}

        def score(self, messages):
            return [3.0] * len(messages)

    res = validate(Always(), QUESTION, n_per_type=5, seed=0)
    assert res["detection_auc"] == 0.5 and res["opposite_auc"] == 0.5
    # D = 3 − 3 = 0: no pole detected; every pair "opposite"
    assert res["judge_detection_poles"]["confusion"]["noise"] == {"unclear": 5}
    assert res["judge"]["confusion"]["unrelated"] == {"bidirectional": 5}


class _Stub(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.seen.append((self.path, self.headers.get("Authorization"), body))
        yes = "Yes" if "«man»" in body["messages"][1]["content"] else "No"
        top = [{"token": yes, "logprob": -0.1}, {"token": " yes" if yes == "No" else " no",
                                                 "logprob": -3.0}]
        data = json.dumps({"choices": [{"logprobs": {"content": [{"top_logprobs": top}]}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, *a):
        pass


def test_endpoint_scorer_against_a_stub(monkeypatch):
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("JUDGE_KEY", "k123")
        s = EndpointScorer(f"http://127.0.0.1:{srv.server_address[1]}/v1", "m", "sys",
                           api_key_env="JUDGE_KEY")
        d = s.score(["a «man» b", "a «dog» b"])
        assert d == pytest.approx([-0.1 + 3.0, -3.0 + 0.1])
        path, auth, body = _Stub.seen[0]
        assert path == "/v1/chat/completions" and auth == "Bearer k123"
        assert body["max_tokens"] == 1 and body["messages"][0]["content"] == "sys"
    finally:
        srv.shutdown()
    with pytest.raises(UserError, match="did not answer"):
        EndpointScorer("http://127.0.0.1:9/v1", "m", "s", api_key_env="NONE").score(["x"])


def test_config_validation():
    with pytest.raises(ValueError, match="endpoint_model"):
        JudgeConfig(endpoint_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="http"):
        JudgeConfig(endpoint_url="file:///etc", endpoint_model="m")
    with pytest.raises(ValueError, match="held_out"):
        JudgeConfig(held_out=0)
    with pytest.raises(ValueError, match="needs a local model"):
        JudgeConfig(endpoint_url="http://127.0.0.1:1/v1", endpoint_model="m")
    JudgeConfig(endpoint_url="http://127.0.0.1:1/v1", endpoint_model="m",
                opposite_test="question")
    with pytest.raises(ValueError, match="opposite_test"):
        JudgeConfig(opposite_test="vibes")


@pytest.mark.slow
def test_local_scorer_shared_prefix_equals_plain_forward(lm):
    """The shared-prefix batched path gives the log-odds of one plain forward per prompt."""
    import torch

    from abstopk.analysis.judge import LocalChatScorer

    model, tok, _ = lm
    msgs = ['Are the words "hot" and the words "cold" opposites? Answer Yes or No.',
            'Are the words "king" and the words "table" opposites? Answer Yes or No.',
            "Is it raining? Answer Yes or No."]
    fast = LocalChatScorer(model, tok, "Answer Yes or No.", batch_size=2).score(msgs)
    s = LocalChatScorer(model, tok, "Answer Yes or No.", share_prefix=False, batch_size=1)
    plain = []
    for m in msgs:
        ids = torch.tensor([s._ids(m)])
        with torch.no_grad():
            lp = model(ids).logits[0, -1].float().log_softmax(-1)
        plain.append(float(torch.logsumexp(lp[s.yes], 0) - torch.logsumexp(lp[s.no], 0)))
    assert fast == pytest.approx(plain, abs=2e-3)
    assert len(set(round(x, 3) for x in fast)) == 3        # the prompts are told apart


def test_choose_threshold_separates_opposites_from_the_rest():
    from abstopk.analysis.judge.planted import choose_threshold

    def r(t, d, coh=True):
        return {"type": t, "opposite_logodds": d, "coherent_pos": coh, "coherent_neg": coh}

    val = {"latents": [r("opposite", 0.3), r("opposite", -0.2), r("unrelated", -0.9),
                       r("unrelated", -0.4), r("noise", 5.0, coh=False)]}
    assert choose_threshold(val) == pytest.approx(-0.3)
    # overlapping scores: J = 1/2 at -0.05 (1 of 2 opposites, no unrelated) and at -0.7
    # (2 of 2, 1 of 2 unrelated): the larger threshold wins
    val["latents"][1]["opposite_logodds"] = -0.5
    assert choose_threshold(val) == pytest.approx(-0.05)


@pytest.mark.slow
def test_embedded_judge_end_to_end_on_planted_latents(lm):
    """The embedded 135M judge, end to end on 8 planted latents: one-sided and noise latents
    get their labels (the pole test needs no model), every opposite question gets a finite
    log-odds, and the labels are reproducible. Whether it tells opposites from unrelated
    poles is measured, not asserted: on planted latents it is near chance (docs/latent-stats.md)."""
    from abstopk.analysis.judge import LocalChatScorer

    model, tok, _ = lm
    prompts = load_prompts()
    scorer = LocalChatScorer(model, tok, prompts.system)
    res = validate(scorer, QUESTION, n_per_type=2, seed=5, detect=False)
    conf = res["judge"]["confusion"]
    assert conf["one_sided"] == {"unidirectional": 2} and conf["noise"] == {"unclear": 2}
    assert sum(conf["opposite"].values()) == 2
    d = [r["opposite_logodds"] for r in res["latents"]]
    assert all(abs(x) < 30 for x in d) and len(set(round(x, 4) for x in d)) > 4
    again = validate(scorer, QUESTION, n_per_type=2, seed=5, detect=False)
    assert [r["opposite_logodds"] for r in again["latents"]] == pytest.approx(d, abs=1e-4)
