"""The tool-use world's tools: executable code over small backing data, with their JSON schemas.

- calculator(expression): + - * / ** and parentheses on numbers;
- convert_units(value, from_unit, to_unit): length, mass and volume units;
- lookup(country, field): a table of invented countries (capital, population, currency), so that no model
  can know the answer without the tool;
- search_docs(query): the best-matching document of a small invented document set (word overlap).

`execute(name, arguments)` returns the tool's text result, or "error: ..." (what a tool gives back when it
is called badly). Everything is deterministic and pure Python.
"""

from __future__ import annotations

import ast
import operator
import re

COUNTRIES = {  # invented: capital, population, currency
    "Arvenia": ("Tolsk", 4_200_000, "arven mark"), "Belmora": ("Quessa", 870_000, "bel"),
    "Cardovia": ("Ostrel", 12_500_000, "cardo"), "Drevland": ("Hamsey", 2_950_000, "drev crown"),
    "Eskaria": ("Vilnor", 6_100_000, "eskar"), "Fennmark": ("Lund Oster", 1_340_000, "fenn"),
    "Galdoria": ("Perrin", 9_800_000, "galdor"), "Hollin": ("Marrowgate", 560_000, "hollin penny"),
    "Istrava": ("Coren", 3_700_000, "strava"), "Jorvan": ("Kessel", 7_450_000, "jorvan lira"),
    "Kalmeria": ("Sundby", 15_200_000, "kalm"), "Lothia": ("Breve", 2_080_000, "loth"),
}
FIELDS = ("capital", "population", "currency")

DOCS = {  # invented facts; each question of the world is answered by exactly one document
    "doc-1": ("lumen bridge", "The Lumen Bridge over the river Sarn opened in 1931 and is 412 metres long."),
    "doc-2": ("orrin comet", "The Orrin comet returns every 76 years; its next visit is expected in 2061."),
    "doc-3": ("velda library", "The Velda Library holds 2.3 million books and was founded by Ana Brisk."),
    "doc-4": ("marrow festival", "The Marrow Festival takes place each October and lasts 9 days."),
    "doc-5": ("tessel lake", "Tessel Lake is 38 kilometres long and reaches a depth of 214 metres."),
    "doc-6": ("quill railway", "The Quill Railway was completed in 1889 and links Tolsk to Quessa."),
    "doc-7": ("harrow tower", "Harrow Tower is 287 metres tall and was designed by Ivo Lenz."),
    "doc-8": ("pell orchard", "Pell Orchard grows 40 kinds of apple and was planted in 1902."),
}

# unit -> (dimension, factor to the dimension's base unit: metre, kilogram, litre)
UNITS = {"mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "km": ("length", 1000.0),
         "in": ("length", 0.0254), "ft": ("length", 0.3048), "mi": ("length", 1609.344),
         "g": ("mass", 0.001), "kg": ("mass", 1.0), "lb": ("mass", 0.45359237), "oz": ("mass", 0.028349523125),
         "ml": ("volume", 0.001), "l": ("volume", 1.0), "gal": ("volume", 3.785411784)}


def _fn(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required,
                       "additionalProperties": False}}}


TOOLS = [
    _fn("calculator", "Evaluate an arithmetic expression (+ - * / ** and parentheses).",
        {"expression": {"type": "string", "description": "e.g. (12 + 30) * 4"}}, ["expression"]),
    _fn("convert_units", "Convert a quantity between units of length, mass or volume.",
        {"value": {"type": "number"}, "from_unit": {"type": "string", "enum": sorted(UNITS)},
         "to_unit": {"type": "string", "enum": sorted(UNITS)}}, ["value", "from_unit", "to_unit"]),
    _fn("lookup", "Look up a fact about a country in the country table.",
        {"country": {"type": "string"}, "field": {"type": "string", "enum": list(FIELDS)}}, ["country", "field"]),
    _fn("search_docs", "Search the document collection; returns the best-matching document.",
        {"query": {"type": "string"}}, ["query"]),
]
TOOL_NAMES = tuple(t["function"]["name"] for t in TOOLS)

# Hand-written on purpose: Python's eval would run any code; ast with a whitelist of arithmetic nodes
# evaluates exactly + - * / ** and unary minus on numeric literals.
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


def calculate(expression: str) -> float:
    """The value of an arithmetic expression; ValueError for anything else."""
    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError(f"not arithmetic: {ast.dump(node)[:40]}")

    try:
        return float(ev(ast.parse(expression.replace("^", "**"), mode="eval").body))
    except (SyntaxError, ZeroDivisionError, OverflowError) as e:
        raise ValueError(str(e) or type(e).__name__) from None


def convert(value: float, from_unit: str, to_unit: str) -> float:
    if from_unit not in UNITS or to_unit not in UNITS:
        raise ValueError(f"unknown unit (known: {', '.join(sorted(UNITS))})")
    (d1, f1), (d2, f2) = UNITS[from_unit], UNITS[to_unit]
    if d1 != d2:
        raise ValueError(f"cannot convert {d1} to {d2}")
    return value * f1 / f2


def find_country(name: str) -> str | None:
    return next((c for c in COUNTRIES if c.lower() == str(name).strip().lower()), None)


def search(query: str) -> str:
    """The id of the document sharing the most words with the query (ties: the lower id)."""
    words = set(re.findall(r"[a-z0-9]+", query.lower()))
    scores = {d: len(words & set(re.findall(r"[a-z0-9]+", (title + " " + text).lower())))
              for d, (title, text) in DOCS.items()}
    return max(sorted(scores), key=lambda d: scores[d])


def fmt(x: float) -> str:
    """A number as tools print it: integers without a decimal point, others with up to 4 decimals."""
    if abs(x - round(x)) < 1e-9:
        return str(round(x))
    return f"{x:.4f}".rstrip("0").rstrip(".")


def execute(name: str, arguments: dict) -> str:
    """Run one tool; a bad call gives an "error: ..." result, never an exception."""
    try:
        if name == "calculator":
            return fmt(calculate(str(arguments["expression"])))
        if name == "convert_units":
            return fmt(convert(float(arguments["value"]), arguments["from_unit"], arguments["to_unit"]))
        if name == "lookup":
            country, field = find_country(arguments["country"]), arguments["field"]
            if country is None or field not in FIELDS:
                return f"error: no entry for {arguments['country']!r} / {field!r}"
            value = COUNTRIES[country][FIELDS.index(field)]
            return fmt(value) if isinstance(value, int) else value
        if name == "search_docs":
            doc = search(str(arguments["query"]))
            return f"[{doc}] {DOCS[doc][1]}"
    except (KeyError, TypeError, ValueError) as e:
        return f"error: {e}"
    return f"error: unknown tool {name!r}"
