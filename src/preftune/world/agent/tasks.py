"""Tasks of the tool-use world: a prompt, the calls that answer it (in order), and the gold answer.

Categories: arithmetic (calculator), conversion (convert_units), lookup (the country table), search
(the documents), lookup_sum (two lookups then the calculator: a three-turn trajectory), no_tool (the
answer needs no tool; calling one is unnecessary). A prompt belongs to the test split when the sha256 of
its text is 0 mod 5, so the two splits never share a prompt.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field

from preftune.world.agent.tools import COUNTRIES, FIELDS, execute, fmt

CATEGORIES = ("arithmetic", "conversion", "lookup", "search", "lookup_sum", "no_tool")
SPLITS = ("train", "test")

# (document, question, answer): each answered by one document of tools.DOCS
QUESTIONS = (
    ("doc-1", "When did the Lumen Bridge open?", "1931"), ("doc-1", "How long is the Lumen Bridge, in metres?", "412"),
    ("doc-2", "How often does the Orrin comet return, in years?", "76"),
    ("doc-2", "When is the Orrin comet's next visit expected?", "2061"),
    ("doc-3", "Who founded the Velda Library?", "Ana Brisk"),
    ("doc-3", "How many million books does the Velda Library hold?", "2.3"),
    ("doc-4", "In which month does the Marrow Festival take place?", "October"),
    ("doc-4", "How many days does the Marrow Festival last?", "9"),
    ("doc-5", "How deep is Tessel Lake, in metres?", "214"), ("doc-5", "How long is Tessel Lake, in kilometres?", "38"),
    ("doc-6", "When was the Quill Railway completed?", "1889"),
    ("doc-7", "How tall is Harrow Tower, in metres?", "287"), ("doc-7", "Who designed Harrow Tower?", "Ivo Lenz"),
    ("doc-8", "How many kinds of apple does Pell Orchard grow?", "40"),
    ("doc-8", "When was Pell Orchard planted?", "1902"),
)
TEXT_ANSWERS = ("Ana Brisk", "October", "Ivo Lenz")
CONVERSIONS = (("km", "m"), ("m", "cm"), ("mi", "km"), ("ft", "m"), ("in", "cm"), ("kg", "g"), ("lb", "kg"),
               ("oz", "g"), ("l", "ml"), ("gal", "l"), ("m", "ft"), ("g", "kg"))
WORDS = ("river", "lantern", "pepper", "meadow", "copper", "window", "garden", "silver", "thunder", "basket",
         "marble", "candle", "harbor", "pillow", "sparrow", "velvet")


@dataclass
class AgentTask:
    category: str
    prompt: str
    calls: list[dict]                 # the gold calls in order: {"name", "arguments"}
    answer: str                       # the gold answer, as text
    numeric: bool                     # the answer is a number (compared numerically)
    vocab: list[str] = field(default_factory=list)  # text answers the task could be confused with

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AgentTask:
        return cls(**d)

    def results(self) -> list[str]:
        """What each gold call returns."""
        return [execute(c["name"], c["arguments"]) for c in self.calls]


def split_of(prompt: str) -> str:
    return "test" if int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 5 == 0 else "train"


def _arithmetic(rng: random.Random) -> AgentTask:
    a, b, c = rng.randint(12, 99), rng.randint(12, 99), rng.randint(2, 60)
    expr, prompt = rng.choice(((f"{a} * {b} + {c}", f"What is {a} * {b} + {c}?"),
                               (f"({a} + {b}) * {c}", f"Compute ({a} + {b}) * {c}."),
                               (f"{a} * {b} - {c}", f"What is {a} times {b} minus {c}?")))
    call = {"name": "calculator", "arguments": {"expression": expr}}
    return AgentTask("arithmetic", prompt, [call], execute("calculator", call["arguments"]), True)


def _conversion(rng: random.Random) -> AgentTask:
    src, dst = rng.choice(CONVERSIONS)
    value = rng.choice((rng.randint(2, 95), round(rng.uniform(1, 50), 1)))
    prompt = rng.choice((f"Convert {fmt(value)} {src} to {dst}.", f"How many {dst} are {fmt(value)} {src}?"))
    call = {"name": "convert_units", "arguments": {"value": value, "from_unit": src, "to_unit": dst}}
    return AgentTask("conversion", prompt, [call], execute("convert_units", call["arguments"]), True)


_LOOKUP_PROMPTS = {"capital": "What is the capital of {c}?", "population": "How many people live in {c}?",
                   "currency": "Which currency is used in {c}?"}


def _lookup(rng: random.Random) -> AgentTask:
    country, fld = rng.choice(sorted(COUNTRIES)), rng.choice(FIELDS)
    call = {"name": "lookup", "arguments": {"country": country, "field": fld}}
    vocab = [] if fld == "population" else sorted(v[FIELDS.index(fld)] for v in COUNTRIES.values())
    return AgentTask("lookup", _LOOKUP_PROMPTS[fld].format(c=country), [call], execute("lookup", call["arguments"]),
                     fld == "population", vocab)


def _search(rng: random.Random) -> AgentTask:
    _doc, question, answer = rng.choice(QUESTIONS)
    call = {"name": "search_docs", "arguments": {"query": question.rstrip("?").replace(",", "")}}
    numeric = answer not in TEXT_ANSWERS
    return AgentTask("search", question, [call], answer, numeric, [] if numeric else list(TEXT_ANSWERS))


def _lookup_sum(rng: random.Random) -> AgentTask:
    a, b = rng.sample(sorted(COUNTRIES), 2)
    calls = [{"name": "lookup", "arguments": {"country": c, "field": "population"}} for c in (a, b)]
    pa, pb = (execute("lookup", c["arguments"]) for c in calls)
    calls.append({"name": "calculator", "arguments": {"expression": f"{pa} + {pb}"}})
    return AgentTask("lookup_sum", f"How many people live in {a} and {b} together?", calls,
                     execute("calculator", calls[-1]["arguments"]), True)


def _no_tool(rng: random.Random) -> AgentTask:
    word = rng.choice(WORDS)
    if rng.random() < 0.5:
        return AgentTask("no_tool", f"Write the word '{word}' backwards.", [], word[::-1], False)
    return AgentTask("no_tool", f"Reply with the word '{word}' in capital letters.", [], word.upper(), False)


_BUILDERS = {"arithmetic": _arithmetic, "conversion": _conversion, "lookup": _lookup, "search": _search,
             "lookup_sum": _lookup_sum, "no_tool": _no_tool}


def sample_task(rng: random.Random, split: str, category: str | None = None, tries: int = 200) -> AgentTask:
    """A task of `split` (and `category`, else one drawn uniformly); ValueError when none comes up."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    for _ in range(tries):
        task = _BUILDERS[category or rng.choice(CATEGORIES)](rng)
        if split_of(task.prompt) == split:
            return task
    raise ValueError(f"no {category or ''} task of split {split} in {tries} draws")
