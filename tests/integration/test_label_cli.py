"""`preftune label init | raters add | admin-token | serve | export` from the command line, its bad-input paths
(the message and exit code), and end to end: init -> two raters label through the API -> export ->
`data check` passes on the export -> `train rm` trains on it with finite metrics."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient
from label_support import pair_rows, write_jsonl

from preftune.cli import main


def _tokens(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def test_init_prints_tokens_and_refuses_an_existing_project(tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(3))
    db = tmp_path / "p.db"
    assert main(["label", "init", "--db", str(db), "--pairs", str(pairs), "--raters", "3"]) == 0
    captured = capsys.readouterr()
    tokens = _tokens(captured.out)
    assert sorted(tokens) == ["admin", "rater-1", "rater-2", "rater-3"]
    assert len(set(tokens.values())) == 4 and all(len(t) >= 40 for t in tokens.values())
    assert "3 pairs, 0 honeypots, 2 labels per pair" in captured.err
    assert main(["label", "init", "--db", str(db), "--pairs", str(pairs)]) == 1
    assert "already holds a labelling project; pass --force" in capsys.readouterr().err
    assert main(["label", "raters", "add", "--db", str(db), "dora"]) == 0
    assert list(_tokens(capsys.readouterr().out)) == ["dora"]
    assert main(["label", "raters", "add", "--db", str(db), "dora"]) == 1
    assert "rater 'dora' already exists" in capsys.readouterr().err
    assert main(["label", "admin-token", "--db", str(db)]) == 0
    assert list(_tokens(capsys.readouterr().out)) == ["admin"]


def test_init_names_the_bad_row(tmp_path, capsys):
    rows = pair_rows(3)
    rows[1]["chosen"] = rows[1]["rejected"]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    db = tmp_path / "p.db"
    assert main(["label", "init", "--db", str(db), "--pairs", str(pairs)]) == 1
    err = capsys.readouterr().err
    assert f"{pairs}:2: rejected: is identical to chosen" in err
    assert not db.exists()  # every input is checked before the database is created
    gold = write_jsonl(tmp_path / "gold.jsonl", [pair_rows(1, "g")[0] | {"gold": "left"}])
    assert main(["label", "init", "--db", str(db), "--pairs", str(write_jsonl(tmp_path / "ok.jsonl", pair_rows(2))),
                 "--honeypots", str(gold)]) == 1
    assert f"{gold}:1: gold: must be one of chosen, rejected, tie, got 'left'" in capsys.readouterr().err
    dup = write_jsonl(tmp_path / "dup.jsonl", [pair_rows(1)[0]])
    assert main(["label", "init", "--db", str(db), "--pairs", str(tmp_path / "ok.jsonl"), "--honeypots",
                 str(dup)]) == 1
    assert "id: 'p0' is also the id of" in capsys.readouterr().err


def test_serve_warns_for_every_address_and_defaults_to_loopback(tmp_path, capsys):
    from preftune.cli import build_parser

    args = build_parser().parse_args(["label", "serve", "--db", "x.db"])
    assert args.host == "127.0.0.1"
    # the warning comes before the database is opened (here: a missing one, so nothing binds)
    assert main(["label", "serve", "--db", str(tmp_path / "missing.db"), "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 exposes the labelling server" in err and "TLS" in err
    assert "no such database" in err


def _label_all(db, tokens: dict[str, str], choose) -> int:
    from preftune.label.app import create_app

    n = 0
    with TestClient(create_app(str(db))) as client:
        for name in ("rater-1", "rater-2"):
            head = {"Authorization": f"Bearer {tokens[name]}"}
            while (r := client.get("/api/next", headers=head)).status_code == 200:
                item = r.json()
                body = {"assignment_id": item["assignment_id"], "choice": choose(name, item),
                        "attributes": {"helpfulness": "a"}, "rationale": f"{name} liked it"}
                assert client.post("/api/labels", json=body, headers=head).status_code == 201
                n += 1
            assert r.status_code == 204
    return n


def test_end_to_end_init_label_export_check_train(tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(6))
    db = tmp_path / "p.db"
    assert main(["label", "init", "--db", str(db), "--pairs", str(pairs), "--raters", "2"]) == 0
    tokens = _tokens(capsys.readouterr().out)
    # rater-1 always prefers the longer response (the input's chosen), rater-2 always the left one
    longer = {r["chosen"] for r in pair_rows(6)}

    def choose(name, item):
        if name == "rater-2":
            return "a_better"
        return "a_much_better" if item["response_a"] in longer else "b_much_better"

    assert _label_all(db, tokens, choose) == 12
    out = tmp_path / "labels.jsonl"
    assert main(["label", "export", "--db", str(db), "-o", str(out)]) == 0
    assert main(["label", "export", "--db", str(db), "-o", str(out)]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["label", "export", "--db", str(db), "-o", str(out), "--force"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 12 and {r["annotator"] for r in rows} == {"rater-1", "rater-2"}
    by_item: dict[str, list] = {}
    for r in rows:
        by_item.setdefault(r["item"], []).append(r)
    assert all(len(v) == 2 for v in by_item.values())
    for r in rows:
        if r["annotator"] == "rater-1":  # always the longer one, strongly
            assert r["chosen"][0]["content"] in longer and r["confidence"] == 1.0
        else:  # always the left one: chosen was shown first
            assert r["shown_first"] == "chosen" and r["confidence"] == 0.75
        assert r["attributes"] == {"helpfulness": "chosen" if r["shown_first"] == "chosen" else "rejected"}
    capsys.readouterr()
    assert main(["data", "check", str(out)]) == 0
    # data audit reports the two raters' agreement and rater-2's position bias (it always took the left one)
    audit_json = tmp_path / "audit.json"
    assert main(["data", "audit", str(out), "--folds", "0", "--ties", "none", "--json", str(audit_json)]) == 0
    audit = json.loads(audit_json.read_text())
    same = sum(v[0]["chosen"] == v[1]["chosen"] for v in by_item.values())
    assert audit["agreement"]["num_items"] == 6
    assert audit["agreement"]["raw"] == pytest.approx(same / 6)
    per = {a["annotator"]: a for a in audit["annotators"]}
    assert per["rater-2"]["first_shown_wins_share"] == 1.0 and per["rater-2"]["position_bias"] == 0.5
    assert per["rater-1"]["num_labels"] == per["rater-2"]["num_labels"] == 6
    run = tmp_path / "rm"
    assert main(["train", "rm", "--model", "tiny-bert", "--data", str(out), "--out", str(run), "max_steps=2",
                 "batch_size=4", "max_length=64", "report_to=none", "save_every=-1"]) == 0
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    import math

    assert [m["step"] for m in metrics if "train/loss" in m] == [1, 2]
    assert all(math.isfinite(m["train/loss"]) and math.isfinite(m["train/grad_norm"]) for m in metrics
               if "train/loss" in m)


def test_init_reads_other_formats_and_rated_rows(tmp_path, capsys):
    from sqlalchemy import select

    from preftune.label.store import Pair, make_engine, read_sessions

    trl = write_jsonl(tmp_path / "trl.jsonl", [{"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"}
                                               for i in range(2)])
    assert main(["label", "init", "--db", str(tmp_path / "a.db"), "--pairs", str(trl), "--from", "trl"]) == 0
    hh = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: hi\n\nAssistant: hello",
                                              "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
                                             {"chosen": "no turns here", "rejected": "none"}])
    assert main(["label", "init", "--db", str(tmp_path / "b.db"), "--pairs", str(hh), "--from", "hh"]) == 1
    err = capsys.readouterr().err
    assert "1 row(s) could not be converted from hh; nothing was loaded" in err and f"{hh}:2:" in err
    rated = write_jsonl(tmp_path / "rated.jsonl", [{"prompt": "q", "completions": ["a", "bb", "ccc"],
                                                    "scores": [1, 2, 3]}])
    assert main(["label", "init", "--db", str(tmp_path / "c.db"), "--pairs", str(rated)]) == 0
    engine = make_engine(str(tmp_path / "c.db"))
    with read_sessions(engine)() as s:
        pairs = [(p.item, p.response_1[0]["content"], p.response_2[0]["content"]) for p in s.scalars(select(Pair))]
    engine.dispose()
    # 3 completions with distinct scores -> 3 pairs, the higher-scored first, each its own item
    assert sorted(pairs) == [("rated.jsonl:1:0", "ccc", "bb"), ("rated.jsonl:1:1", "ccc", "a"),
                             ("rated.jsonl:1:2", "bb", "a")]
