"""The dashboard's static assets: one stylesheet and one script (no CDN, no network).

``SITE_JS`` drives the index page over ``window.ABSTOPK_INDEX`` (written to
``data/index.js`` by :func:`~abstopk.report.dashboard.site.build_site`): free-text search
(a latent number, a label, an explanation or a token), sort (index, firing frequency, per-sign
frequency, bidirectionality score, max z per sign, minimal pairs), a label filter and a
"with minimal-pair flips only" switch. Data text is put into
the page with ``textContent`` only, never as HTML.
"""

from __future__ import annotations

__all__ = ["SITE_CSS", "SITE_JS"]

SITE_CSS = """
:root { --pos: 214, 39, 40; --neg: 31, 119, 180; --fg: #222; --muted: #666; }
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); margin: 0 auto;
       max-width: 1400px; padding: 12px 20px; }
h1 { font-size: 22px; margin: 8px 0; } h2 { font-size: 17px; margin: 16px 0 6px; }
h3 { font-size: 14px; margin: 12px 0 4px; color: var(--muted); } h4 { margin: 6px 0 2px; }
nav a { margin-right: 6px; }
.badge { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #eee;
         vertical-align: middle; }
.lab-bidirectional { background: #f3e0ff; } .lab-unidirectional { background: #e6f0e6; }
.lab-dead { background: #ddd; color: #777; }
.expl { color: var(--muted); font-style: italic; }
.stats { display: flex; gap: 10px; flex-wrap: wrap; }
.stat { border: 1px solid #ddd; border-radius: 6px; padding: 4px 10px; min-width: 110px; }
.stat .k { font-size: 12px; color: var(--muted); } .stat .v { font-size: 16px; }
.stat.pos .v { color: rgb(var(--pos)); } .stat.neg .v { color: rgb(var(--neg)); }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
.side { border-top: 4px solid; padding-top: 4px; min-width: 0; }
.side.pos { border-color: rgb(var(--pos)); } .side.neg { border-color: rgb(var(--neg)); }
.ctxs { font-family: ui-monospace, monospace; font-size: 12.5px; }
.ctx { display: flex; gap: 8px; border-bottom: 1px solid #f0f0f0; padding: 2px 0; }
.ctx .val { min-width: 62px; text-align: right; font-weight: 600; }
.ctx.pos .val { color: rgb(var(--pos)); } .ctx.neg .val { color: rgb(var(--neg)); }
.ctx .toks { white-space: pre; overflow: hidden; text-overflow: ellipsis; }
.ctx mark { border-radius: 2px; outline: 1px solid rgba(0,0,0,.25); color: inherit; }
.ctx.pos mark { background: rgba(var(--pos), var(--a)); }
.ctx.neg mark { background: rgba(var(--neg), var(--a)); }
.qbin { border-left: 4px solid #ccc; padding-left: 8px; margin: 6px 0; }
.qbin.pos { border-color: rgba(var(--pos), .6); } .qbin.neg { border-color: rgba(var(--neg), .6); }
table.logits td.tok { font-family: ui-monospace, monospace; white-space: pre; }
table.logits.pos td.num { color: rgb(var(--pos)); } table.logits.neg td.num { color: rgb(var(--neg)); }
table { border-collapse: collapse; }
.tbl th, .tbl td, .logits td { border-bottom: 1px solid #eee; padding: 2px 8px; }
.tbl th { text-align: left; background: #fafafa; cursor: default; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pos { color: rgb(var(--pos)); } td.neg { color: rgb(var(--neg)); }
td.tok, td.tmpl { font-family: ui-monospace, monospace; white-space: pre; }
svg.hist rect.pos { fill: rgb(var(--pos)); } svg.hist rect.neg { fill: rgb(var(--neg)); }
svg.hist rect.zero { fill: #999; } svg.hist .axis { stroke: #999; }
svg.hist .zero { stroke: #333; stroke-dasharray: 3 2; } svg.hist .lbl { font-size: 11px; fill: #555; }
.empty { color: #999; font-style: italic; }
.controls { display: flex; gap: 12px; align-items: center; margin: 10px 0; flex-wrap: wrap; }
.controls input { width: 280px; padding: 4px; }
#latents td.tok { max-width: 160px; overflow: hidden; text-overflow: ellipsis; }
@media (max-width: 900px) { .sides { grid-template-columns: 1fr; } }
"""

