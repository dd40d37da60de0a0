"""Read a run folder (docs/architecture.md, "A run folder") for the report.

Reads config.yaml, run.json, metrics.jsonl, eval/*.json and data_stats.json; every piece may be
missing or damaged, and what could not be read is listed (`RunData.problems`, shown as warnings),
never silently dropped. Values are kept as read (NaN, inf, 1e308 included): the sections show them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KNOWN_EVALS = ("rm", "policy", "regress", "guards", "overoptimisation")  # the last: `train rl`'s guard


@dataclass
class RunData:
    """Everything the report reads from a run folder; None/empty where a file is absent."""
    path: Path
    run_info: dict | None = None
    config_text: str | None = None
    config: dict = field(default_factory=dict)  # config.yaml parsed (else run.json's `config`)
    rows: list[dict] = field(default_factory=list)  # metrics.jsonl, one dict per logged step
    evals: dict[str, Any] = field(default_factory=dict)  # eval/NAME.json -> parsed content by NAME
    data_stats: dict | None = None
    problems: list[str] = field(default_factory=list)  # unreadable pieces, shown as warnings

    @property
    def info(self) -> dict:
        return self.run_info or {}

    @property
    def stage(self) -> str | None:
        """"dpo" | "sft" | "rm" | ... from run.json or the config; guessed from the evals otherwise."""
        s = self.info.get("stage") or self.config.get("stage")
        if isinstance(s, str) and s:
            return s.lower()
        if "policy" in self.evals:
            return "policy"
        return "rm" if "rm" in self.evals else None

    @property
    def model(self) -> str | None:
        m = self.info.get("model") or self.config.get("model")
        if isinstance(m, dict):
            m = m.get("name") or m.get("path") or m.get("alias")
        return str(m) if m else None


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, RecursionError) as e:
        problems.append(f"{path.parent.name}/{path.name}: unreadable ({e}); its section is left out"
                        if path.parent.name == "eval" else f"{path.name}: unreadable ({e}); its section is left out")
        return None


def _read_metrics(path: Path, run: RunData) -> None:
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                # typically the last line of a run killed mid-write; say so instead of failing
                msg = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deep"
                run.problems.append(f"metrics.jsonl line {lineno}: invalid JSON ({msg}); skipped")
                continue
            if not isinstance(row, dict):
                run.problems.append(f"metrics.jsonl line {lineno}: not a JSON object; skipped")
                continue
            run.rows.append(row)


def _parse_config(text: str, problems: list[str]) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problems.append(f"config.yaml: unreadable ({str(e).splitlines()[0]}); run.json's copy is shown if any")
        return {}
    return cfg if isinstance(cfg, dict) else {}


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder. Raises ValueError when it has neither run.json nor metrics.jsonl."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"{path}: not a directory (expected a run folder made by `preftune train ...`)")
    if not (path / "run.json").is_file() and not (path / "metrics.jsonl").is_file():
        raise ValueError(f"{path}: not a run folder (it has neither run.json nor metrics.jsonl)")
    run = RunData(path=path)
    if (path / "run.json").is_file():
        info = _read_json(path / "run.json", run.problems)
        if info is not None and not isinstance(info, dict):
            run.problems.append("run.json: not a JSON object; the header is incomplete")
        run.run_info = info if isinstance(info, dict) else None
    if (path / "config.yaml").is_file():
        run.config_text = (path / "config.yaml").read_text(encoding="utf-8", errors="replace")
        run.config = _parse_config(run.config_text, run.problems)
    if not run.config and isinstance(run.info.get("config"), dict):
        run.config = run.info["config"]
    if (path / "metrics.jsonl").is_file():
        _read_metrics(path / "metrics.jsonl", run)
    for p in sorted((path / "eval").glob("*.json")) if (path / "eval").is_dir() else []:
        content = _read_json(p, run.problems)
        if content is None:
            continue
        if p.stem in KNOWN_EVALS and not isinstance(content, (dict, list)):
            run.problems.append(f"eval/{p.name}: not a JSON object; its section is left out")
            continue
        run.evals[p.stem] = content
    stats_path = path / "data_stats.json"
    stats = _read_json(stats_path, run.problems) if stats_path.is_file() else run.evals.pop("data_stats", None)
    run.data_stats = stats if isinstance(stats, dict) else None
    return run


def run_labels(runs: list[RunData]) -> list[str]:
    """Short distinct names for runs shown side by side: the folder name, with parents added
    until the names differ (runs/a/dpo vs runs/b/dpo -> a/dpo, b/dpo)."""
    depth = 1
    while True:
        labels = ["/".join(r.path.resolve().parts[-depth:]) for r in runs]
        if len(set(labels)) == len(labels) or depth > 8:
            return labels
        depth += 1
