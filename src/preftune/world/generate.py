"""The verifiable preference world: preference data with a known truth (`preftune data world`).

Prompts carry checkable instructions (world/tasks.py); the gold scorer (world/gold.py) says which
response is better and by how much, per attribute. Simulated labellers then label the training
pairs, optionally with noise, a length bias or a position bias, and every row keeps the truth
(`attributes` from the gold scorer, `extra.gold_chosen_is_better`) so later stages can measure
how well they see through the labellers. The test split uses other prompts and clean gold labels.

Row fields: `margin` = |gold total(chosen) - gold total(rejected)| (how far apart the two are, never
its sign, which would give the noise away); `close` = margin < CLOSE_MARGIN; `confidence` =
0.5 + 0.5 * labeller reliability * min(1, margin / 0.5); `extra.flaw` names the flaw the generator
put into the worse response; `extra.shown_first` says which response the labeller saw first.
"""

from __future__ import annotations

import enum
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preftune.data.records import PairRecord, RatedRecord, UnpairedRecord
from preftune.world.gold import (  # noqa: F401  (re-exported: the judge's public home)
    ATTRIBUTES,
    WEIGHTS,
    Instructions,
    gold_compare,
    gold_score,
    is_refusal,
    parse_instructions,
)
from preftune.world.tasks import SPLITS, Task, sample_task

SOURCE = "preftune-world"
CLOSE_MARGIN = 0.1
OUTPUTS = ("pair", "unpaired", "rated")


class AnnotatorKind(str, enum.Enum):
    """How a simulated labeller decides. `rate` means: noisy -> probability of flipping the label;
    length -> probability of picking the longer response when the gold-better one is shorter;
    position -> probability of picking whichever response was shown first."""
    CLEAN = "clean"
    NOISY = "noisy"
    LENGTH = "length"
    POSITION = "position"

    def picks_better(self, rate: float, rng: random.Random, worse_is_longer: bool, better_shown_first: bool) -> bool:
        draw = rng.random()  # always drawn, so every labeller consumes the stream alike
        if self is AnnotatorKind.NOISY:
            return draw >= rate
        if self is AnnotatorKind.LENGTH:
            return not worse_is_longer or draw >= rate  # equal lengths: nothing to be biased by
        if self is AnnotatorKind.POSITION:
            return better_shown_first if draw < rate else True
        return True

    def reliability(self, rate: float) -> float:
        if self is AnnotatorKind.CLEAN:
            return 1.0
        return 1.0 - rate if self is AnnotatorKind.NOISY else 1.0 - rate / 2


@dataclass
class Annotator:
    name: str
    kind: AnnotatorKind
    rate: float = 0.0
    share: float = 0.5   # share of the training rows this labeller labels


@dataclass
class WorldData:
    train: list   # PairRecord | UnpairedRecord | RatedRecord, per `output`
    test: list    # PairRecord, clean gold labels, prompts unseen in train
    summary: dict


def default_annotators(noise: float = 0.0, length_bias: float = 0.0, position_bias: float = 0.0) -> list[Annotator]:
    """Two clean labellers plus one per requested bias. Noisy labellers flip 40% of their rows (more
    when noise > 0.2) and label noise/rate of the rows, so the expected flipped share is `noise`.
    Length- and position-biased labellers share half of the remaining rows, at the given rate."""
    out: list[Annotator] = []
    noisy_share = 0.0
    if noise > 0:
        rate = max(0.4, 2 * noise)
        noisy_share = noise / rate
        out.append(Annotator("noisy-3", AnnotatorKind.NOISY, rate, noisy_share))
    rest = 1.0 - noisy_share
    biased = [(k, r) for k, r in ((AnnotatorKind.LENGTH, length_bias), (AnnotatorKind.POSITION, position_bias))
              if r > 0]
    for i, (kind, rate) in enumerate(biased):
        out.append(Annotator(f"{kind.value}-biased-{4 + i}", kind, rate, rest * 0.5 / len(biased)))
    clean_share = (1.0 - sum(a.share for a in out)) / 2
    return [Annotator("clean-1", AnnotatorKind.CLEAN, 0.0, clean_share),
            Annotator("clean-2", AnnotatorKind.CLEAN, 0.0, clean_share)] + out


