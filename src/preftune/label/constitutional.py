"""`preftune data constitutional`: critique-and-revise with a model (the supervised stage of Constitutional AI,
Bai et al. 2022, arXiv 2212.08073, sec. 3.1): for each prompt, sample an answer, have the model critique it
against one principle of the constitution, then revise it in the light of the critique. Writes

- OUT: pairs, the revision preferred over the initial answer, `rationale` = the principle, `attributes`
  = {principle: "chosen"}, the critique kept as `critique`;
- OUT.sft.jsonl (or --sft-out): the revisions as SFT rows (`prompt`, `completion`);
- OUT.skipped.jsonl when a revision is empty or identical to the answer (no pair can be made): one
  `{"where", "reason"}` per prompt, said on stderr. Nothing is dropped silently.

Principles go round in constitution order (prompt i gets principle i mod P), or one is named with --principle.
The answer is sampled (seeded); critique and revision are greedy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CRITIQUE_PROMPT = (
    "Here is a request and a response to it.\n\n[Request]\n{prompt}\n\n[Response]\n{response}\n\n"
    "Critique the response against this principle: {question}\n"
    "Name its problems in one to three sentences.")
REVISE_PROMPT = (
    "[Request]\n{prompt}\n\n[Response]\n{response}\n\n[Critique]\n{critique}\n\n"
    "Rewrite the response so that it answers the request and fixes what the critique names, following this "
    "principle: {question}\nReply with the rewritten response only.")


def constitutional_rows(prompts: list, wheres: list[str], principles: list, initial: list[str], critiques: list[str],
                        revisions: list[str], source: str) -> tuple[list[dict], list[dict], list[dict]]:
    """(pair rows, SFT rows, skipped {where, reason}) from the texts of the three steps, one per prompt."""
    pairs, sft, skipped = [], [], []
    for i, (prompt, where, principle) in enumerate(zip(prompts, wheres, principles)):
        before, after = initial[i].strip(), revisions[i].strip()
        if not after or not before:
            skipped.append({"where": where, "reason": f"the {'revision' if not after else 'answer'} is empty"})
            continue
        if after == before:
            skipped.append({"where": where, "reason": "the revision is identical to the answer"})
            continue
        pairs.append({"id": f"{where}:cai", "prompt": prompt, "chosen": [{"role": "assistant", "content": after}],
                      "rejected": [{"role": "assistant", "content": before}],
                      "rationale": f"{principle.name}: {principle.question}", "attributes": {principle.name: "chosen"},
                      "source": source, "critique": critiques[i].strip()})
        sft.append({"prompt": prompt, "completion": [{"role": "assistant", "content": after}]})
    return pairs, sft, skipped


def register(sub) -> None:
    p = sub.add_parser("constitutional", help="critique-and-revise with a model: pairs (revised > initial) + SFT rows",
                       description=(__doc__ or "").split("\n\n", 1)[0].replace("`preftune data constitutional`: ", ""))
    p.add_argument("--model", required=True, help="the causal LM that answers, critiques and revises")
    p.add_argument("--prompts", required=True, metavar="FILE", help="one prompt per row (`prompt` or a JSON string)")
    p.add_argument("--constitution", metavar="FILE", help="YAML list of {name, question} (default: the packaged one)")
    p.add_argument("--principle", metavar="NAME", help="use only this principle (default: round robin)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the pairs")
    p.add_argument("--sft-out", metavar="FILE", help="the revisions as SFT rows (default: OUT.sft.jsonl)")
    p.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="per step (default 128)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the answer (default 0.7)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite the outputs if they exist")
    p.set_defaults(func=cmd_constitutional)


def cmd_constitutional(args: argparse.Namespace) -> int:
    from preftune.data.io import write_rows
    from preftune.data.paths import check_outputs, rows_output
    from preftune.data.prompts import read_prompt_rows
    from preftune.data.records import render_text
    from preftune.label.ai import load_constitution

    sft_out = Path(args.sft_out or f"{args.output}.sft.jsonl")
    skipped_out = Path(f"{args.output}.skipped.jsonl")
    outputs = [rows_output("-o", args.output), rows_output("--sft-out", sft_out), ("OUT.skipped.jsonl", skipped_out)]
    check_outputs(outputs, [("--prompts", args.prompts)], force=args.force)
    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise ValueError("--max-new-tokens and --batch-size must be at least 1")
    constitution = load_constitution(args.constitution)
    if args.principle is not None:
        constitution = [p for p in constitution if p.name == args.principle]
        if not constitution:
            raise ValueError(f"--principle {args.principle!r} is not in the constitution")
    rows = read_prompt_rows(args.prompts)
    prompts = [r.prompt for r in rows]
    principles = [constitution[i % len(constitution)] for i in range(len(rows))]
    texts = [render_text(p) for p in prompts]

    from preftune.eval.generate import generate, load_causal_lm

    model, tok = load_causal_lm(args.model)
    common = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "seed": args.seed}
    initial = generate(model, tok, prompts, temperature=args.temperature, desc="answer", **common).texts
    critiques = generate(model, tok, [CRITIQUE_PROMPT.format(prompt=t, response=a, question=p.question)
                                      for t, a, p in zip(texts, initial, principles)],
                         do_sample=False, desc="critique", **common).texts
    revisions = generate(model, tok, [REVISE_PROMPT.format(prompt=t, response=a, critique=c, question=p.question)
                                      for t, a, c, p in zip(texts, initial, critiques, principles)],
                         do_sample=False, desc="revise", **common).texts
    pairs, sft, skipped = constitutional_rows(prompts, [r.where for r in rows], principles, initial, critiques,
                                              revisions, f"constitutional:{args.model}")
    if not pairs:
        raise ValueError(f"no revision differed from its answer ({len(skipped)} prompts); nothing was written")
    write_rows(pairs, args.output, overwrite=args.force)
    write_rows(sft, sft_out, overwrite=args.force)
    if skipped:
        write_rows(skipped, skipped_out, overwrite=args.force)
        print(f"preftune: {len(skipped)} prompt(s) gave no pair (listed in {skipped_out})", file=sys.stderr)
    elif skipped_out.exists():  # --force replaced OUT; a skipped list of an earlier run would now be wrong
        skipped_out.unlink()
    print(f"wrote {len(pairs)} pairs to {args.output} and {len(sft)} SFT rows to {sft_out}", file=sys.stderr)
    return 0
