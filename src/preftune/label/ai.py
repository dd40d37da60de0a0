"""AI feedback: `preftune label ai` labels pairs with a pairwise LLM judge (`llm:MODEL` or `http:URL`, the judges
of preftune.eval.judges), asked in both orders, overall and once per principle of a constitution.

Per pair, with v1 the verdict with the input's first response shown as A and v2 the verdict with it shown as B
(each A / B / T, turned into "1" / "2" / "tie" for the input's responses):
- both orders name the same response: it is chosen, confidence 1.0;
- one order names a response and the other says tie: that response, confidence 0.75;
- both say tie, or they name different responses (the answer followed the position, not the content): a tie
  (`close: true`, confidence 0.5, chosen = the input's first response).
The same rule gives each principle's verdict (`attributes`, as chosen / rejected / tie). The judges answer with
one letter and no reason, so `rationale` records the verdicts behind the row (overall and per principle, in
both orders). `annotator` is the judge's name. Position bias (the share of pairs whose two orders contradict)
is printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from preftune.data.records import PairRecord, render_text
from preftune.label.store import NAME_RE

# A principle's question replaces the general one of the judge's prompt; the placeholders are the judge's.
PRINCIPLE_PROMPT = (
    "You are comparing two responses to the same user request on one principle only.\n\n"
    "Principle: {question}\n\n"
    "[Request]\n{{prompt}}\n\n[Response A]\n{{first}}\n\n[Response B]\n{{second}}\n\n"
    "Answer with a single letter: A if Response A is better on this principle, B if Response B is better, "
    "or T if they are equally good on it.")
_AS_INPUT = {("A", True): "1", ("B", True): "2", ("A", False): "2", ("B", False): "1"}


@dataclass(frozen=True)
class Principle:
    name: str
    question: str


def load_constitution(path: str | None = None) -> list[Principle]:
    """The principles of a YAML file (a list of {name, question}); the packaged default without a path."""
    import yaml

    if path is None:
        text = resources.files("preftune.data").joinpath("assets/constitution.yaml").read_text(encoding="utf-8")
        where = "the default constitution"
    else:
        text = Path(path).read_text(encoding="utf-8")
        where = str(path)
    items = yaml.safe_load(text)
    if not isinstance(items, list) or not items:
        raise ValueError(f"{where}: must be a non-empty YAML list of {{name, question}} entries")
    out: list[Principle] = []
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict) or set(item) != {"name", "question"}:
            raise ValueError(f"{where}: entry {i}: must have exactly the keys name and question")
        name, question = item["name"], item["question"]
        if not isinstance(name, str) or not NAME_RE.match(name) or name in {p.name for p in out}:
            raise ValueError(f"{where}: entry {i}: name: {name!r} is not a valid dimension name or is repeated")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where}: entry {i}: question: must be a non-empty string")
        out.append(Principle(name, question.strip()))
    return out


def combine_orders(v1: str, v2: str) -> tuple[str, float]:
    """(verdict "1" | "2" | "tie", confidence) from the verdicts of both orders (module docstring)."""
    a = "tie" if v1 == "T" else _AS_INPUT[(v1, True)]
    b = "tie" if v2 == "T" else _AS_INPUT[(v2, False)]
    if a == b:
        return a, (0.5 if a == "tie" else 1.0)
    if "tie" in (a, b):
        return (b if a == "tie" else a), 0.75
    return "tie", 0.5


def _ask_both(judge, prompts: list[str], r1: list[str], r2: list[str], template: str, batch: int,
              bar) -> tuple[list[str], list[str]]:
    judge.template = template
    first, second = [], []
    for i in range(0, len(prompts), batch):
        sl = slice(i, i + batch)
        first += judge.ask(prompts[sl], r1[sl], r2[sl])
        second += judge.ask(prompts[sl], r2[sl], r1[sl])
        bar.update(min(batch, len(prompts) - i))
    return first, second


def _row(rec: PairRecord, name: str, overall: tuple, principles: dict[str, tuple], raw: dict) -> dict:
    verdict, conf = overall
    swap = verdict == "2"
    d = rec.to_dict()
    for k in ("annotator", "confidence", "close", "attributes", "rationale", "shown_first"):
        d.pop(k, None)
    if swap:
        d["chosen"], d["rejected"] = d["rejected"], d["chosen"]
        if d.get("gold") in ("chosen", "rejected"):
            d["gold"] = "rejected" if d["gold"] == "chosen" else "chosen"
    chosen = "2" if swap else "1"
    d["annotator"] = name
    d["confidence"] = conf
    d["close"] = verdict == "tie"
    if principles:
        d["attributes"] = {p: ("tie" if v == "tie" else ("chosen" if v == chosen else "rejected"))
                           for p, (v, _) in principles.items()}
    parts = [f"{k}: {a}/{b}" for k, (a, b) in raw.items()]
    d["rationale"] = (f"{name} verdicts (first response shown as A / as B): " + "; ".join(parts))
    return d


def ai_label(judge, pairs: list[PairRecord], principles: list[Principle], *, batch: int = 8,
             progress: bool = True) -> tuple[list[dict], dict]:
    """One labelled row per pair, and a summary {num_pairs, num_ties, position_bias_rate, by_principle}."""
    from tqdm.auto import tqdm

    from preftune.eval.judges import JUDGE_PROMPT

    if not hasattr(judge, "ask"):
        raise ValueError(f"judge {judge.name}: `label ai` needs a pairwise judge (llm:MODEL or http:URL) that can be "
                         "asked in both orders; gold and rm: judges score responses instead")
    prompts = [render_text(p.prompt) for p in pairs]
    r1 = [render_text(p.chosen) for p in pairs]
    r2 = [render_text(p.rejected) for p in pairs]
    questions = {"overall": JUDGE_PROMPT} | {p.name: PRINCIPLE_PROMPT.format(question=p.question) for p in principles}
    answers = {}
    with tqdm(total=len(pairs) * len(questions), desc="judging", unit="pair", disable=not progress) as bar:
        for key, template in questions.items():
            answers[key] = _ask_both(judge, prompts, r1, r2, template, batch, bar)
    judge.template = JUDGE_PROMPT
    rows, contradictions = [], 0
    for i, rec in enumerate(pairs):
        raw = {k: (a[i], b[i]) for k, (a, b) in answers.items()}
        combined = {k: combine_orders(*v) for k, v in raw.items()}
        contradictions += raw["overall"][0] == raw["overall"][1] != "T"
        rows.append(_row(rec, judge.name, combined["overall"], {p.name: combined[p.name] for p in principles}, raw))
    summary = {"judge": judge.name, "num_pairs": len(rows), "num_ties": sum(r["close"] for r in rows),
               "position_bias_rate": round(contradictions / len(rows), 4) if rows else None,
               "mean_confidence": round(sum(r["confidence"] for r in rows) / len(rows), 4) if rows else None}
    return rows, summary