def _annotator(a: Annotator | dict) -> Annotator:
    """An Annotator, or a dict {"name", "kind", "rate", "share"} from a config file."""
    if isinstance(a, Annotator):
        return a
    try:
        return Annotator(str(a["name"]), AnnotatorKind(a["kind"]), float(a.get("rate", 0.0)),
                         float(a.get("share", 1.0)))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        kinds = ", ".join(k.value for k in AnnotatorKind)
        raise ValueError(f"annotators: {a!r} must have a name, a kind (one of {kinds}), a rate and a share") from e


def _check_args(num_pairs: int, num_test_pairs: int, noise: float, length_bias: float, position_bias: float,
                output: str) -> None:
    if num_pairs < 1 or num_test_pairs < 0:
        raise ValueError(f"num_pairs must be >= 1 and num_test_pairs >= 0, got {num_pairs} and {num_test_pairs}")
    if not 0.0 <= noise <= 0.5:
        raise ValueError(f"noise must be in [0, 0.5] (0.5 = labels are coin flips), got {noise}")
    for name, v in (("length_bias", length_bias), ("position_bias", position_bias)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")


def _verdicts(sc: dict, sr: dict) -> dict:
    out = {}
    for a in ATTRIBUTES:
        if sc[a] is None or sr[a] is None:
            continue
        d = sc[a] - sr[a]
        out[a] = "tie" if abs(d) < 1e-9 else "chosen" if d > 0 else "rejected"
    return out


def _candidate(rng: random.Random, task: Task, want_longer: bool | None, stats: dict, tries: int = 3):
    """A (flaw, better, worse, gold_better, gold_worse) whose length direction matches `want_longer`
    when a redraw allows it (this keeps length uninformative). The flaw is drawn uniformly and kept
    for `tries` draws before one other flaw is tried, so the mix of flaws stays varied.
    None if every draw failed."""
    fallback = None
    flaws = sorted(task.flaws)
    for flaw in (rng.choice(flaws), rng.choice(flaws)):
        for _ in range(tries):
            better, worse = task.good(rng), task.flaws[flaw](rng)
            gb, gw = gold_score(task.prompt, better), gold_score(task.prompt, worse)
            if gb["total"] <= gw["total"]:  # the generator meant `better` to win; count any miss
                stats["intent_mismatches"] += 1
                continue
            cand = (flaw, better, worse, gb, gw)
            if want_longer is None or (len(better) > len(worse)) == want_longer:
                return cand
            fallback = fallback or cand
    return fallback


def _pairs(rng: random.Random, n: int, split: str, stats: dict) -> list[tuple]:
    """n (task, candidate) tuples, chosen-longer balanced within each category."""
    out: list[tuple] = []
    balance: dict[str, int] = {}  # category -> (#better longer) - (#better shorter)
    while len(out) < n:
        task = sample_task(rng, split)
        b = balance.get(task.category, 0)
        cand = _candidate(rng, task, None if b == 0 else b < 0, stats)
        if cand is None:
            continue
        balance[task.category] = b + (1 if len(cand[1]) > len(cand[2]) else -1)
        out.append((task, cand))
    return out


def _msg(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def _pair_record(rid: str, task: Task, cand: tuple, annotator: Annotator | None, picks_better: bool,
                 shown_first: str | None) -> PairRecord:
    flaw, better, worse, gb, gw = cand
    chosen, rejected, sc, sr = (better, worse, gb, gw) if picks_better else (worse, better, gw, gb)
    margin = round(gb["total"] - gw["total"], 6)
    reliability = annotator.kind.reliability(annotator.rate) if annotator else 1.0
    extra: dict[str, Any] = {"gold_chosen_is_better": picks_better, "flaw": flaw}
    if shown_first is not None:
        extra["shown_first"] = shown_first
    return PairRecord(id=rid, prompt=_msg("user", task.prompt), chosen=_msg("assistant", chosen),
                      rejected=_msg("assistant", rejected), annotator=annotator.name if annotator else "gold",
                      confidence=round(0.5 + 0.5 * reliability * min(1.0, margin / 0.5), 4),
                      close=margin < CLOSE_MARGIN, category=task.category, attributes=_verdicts(sc, sr),
                      source=SOURCE, margin=margin, extra=extra)


def _label_train(rng: random.Random, items: list[tuple], annotators: list[Annotator], seed: int) -> tuple[list, dict]:
    records, changed = [], {a.name: 0 for a in annotators}
    weights = [a.share for a in annotators]
    for i, (task, cand) in enumerate(items):
        ann = rng.choices(annotators, weights=weights)[0]
        better_first = rng.random() < 0.5
        ok = ann.kind.picks_better(ann.rate, rng, len(cand[2]) > len(cand[1]), better_first)
        changed[ann.name] += not ok
        shown = "chosen" if better_first == ok else "rejected"
        records.append(_pair_record(f"world-train-{seed}-{i}", task, cand, ann, ok, shown))
    return records, changed


def _rated(rng: random.Random, items: list[tuple], seed: int) -> list[RatedRecord]:
    out = []
    for i, (task, cand) in enumerate(items):
        flaws = sorted(task.flaws)
        rng.shuffle(flaws)
        completions = [cand[1], cand[2]] + [task.flaws[f](rng) for f in flaws[:2] if f != cand[0]]
        completions = list(dict.fromkeys(completions))  # distinct texts only
        out.append(RatedRecord(id=f"world-rated-{seed}-{i}", prompt=_msg("user", task.prompt),
                               completions=[_msg("assistant", c) for c in completions],
                               scores=[gold_score(task.prompt, c)["total"] for c in completions],
                               annotator="gold", category=task.category, source=SOURCE))
    return out


def _unpaired(pairs: list[PairRecord]) -> list[UnpairedRecord]:
    out = []
    for p in pairs:
        gold = p.extra["gold_chosen_is_better"]
        for side, label in (("chosen", True), ("rejected", False)):
            out.append(UnpairedRecord(id=f"{p.id}:{side}", prompt=p.prompt, completion=getattr(p, side), label=label,
                                      annotator=p.annotator, category=p.category, source=SOURCE,
                                      extra={"gold_label": gold if label else not gold, "flaw": p.extra["flaw"]}))
    return out


def _longer_share(pairs: list[PairRecord]) -> float:
    longer = sum(len(p.chosen[0]["content"]) > len(p.rejected[0]["content"]) for p in pairs)
    return round(longer / max(len(pairs), 1), 4)


def generate_world(num_pairs: int = 5000, seed: int = 0, noise: float = 0.0, length_bias: float = 0.0,
                   position_bias: float = 0.0, num_test_pairs: int = 1000,
                   annotators: list[Annotator | dict] | None = None, output: str = "pair",
                   labels_per_pair: int = 1, labellers: str | None = None, honeypot_share: float = 0.0) -> WorldData:
    """Generate the world. Deterministic for a seed. `output` shapes the training rows: "pair",
    "unpaired" (each pair as a desirable and an undesirable row, for KTO) or "rated" (one prompt,
    several completions with gold scores; labellers do not apply). The test split is always clean pairs.
    `labels_per_pair` > 1 or a `labellers` pool spec (world/pool.py) gives multi-labelled pair rows."""
    _check_args(num_pairs, num_test_pairs, noise, length_bias, position_bias, output)
    multi = labels_per_pair > 1 or labellers is not None
    if honeypot_share and not multi:
        raise ValueError("honeypots are items of multi-labelled data: give labels_per_pair > 1 or labellers too")
    if multi:
        from preftune.world.pool import DEFAULT_POOL, parse_labellers

        if annotators is not None or noise or length_bias or position_bias or output != "pair":
            raise ValueError("labels_per_pair / labellers (a labeller pool) take pair output and replace "
                             "noise, length_bias, position_bias and annotators; give one or the other")
        annotators = parse_labellers(labellers or DEFAULT_POOL)
    annotators = (default_annotators(noise, length_bias, position_bias) if annotators is None
                  else [_annotator(a) for a in annotators])
    if not annotators or any(a.share < 0 for a in annotators) or sum(a.share for a in annotators) <= 0:
        raise ValueError("annotators must be a non-empty list with non-negative shares that sum above 0")
    t0 = time.perf_counter()
    stats = {"intent_mismatches": 0}
    rng = random.Random(seed)
    train_items = _pairs(rng, num_pairs, "train", stats)
    test_items = _pairs(random.Random(seed * 1_000_003 + 7), num_test_pairs, "test", stats)
    test = [_pair_record(f"world-test-{seed}-{i}", t, c, None, True, None) for i, (t, c) in enumerate(test_items)]
    label_rng = random.Random(seed * 1_000_003 + 11)
    if multi:
        from preftune.world.pool import label_multi

        pairs, changed = label_multi(label_rng, train_items, annotators, labels_per_pair, seed, honeypot_share)
    else:
        pairs, changed = _label_train(label_rng, train_items, annotators, seed)
    train: list = pairs if output == "pair" else _unpaired(pairs) if output == "unpaired" else \
        _rated(random.Random(seed * 1_000_003 + 13), train_items, seed)
    train_prompts = {t.prompt for t, _ in train_items}
    summary = {
        "seed": seed, "output": output, "num_train": len(train), "num_train_pairs": len(pairs), "num_test": len(test),
        "num_train_items": len(train_items), "labels_per_pair": labels_per_pair if multi else 1,
        "noise_requested": noise, "length_bias": length_bias, "position_bias": position_bias,
        "label_changed_share": round(sum(changed.values()) / len(pairs), 4),
        "label_changed_by_kind": {k.value: sum(changed[a.name] for a in annotators if a.kind is k)
                                  for k in AnnotatorKind},
        "chosen_longer_share": _longer_share(pairs),
        "gold_better_longer_share": round(sum(len(c[1]) > len(c[2]) for _, c in train_items) / len(train_items), 4),
        "test_chosen_longer_share": _longer_share(test),
        "annotators": {a.name: _annotator_summary(a, pairs, changed[a.name]) for a in annotators},
        "categories": _counts(p.category for p in pairs), "flaws": _counts(p.extra["flaw"] for p in pairs),
        "close_share": round(sum(bool(p.close) for p in pairs) / len(pairs), 4),
        "mean_margin": round(sum(p.margin for p in pairs) / len(pairs), 4),
        "num_train_prompts": len(train_prompts), "num_test_prompts": len({t.prompt for t, _ in test_items}),
        "prompt_overlap": len(train_prompts & {t.prompt for t, _ in test_items}),
        "intent_mismatches": stats["intent_mismatches"], "gold_weights": dict(WEIGHTS),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return WorldData(train=train, test=test, summary=summary)


def _annotator_summary(a: Annotator, pairs: list[PairRecord], changed: int) -> dict:
    rows = sum(p.annotator == a.name for p in pairs)
    return {"kind": a.kind.value, "rate": a.rate, "share": round(a.share, 4), "rows": rows, "changed": changed,
            "accuracy": round(1 - changed / rows, 4) if rows else None}


def _counts(values) -> dict:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def world_prompts(n: int, seed: int = 0, split: str = "test") -> list[dict]:
    """n distinct prompts of a split (for policy evaluation and sampling), each
    {"id", "prompt": [user message], "category"}; fewer only if the split runs out of new prompts."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    rng, seen, out = random.Random(seed * 1_000_003 + 17), set(), []
    for _ in range(50 * n):
        if len(out) == n:
            break
        task = sample_task(rng, split)
        if task.prompt not in seen:
            seen.add(task.prompt)
            out.append({"id": f"world-{split}-prompt-{seed}-{len(out)}", "prompt": _msg("user", task.prompt),
                        "category": task.category})
    return out


def register(sub) -> None:
    p = sub.add_parser("world", help="generate the verifiable preference world (data with a known truth)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--out", required=True, help="output folder (must be empty unless --force)")
    p.add_argument("--num-pairs", type=int, default=5000)
    p.add_argument("--num-test-pairs", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.0, help="share of training labels flipped by noisy labellers")
    p.add_argument("--length-bias", type=float, default=0.0,
                   help="P(a length-biased labeller picks the longer answer when the better one is shorter)")
    p.add_argument("--position-bias", type=float, default=0.0,
                   help="P(a position-biased labeller picks the answer shown first)")
    p.add_argument("--output", choices=OUTPUTS, default="pair", help="shape of the training rows")
    p.add_argument("--labels-per-pair", type=int, default=1, metavar="K",
                   help="label each training pair K times by distinct labellers of the --labellers pool "
                        "(one row per label, each with its `annotator` and `shown_first`; truth in "
                        "`gold_chosen_is_better` and `world_item`)")
    p.add_argument("--labellers", metavar="SPEC",
                   help="the labeller pool as kind:count[@rate],... (kinds clean, noisy, length, position; "
                        "default rates 0, 0.3, 0.8, 0.8; default pool clean:4,noisy:2,length:1,position:1 "
                        "when --labels-per-pair > 1); replaces --noise/--length-bias/--position-bias")
    p.add_argument("--honeypots", type=float, default=0.0, metavar="F",
                   help="share of multi-labelled items whose rows carry the known answer as `gold`")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder, replacing its files")
    p.add_argument("--agent", action="store_true", help="the tool-use world instead: step- and trajectory-level "
                   "pairs of tool-calling trajectories with gold per dimension (world/agent/)")
    p.add_argument("--num-tasks", type=int, default=500, help="--agent: training tasks (two pairs each)")
    p.add_argument("--num-test-tasks", type=int, default=100, help="--agent: held-out tasks (two pairs each)")
    p.set_defaults(func=run_world)


def run_world(args) -> int:
    from preftune.data.io import write_rows

    if getattr(args, "agent", False):
        from preftune.world.agent.generate import run_agent_world

        return run_agent_world(args)

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ValueError(f"{out} is not empty; pass --force to write into it")
    from preftune.data.paths import Output, check_writable

    check_writable(Output("-o", out, folder=True))  # a read-only folder fails now, not after generating
    world = generate_world(args.num_pairs, args.seed, args.noise, args.length_bias, args.position_bias,
                           args.num_test_pairs, output=args.output, labels_per_pair=args.labels_per_pair,
                           labellers=args.labellers, honeypot_share=args.honeypots)
    out.mkdir(parents=True, exist_ok=True)
    write_rows(world.train, out / "train.jsonl", overwrite=True)
    write_rows(world.test, out / "test.jsonl", overwrite=True)
    seen: dict[str, dict] = {}
    for r in world.test:
        seen.setdefault(r.prompt[0]["content"], {"id": f"world-test-prompt-{len(seen)}", "prompt": r.prompt,
                                                  "category": r.category})
    write_rows(list(seen.values()), out / "prompts_test.jsonl", overwrite=True)
    (out / "summary.json").write_text(json.dumps(world.summary, indent=2) + "\n", encoding="utf-8")
    s = world.summary
    print(f"wrote {out}: train.jsonl ({s['num_train']} rows), test.jsonl ({s['num_test']} pairs), "
          f"prompts_test.jsonl ({len(seen)} prompts), summary.json")
    print(f"chosen longer: {s['chosen_longer_share']:.1%} of train pairs (gold-better longer: "
          f"{s['gold_better_longer_share']:.1%}; test: {s['test_chosen_longer_share']:.1%})")
    print(f"labels changed by labellers: {s['label_changed_share']:.1%} "
          f"(noise requested {args.noise:.1%}; by kind: {s['label_changed_by_kind']})")
    print(f"categories: {s['categories']}")
    return 0


__all__ = ["Annotator", "AnnotatorKind", "WorldData", "default_annotators", "generate_world",
           "gold_compare", "gold_score", "parse_instructions", "world_prompts"]
