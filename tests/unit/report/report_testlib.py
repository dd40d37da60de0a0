"""Helpers of the report tests: synthetic run folders and a stand-in PNG renderer."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

RUNS = Path(__file__).resolve().parents[2] / "fixtures" / "runs"
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def dpo_rows(n: int = 40, chosen_slope: float = -30.0, margin_slope: float = 3.0) -> list[dict]:
    """Noise-free DPO-like metrics: logps/chosen = -100 + chosen_slope*t, margin = margin_slope*t."""
    rows = []
    for i in range(n):
        t = i / (n - 1)
        rows.append({"step": i + 1, "epoch": t, "train/loss": 0.69 - 0.3 * t,
                     "train/rewards/chosen": 0.1 * chosen_slope * t, "train/rewards/rejected": 0.1 * (chosen_slope * t)
                     - margin_slope * t, "train/rewards/margin": margin_slope * t,
                     "train/rewards/accuracy": 0.6 + 0.3 * t, "train/logps/chosen": -100 + chosen_slope * t,
                     "train/logps/rejected": -100 + chosen_slope * t - 10 * margin_slope * t, "train/kl": t,
                     "train/grad_norm": 1.0, "train/lr": 1e-6, "train/lengths/chosen": 50.0,
                     "train/lengths/rejected": 40.0, "train/foo": 2.0 * t})
        if (i + 1) % 10 == 0:
            rows.append({"step": i + 1, "eval/loss": 0.7 - 0.3 * t, "eval/foo": t, "custom_metric": 5.0})
    return rows


SAMPLES = [{"prompt": [{"role": "user", "content": "Say hi."}], "model": "Hi!", "baseline": "Hello.", "verdict": 1.0,
            "category": "greeting", "score_model": 0.9, "score_baseline": 0.4},
           {"prompt": "Add 2 and 2.", "model": "4", "baseline": "5", "verdict": 1.0, "category": "arithmetic",
            "gold_model": {"correctness": 1.0, "harmlessness": None, "total": 1.0},
            "gold_baseline": {"correctness": 0.0, "harmlessness": None, "total": 0.3}},
           {"prompt": "Name a colour.", "model": "<script>alert(1)</script>", "baseline": "Blue.", "verdict": 0.0,
            "category": "greeting"},
           {"prompt": "Count to 3.", "model": "1 2 3", "baseline": "1 2 3", "verdict": 0.5}]
FULL_EVALS = {
    "rm": {"accuracy": 0.8, "num_pairs": 4, "ece": 0.05, "accuracy_by": {"qa": {"accuracy": 0.75, "num_pairs": 4}},
           "reliability": [{"mean_confidence": 0.3, "accuracy": 0.25, "count": 4},
                           {"mean_confidence": 0.8, "accuracy": 0.75, "count": 4}],
           "accuracy_chosen_shorter": 0.7, "accuracy_chosen_longer": 0.9, "reward_length_corr": 0.2,
           "rewards": [{"chosen": 1.0, "rejected": 0.0, "chosen_length": 10, "rejected_length": 12},
                       {"chosen": 2.0, "rejected": 0.5, "chosen_length": 20, "rejected_length": 8}]},
    "policy": {"win_rate": 0.6, "win_rate_ci": [0.51, 0.69], "lc_win_rate": 0.55, "wins": 6, "ties": 1,
               "losses": 3, "kl_k1": 0.2, "kl_k3": 0.19, "mean_length_model": 30.0, "samples": SAMPLES},
    "regress": {"cases": [{"id": "c1", "prompt": "<script>alert(1)</script> in 5 words", "baseline_pass": True,
                           "model_pass": True, "regressed": False}]},
    "guards": {"warnings": [], "series": {"x": [1, 2, 4], "proxy": [0.1, 0.5, 0.9], "judge": [0.5, 0.6, 0.55]}},
}
# data-plot names the full run draws: 9 known training groups, 2 unknown suffixes, 9 eval plots
FULL_PLOTS = {"loss", "rewards", "margin", "accuracy", "logps", "kl", "grad_norm", "lr", "lengths",
              "other:foo", "other:custom_metric", "reward_hist", "rm_length_hist", "reliability", "reward_vs_length",
              "accuracy_by_length", "win_tie_loss", "answer_length_hist", "overoptimisation"}
RUN_INFO = {"stage": "dpo", "model": "tiny-llama", "seed": 3, "git_sha": "abc123", "versions": {"preftune": "0.1.0"},
            "data": [{"path": "train.jsonl", "sha256": "00ff", "num_rows": 960}],
            "tokenization": {"train": {"num_rows": 960, "num_truncated": 0, "num_dropped": 0}},
            "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T01:00:00Z"}


def make_run(root: Path, rows: list[dict] | None, run_info: dict | None = RUN_INFO, evals: dict | None = None,
             config: str | None = "beta: 0.1\nloss: sigmoid\n", data_stats: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if rows is not None:
        (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if run_info is not None:
        (root / "run.json").write_text(json.dumps(run_info))
    if config is not None:
        (root / "config.yaml").write_text(config)
    if data_stats is not None:
        (root / "data_stats.json").write_text(json.dumps(data_stats))
    for name, content in (evals or {}).items():
        (root / "eval").mkdir(exist_ok=True)
        (root / "eval" / f"{name}.json").write_text(json.dumps(content))
    return root


def plot_names(page: str) -> list[str]:
    return re.findall(r"<figure class='plot' data-plot='([^']*)'>", page)


def section_of(page: str, sid: str) -> str:
    m = re.search(rf"<section id='{sid}'>(.*?)</section>", page, re.DOTALL)
    assert m, f"no section {sid}"
    return m.group(1)


def visible_text(html_text: str) -> str:
    """The page's text as a browser shows it: tags (and scripts, styles) removed, entities decoded."""
    import html

    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html_text, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))
