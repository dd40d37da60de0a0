"""The code's shape, checked: layers import one way (the order docs/architecture.md states), no module
over 450 lines, no function over 100 lines (a stage's top-level loop may reach 120)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "preftune"

# docs/architecture.md, "Layers": a module may import from its own layer and the layers before it
LAYERS = [
    ["config"],
    ["data"],
    ["world"],
    ["tokenize"],
    ["batching"],
    ["ops", "losses"],
    ["models"],
    ["train"],
    ["eval"],
    ["report"],
    ["audit", "label"],
    ["quickstart", "cli", "__main__", "__init__"],
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
STAGE_LOOPS = {"train_sft", "train_dpo", "_train_one", "train_rl"}


def _layer(module: str) -> str:
    """preftune.data.io -> data; preftune.cli -> cli; preftune -> __init__. A package's `commands`
    module is its command-line face and belongs to the CLI layer (it may turn `--tokenizer NAME` into a
    tokenizer); nothing but the CLI imports it."""
    parts = module.split(".")
    if parts[-1] == "commands":
        return "cli"
    return parts[1] if len(parts) > 1 else "__init__"


def _modules():
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield f, name


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("preftune")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the module's package
                base = module.split(".")[: -node.level]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("preftune"):
                out.append((node.lineno, target))
    return out


def test_every_top_level_name_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert names <= set(RANK), f"add to LAYERS (and docs/architecture.md): {sorted(names - set(RANK))}"


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for f, module in _modules():
        own = _layer(module)
        for line, target in _imports(ast.parse(f.read_text()), module):
            other = _layer(target)
            if other != "__init__" and RANK[other] > RANK[own]:
                upward.append(f"{f.relative_to(SRC.parent)}:{line}: {own} imports {target} ({other} is above it)")
    assert not upward, "\n".join(upward)


def test_only_the_cli_imports_command_modules():
    bad = [f"{f.relative_to(SRC.parent)}:{line}: imports {t}" for f, m in _modules()
           if RANK[_layer(m)] < RANK["cli"] for line, t in _imports(ast.parse(f.read_text()), m) if _layer(t) == "cli"]
    assert not bad, "\n".join(bad)


def test_the_layer_check_can_fail():
    tree = ast.parse("from preftune.train.run import Run\nimport preftune.eval.metrics\n")
    targets = [t for _, t in _imports(tree, "preftune.data.io")]
    assert [RANK[_layer(t)] > RANK["data"] for t in targets] == [True, True]


def test_modules_and_functions_are_small():
    big = []
    for f, _ in _modules():
        text = f.read_text()
        if len(text.splitlines()) > 450:
            big.append(f"{f.relative_to(SRC.parent)}: {len(text.splitlines())} lines (max 450)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                limit = 120 if node.name in STAGE_LOOPS else 100
                if n > limit:
                    big.append(f"{f.relative_to(SRC.parent)}:{node.lineno}: {node.name} is {n} lines (max {limit})")
    assert not big, "\n".join(big)