SITE_JS = r"""
(function () {
  "use strict";
  var DATA = window.ABSTOPK_INDEX;
  var tbody = document.querySelector("#latents tbody");
  if (!DATA || !tbody) { return; }
  var rows = DATA.latents, LIMIT = 1000;
  var search = document.getElementById("search");
  var sortSel = document.getElementById("sort");
  var labelSel = document.getElementById("label");
  var count = document.getElementById("count");
  var NUM = function (v) { return (typeof v === "number" && isFinite(v)) ? v : null; };
  var SORTS = {
    index: function (r) { return r.i; },
    freq: function (r) { return -((NUM(r.fp) || 0) + (NUM(r.fn) || 0)); },
    freq_pos: function (r) { return -(NUM(r.fp) || 0); },
    freq_neg: function (r) { return -(NUM(r.fn) || 0); },
    bidir: function (r) { var b = NUM(r.b); return b === null ? Infinity : -b; },
    max_pos: function (r) { return -(NUM(r.mp) || 0); },
    max_neg: function (r) { return NUM(r.mn) || 0; },
    pairs: function (r) { return -(r.np || 0); }
  };
  var pairsOnly = document.getElementById("pairs-only");
  var labels = {};
  rows.forEach(function (r) { labels[r.l || "unlabelled"] = true; });
  Object.keys(labels).sort().forEach(function (l) {
    var o = document.createElement("option"); o.value = l; o.textContent = l;
    labelSel.appendChild(o);
  });
  function fmt(v, pct) {
    if (NUM(v) === null) { return "\u2014"; }
    if (v === 0) { return pct ? "0 %" : "0"; }
    if (pct) { return (100 * v).toPrecision(3) + " %"; }
    var s = Math.abs(v).toPrecision(3);
    return (v < 0 ? "\u2212" : "+") + s;
  }
  function haystack(r) {
    return [r.l || "unlabelled", r.jl || "", r.e || "", r.tp || "", r.tn || "",
            (r.lp || []).join("\u0001"), (r.ln || []).join("\u0001")].join("\u0001").toLowerCase();
  }
  rows.forEach(function (r) { r._h = haystack(r); });
  function cell(tr, text, cls) {
    var td = document.createElement("td"); td.textContent = text;
    if (cls) { td.className = cls; }
    tr.appendChild(td); return td;
  }
  function render() {
    var q = search.value.trim().toLowerCase();
    var lab = labelSel.value;
    var key = SORTS[sortSel.value] || SORTS.index;
    var isNum = /^#?\d+$/.test(q);
    var hit = rows.filter(function (r) {
      if (lab !== "all" && (r.l || "unlabelled") !== lab) { return false; }
      if (pairsOnly && pairsOnly.checked && !(r.np > 0)) { return false; }
      if (!q) { return true; }
      if (isNum && r.i === parseInt(q.replace("#", ""), 10)) { return true; }
      return r._h.indexOf(q) >= 0;
    });
    hit.sort(function (a, b) { var d = key(a) - key(b); return d !== 0 ? d : a.i - b.i; });
    tbody.textContent = "";
    hit.slice(0, LIMIT).forEach(function (r) {
      var tr = document.createElement("tr"); tr.dataset.index = r.i;
      var td = document.createElement("td");
      if (r.page) {
        var a = document.createElement("a");
        a.href = "latents/" + String(r.i).padStart(6, "0") + ".html";
        a.textContent = String(r.i); td.appendChild(a);
      } else { td.textContent = String(r.i); }
      td.className = "num"; tr.appendChild(td);
      cell(tr, r.l || "unlabelled"); cell(tr, r.jl || "\u2014");
      cell(tr, fmt(r.fp, true), "num pos"); cell(tr, fmt(r.fn, true), "num neg");
      cell(tr, fmt(r.mp), "num pos"); cell(tr, fmt(r.mn), "num neg");
      cell(tr, NUM(r.b) === null ? "\u2014" : r.b.toPrecision(3), "num");
      cell(tr, String(r.np || 0), "num");
      cell(tr, r.tn || "", "tok neg"); cell(tr, r.tp || "", "tok pos");
      cell(tr, r.e || "");
      tbody.appendChild(tr);
    });
    count.textContent = hit.length + " of " + rows.length + " latents" +
      (hit.length > LIMIT ? " (first " + LIMIT + " shown; refine the search)" : "");
  }
  search.addEventListener("input", render);
  sortSel.addEventListener("change", render);
  labelSel.addEventListener("change", render);
  if (pairsOnly) { pairsOnly.addEventListener("change", render); }
  var params = new URLSearchParams(window.location.search);
  if (params.get("q")) { search.value = params.get("q"); }
  if (params.get("sort") && SORTS[params.get("sort")]) { sortSel.value = params.get("sort"); }
  render();
})();
"""
