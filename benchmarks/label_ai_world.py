"""AI labels against gold on the verifiable world: `label ai`'s labelling (both orders; optional constitution) on
the world's clean test pairs, whose `chosen` is the gold-better response, for each judge named.

Per judge and category: n, agreement with gold on the decided pairs, the tie share (the two orders contradicted
or both said tie), agreement counting a tie as 1/2 (chance = 0.5), and the position-bias rate (the share of
pairs whose two orders contradicted). The built-in `scripted` judge is a local OpenAI-compatible HTTP server
that prefers the longer response (a length heuristic, not a model), so its row shows what length alone gets.

    .venv/bin/python benchmarks/label_ai_world.py --judge scripted --judge llm:smollm2-135m --per-category 5 \
        --out-md benchmarks/results/label_ai_world.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from preftune.label.ai import ai_label, load_constitution


class _Longer(BaseHTTPRequestHandler):
    def do_POST(self):
        text = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][0]["content"]
        first = re.search(r"\[Response A\]\n(.*?)\n\n\[Response B\]", text, re.DOTALL).group(1)
        second = re.search(r"\[Response B\]\n(.*?)\n\nAnswer", text, re.DOTALL).group(1)
        verdict = "A" if len(first) > len(second) else "B" if len(second) > len(first) else "T"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _pairs(per_category: int, seed: int) -> list:
    from preftune.world.generate import generate_world

    test = generate_world(10, seed=seed, num_test_pairs=per_category * 40).test
    by_cat: dict[str, list] = defaultdict(list)
    for p in test:
        if len(by_cat[p.category]) < per_category:
            by_cat[p.category].append(p)
    return [p for cat in sorted(by_cat) for p in by_cat[cat]]


def _judge(spec: str):
    from preftune.eval.judges import make_judge

    if spec != "scripted":
        return make_judge(spec), None
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Longer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    judge = make_judge(f"http:http://127.0.0.1:{server.server_address[1]}/v1")
    judge.name = "scripted (longer wins, HTTP)"
    return judge, server


def score(rows: list[dict], pairs: list) -> dict:
    by_cat: dict[str, list] = defaultdict(list)
    for row, pair in zip(rows, pairs):
        tie = row["close"]
        agree = None if tie else row["chosen"] == pair.to_dict()["chosen"]
        contra = "overall: A/A" in row["rationale"] or "overall: B/B" in row["rationale"]
        by_cat[pair.category].append((agree, tie, contra))
        by_cat["all"].append((agree, tie, contra))
    out = {}
    for cat, xs in by_cat.items():
        decided = [a for a, _, _ in xs if a is not None]
        out[cat] = {"n": len(xs), "agreement_decided": round(sum(decided) / len(decided), 3) if decided else None,
                    "tie_share": round(sum(t for _, t, _ in xs) / len(xs), 3),
                    "agreement_ties_half": round((sum(decided) + 0.5 * (len(xs) - len(decided))) / len(xs), 3),
                    "position_bias_rate": round(sum(c for _, _, c in xs) / len(xs), 3)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", action="append", required=True, help="scripted, llm:MODEL or http:URL (repeatable)")
    ap.add_argument("--per-category", type=int, default=5)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--constitution", action="store_true", help="also ask the default constitution's principles")
    ap.add_argument("--out-md")
    args = ap.parse_args()
    pairs = _pairs(args.per_category, args.seed)
    principles = load_constitution() if args.constitution else []
    results = {}
    for spec in args.judge:
        judge, server = _judge(spec)
        t0 = time.perf_counter()
        rows, _ = ai_label(judge, pairs, principles, progress=True)
        results[judge.name] = {"by_category": score(rows, pairs), "seconds": round(time.perf_counter() - t0, 1)}
        if server is not None:
            server.shutdown()
    print(json.dumps(results, indent=1))
    if args.out_md:
        Path(args.out_md).write_text(_markdown(results, args, len(pairs)))
    return 0


def _markdown(results: dict, args, n: int) -> str:
    lines = ["# AI labels against gold on the verifiable world", "",
             f"{n} clean test pairs of the world (seed {args.seed}, {args.per_category} per category; `chosen` is the "
             "gold-better response), labelled by `preftune label ai`'s procedure: each judge asked in both orders"
             + (" and per principle of the default constitution" if args.constitution else " (overall question only)")
             + ". Agreement on decided pairs; ties are contradictions between the orders or a tie in both; "
             "'ties as 1/2' puts chance at 0.5.", ""]
    for name, res in results.items():
        lines += [f"## {name} ({res['seconds']} s)", "",
                  "| category | n | agreement (decided) | tie share | agreement (ties as 1/2) | position-bias rate |",
                  "|---|---|---|---|---|---|"]
        for cat, x in sorted(res["by_category"].items(), key=lambda kv: (kv[0] == "all", kv[0])):
            dec = "-" if x["agreement_decided"] is None else x["agreement_decided"]
            lines.append(f"| {cat} | {x['n']} | {dec} | {x['tie_share']} | {x['agreement_ties_half']} | "
                         f"{x['position_bias_rate']} |")
        lines.append("")
    lines += [(f"Machine: {platform.platform()}, {os.cpu_count()} shared CPUs (load average "
              f"{os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}."), "",
              "Command: `python benchmarks/label_ai_world.py " + " ".join(sys.argv[1:]) + "`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
