"""The rater and admin pages: static HTML, CSS and scripts. The HTML holds no data; the scripts fetch the API
with the token (from the page's `#token=...` fragment, which never reaches the server, or typed in) and put
every text into the DOM with `textContent`, so markup in a prompt or a response is shown as text."""

from __future__ import annotations

CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1rem; color: #222; }
h1 { font-size: 1.3rem; } h2 { font-size: 1.05rem; margin: .2rem 0; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f6f6; border: 1px solid #ddd;
        border-radius: 4px; padding: .6rem; margin: .3rem 0 .8rem; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.choices button { margin: .2rem; padding: .5rem .8rem; border: 1px solid #888; border-radius: 4px; background: #fff; }
.choices button.selected { background: #2b6cb0; color: #fff; border-color: #2b6cb0; }
kbd { font-size: .8em; border: 1px solid #aaa; border-radius: 3px; padding: 0 .25em; }
fieldset { border: 1px solid #ddd; margin: .3rem 0; } legend { font-weight: 600; }
textarea { width: 100%; min-height: 4rem; box-sizing: border-box; }
#error { color: #b00020; } .muted { color: #666; }
table { border-collapse: collapse; font-size: .9rem; } td, th { border: 1px solid #ccc; padding: .25rem .5rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tr.flagged { background: #fff1f0; }
.hidden { display: none; }
"""

_HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="stylesheet" href="/static/label.css">
</head>"""

_LOGIN = """<form id="login" class="hidden"><label>Token <input id="token-input" type="password" size="50"></label>
<button type="submit">Start</button></form>"""

RATER_HTML = _HEAD.format(title="preftune label") + """<body data-state="loading">
<h1>Which response is better?</h1>""" + _LOGIN + """
<p id="progress" class="muted"></p><p id="error" role="alert"></p>
<main id="task" class="hidden">
<h2>Prompt</h2><div id="prompt" class="text"></div>
<div class="pair"><section><h2>Response A</h2><div id="response-a" class="text"></div></section>
<section><h2>Response B</h2><div id="response-b" class="text"></div></section></div>
<div class="choices" id="choices">
<button type="button" data-choice="a_much_better"><kbd>1</kbd> A much better</button>
<button type="button" data-choice="a_better"><kbd>2</kbd> A better</button>
<button type="button" data-choice="tie"><kbd>3</kbd> Tie</button>
<button type="button" data-choice="b_better"><kbd>4</kbd> B better</button>
<button type="button" data-choice="b_much_better"><kbd>5</kbd> B much better</button></div>
<div id="rubric"></div>
<label for="why">Why? (optional)</label><textarea id="why" maxlength="4000"></textarea>
<p><button type="button" id="submit" disabled>Submit <kbd>Enter</kbd></button>
<span class="muted">Keys: <kbd>1</kbd>-<kbd>5</kbd> choose, <kbd>Enter</kbd> submits
(<kbd>Ctrl</kbd>+<kbd>Enter</kbd> from the why box).</span></p>
</main>
<p id="done" class="hidden">Nothing left to label. Thank you!</p>
<script src="/static/rater.js"></script></body></html>"""

_TOKEN_JS = """
function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) { sessionStorage.setItem("preftune-token", decodeURIComponent(m[1]));
           history.replaceState(null, "", location.pathname); }
  return sessionStorage.getItem("preftune-token");
}
function askToken(start) {
  const form = document.getElementById("login");
  form.classList.remove("hidden");
  form.addEventListener("submit", (e) => { e.preventDefault();
    sessionStorage.setItem("preftune-token", document.getElementById("token-input").value.trim());
    form.classList.add("hidden"); start(); });
}
async function api(path, opts) {
  opts = opts || {};
  opts.headers = Object.assign({"Authorization": "Bearer " + sessionStorage.getItem("preftune-token")},
                               opts.headers || {});
  return fetch(path, opts);
}
async function detail(r) {
  try { return (await r.json()).detail || r.statusText; } catch (e) { return r.statusText; }
}
"""

RATER_JS = _TOKEN_JS + """
const $ = (id) => document.getElementById(id);
let current = null, choice = null, busy = false;
const KEYS = {"1": "a_much_better", "2": "a_better", "3": "tie", "4": "b_better", "5": "b_much_better"};

function setState(s) { document.body.dataset.state = s; }
function select(c) {
  choice = c;
  for (const b of document.querySelectorAll("#choices button")) b.classList.toggle("selected", b.dataset.choice === c);
  $("submit").disabled = !c;
}
function rubricRow(dim) {
  const fs = document.createElement("fieldset");
  const lg = document.createElement("legend"); lg.textContent = dim; fs.appendChild(lg);
  for (const [value, text] of [["a", "A"], ["tie", "same"], ["b", "B"]]) {
    const lab = document.createElement("label"); const inp = document.createElement("input");
    inp.type = "radio"; inp.name = "dim-" + dim; inp.value = value; inp.dataset.dim = dim;
    lab.appendChild(inp); lab.appendChild(document.createTextNode(" " + text + " ")); fs.appendChild(lab);
  }
  return fs;
}
async function showProgress() {
  const r = await api("/api/progress");
  if (r.ok) { const p = await r.json();
    $("progress").textContent = p.labelled + " labelled, about " + p.remaining + " left"; }
}
async function load() {
  setState("loading"); $("error").textContent = "";
  const r = await api("/api/next");
  if (r.status === 401) { sessionStorage.removeItem("preftune-token"); $("error").textContent = await detail(r);
                          askToken(load); return; }
  if (r.status === 204) { current = null; $("task").classList.add("hidden"); $("done").classList.remove("hidden");
                          await showProgress(); setState("done"); return; }
  if (!r.ok) { $("error").textContent = await detail(r); setState("error"); return; }
  current = await r.json();
  $("prompt").textContent = current.prompt;
  $("response-a").textContent = current.response_a;
  $("response-b").textContent = current.response_b;
  const rub = $("rubric"); rub.replaceChildren(...current.rubric.map(rubricRow));
  $("why").value = ""; select(null);
  if (document.activeElement && document.activeElement.blur) document.activeElement.blur();  // keys work again
  $("task").classList.remove("hidden"); $("task").dataset.assignment = current.assignment_id;
  await showProgress(); setState("ready");
}
async function submit() {
  if (!current || !choice || busy) return;
  busy = true; setState("sending");
  const attributes = {};
  for (const inp of document.querySelectorAll("#rubric input:checked")) attributes[inp.dataset.dim] = inp.value;
  const body = {assignment_id: current.assignment_id, choice: choice, attributes: attributes,
                rationale: $("why").value};
  try {
    const r = await api("/api/labels", {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify(body)});
    if (r.status === 201) { await load(); }
    else { $("error").textContent = r.status + ": " + (await detail(r)); setState("error");
           if (r.status === 409 || r.status === 410 || r.status === 404) await load(); }
  } finally { busy = false; }
}
document.addEventListener("keydown", (e) => {
  const typing = e.target.tagName === "TEXTAREA" || (e.target.tagName === "INPUT" && e.target.type !== "radio");
  if (e.key === "Enter" && (!typing || e.ctrlKey)) { e.preventDefault(); submit(); return; }
  if (!typing && KEYS[e.key] && current) { e.preventDefault(); select(KEYS[e.key]); }
});
for (const b of document.querySelectorAll("#choices button")) {
  b.addEventListener("click", () => select(b.dataset.choice));
}
$("submit").addEventListener("click", submit);
if (readToken()) load(); else askToken(load);
"""

ADMIN_HTML = _HEAD.format(title="preftune label: admin") + """<body data-state="loading">
<h1>Labelling: admin</h1>""" + _LOGIN + """
<p id="error" role="alert"></p><p id="totals"></p>
<h2>Raters</h2>
<table id="raters"><thead><tr><th>rater</th><th>labels</th><th>open</th><th>honeypots</th>
<th>honeypot accuracy</th><th>95% Wilson interval</th><th>kappa with others</th><th>shared</th>
<th>median s / label</th><th>ties</th><th>first-shown picked</th><th>longer picked</th><th>flags</th></tr></thead>
<tbody></tbody></table>
<h2>Agreement between raters (Cohen's kappa)</h2>
<table id="pairwise"><thead><tr><th>raters</th><th>kappa</th><th>shared items</th></tr></thead><tbody></tbody></table>
<h2>Latest labels</h2>
<table id="recent"><thead><tr><th>rater</th><th>item</th><th>prompt</th><th>choice</th><th>honeypot</th>
<th>seconds</th></tr></thead><tbody></tbody></table>
<p class="muted">Refreshes every 5 seconds.</p>
<script src="/static/admin.js"></script></body></html>"""

ADMIN_JS = _TOKEN_JS + """
const $ = (id) => document.getElementById(id);
const fmt = (v, d) => v === null || v === undefined ? "-" : (typeof v === "number" ? v.toFixed(d) : String(v));
function row(cells, cls) {
  const tr = document.createElement("tr"); if (cls) tr.className = cls;
  for (const [v, num] of cells) { const td = document.createElement("td"); td.textContent = v;
                                  if (num) td.className = "num"; tr.appendChild(td); }
  return tr;
}
function fill(id, rows) { document.querySelector("#" + id + " tbody").replaceChildren(...rows); }
async function refresh() {
  const r = await api("/api/stats");
  if (r.status === 401 || r.status === 403) { $("error").textContent = await detail(r);
    sessionStorage.removeItem("preftune-token"); askToken(refresh); setState("error"); return false; }
  if (!r.ok) { $("error").textContent = await detail(r); return true; }
  const s = await r.json(); $("error").textContent = "";
  $("totals").textContent = s.num_labels + " labels on " + s.num_pairs + " pairs (+" + s.num_honeypots +
    " honeypots), " + s.num_complete + " pairs with " + s.labels_per_pair + " labels, " + s.num_open + " open";
  fill("raters", s.raters.map((x) => row([[x.rater], [x.num_labels, 1], [x.num_open, 1], [x.num_honeypots, 1],
    [fmt(x.honeypot_accuracy, 2), 1],
    [x.honeypot_interval ? x.honeypot_interval.map((v) => v.toFixed(2)).join(" - ") : "-", 1],
    [fmt(x.kappa_with_others, 2), 1], [x.num_shared, 1], [fmt(x.median_seconds, 1), 1], [fmt(x.tie_rate, 2), 1],
    [fmt(x.first_shown_share, 2), 1], [fmt(x.longer_share, 2), 1], [x.flags.join("; ")]],
    x.flags.length ? "flagged" : "")));
  fill("pairwise", s.pairwise.map((p) => row([[p.raters.join(" / ")], [fmt(p.kappa, 2), 1], [p.num_shared, 1]])));
  fill("recent", s.recent.map((x) => row([[x.rater], [x.item], [x.prompt], [x.choice], [x.honeypot ? "yes" : ""],
    [fmt(x.seconds, 1), 1]])));
  setState("ready"); return true;
}
function setState(s) { document.body.dataset.state = s; }
async function loop() { if (await refresh()) setTimeout(loop, 5000); }
if (readToken()) loop(); else askToken(loop);
"""
