"""Acting on an audit: aggregation of multi-labelled items (majority, Dawid-Skene) against the world's
truth, dropping and flipping the most suspected rows, and every change in the curation report."""

from __future__ import annotations

import json

import pytest
from helpers import write_jsonl

from preftune.cli import main
from preftune.data.curate_audit import Selection, flip_row, parse_selection
from preftune.data.io import write_rows
from preftune.world.generate import generate_world


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    d = tmp_path_factory.mktemp("curate_audit")
    w = generate_world(150, seed=0, num_test_pairs=1, labels_per_pair=3)
    write_rows(w.train, d / "train.jsonl")
    assert main(["data", "audit", str(d / "train.jsonl"), "--ties", "none", "--json", str(d / "a.json")]) == 0
    return d, json.loads((d / "a.json").read_text())


def _curate(d, name, *extra):
    out = d / f"{name}.jsonl"
    code = main(["data", "curate", str(d / "train.jsonl"), "-o", str(out), "--audit", str(d / "a.json"), *extra])
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    return code, rows, json.loads((d / f"{name}.jsonl.report.json").read_text())


def test_aggregate_dawid_skene_beats_majority_against_gold(audited, capsys):
    d, audit = audited
    code, ds_rows, ds_rep = _curate(d, "ds", "--aggregate", "dawid-skene")
    assert code == 0
    code, mv_rows, mv_rep = _curate(d, "mv", "--aggregate", "majority")
    assert code == 0 and mv_rep["num_changed"] > 0
    capsys.readouterr()
    multi = [it for it in audit["items"] if it["num_labels"] >= 2]
    assert ds_rep["num_changed"] == len(multi) and len(ds_rows) == len(audit["items"])
    assert all(r["reason"] == "aggregated" and r["duplicate_of"] is not None for r in ds_rep["removed"])
    assert len(ds_rep["removed"]) + len(ds_rows) == ds_rep["num_input"] == 450  # nothing silently lost
    assert all(0.5 <= r["confidence"] <= 1.0 and "annotator" not in r for r in ds_rows)
    ds_right = sum(r["gold_chosen_is_better"] for r in ds_rows) / len(ds_rows)
    mv_kept = [r for r in mv_rows if "aggregated_from" in r]
    mv_right = sum(r["gold_chosen_is_better"] for r in mv_kept) / len(mv_rows)
    assert ds_right > 0.95 and ds_right > mv_right
    # majority confidence is the winning share of 3 labels
    assert {r["confidence"] for r in mv_kept} <= {round(2 / 3, 6), 1.0}


def test_drop_and_flip_the_most_suspected(audited, capsys):
    d, audit = audited
    scored = sorted((r for it in audit["items"] for r in it["rows"]), key=lambda r: -r["suspicion"])
    code, _, rep = _curate(d, "drop", "--drop-suspected", "10%")
    assert code == 0
    dropped = [r for r in rep["removed"] if r["reason"] == "suspected_mislabel"]
    assert sorted(r["line"] for r in dropped) == sorted(r["line"] for r in scored[:45])
    code, _, rep = _curate(d, "flip", "--flip-suspected", "score:0.5")
    capsys.readouterr()
    want = [r["line"] for r in scored if r["suspicion"] >= 0.5]
    assert code == 0 and sorted(c["line"] for c in rep["changed"]) == sorted(want)
    assert all(c["action"] == "flipped" for c in rep["changed"])


def test_flip_row_flips_everything_oriented():
    row = {"prompt": "p", "chosen": "a", "rejected": "b", "shown_first": "chosen", "gold": "rejected",
           "attributes": {"x": "chosen", "y": "tie"}, "gold_chosen_is_better": False}
    f = flip_row(row)
    assert f == {"prompt": "p", "chosen": "b", "rejected": "a", "shown_first": "rejected", "gold": "chosen",
                 "attributes": {"x": "rejected", "y": "tie"}, "gold_chosen_is_better": True}
    assert flip_row(f) == row


def test_selection_parsing():
    assert parse_selection("0.1", "--x") == Selection(share=0.1) == parse_selection("10%", "--x")
    assert parse_selection("share:0.25", "--x") == Selection(share=0.25)
    assert parse_selection("score:0.9", "--x") == Selection(score=0.9)
    for bad in ("1.5", "0", "score:2", "lots"):
        with pytest.raises(ValueError, match="--x"):
            parse_selection(bad, "--x")


def test_bad_audit_use(audited, tmp_path, capsys):
    d, _ = audited
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "z", "prompt": "q", "chosen": "a", "rejected": "b"}])
    code = main(["data", "curate", str(other), "-o", str(tmp_path / "o.jsonl"), "--audit", str(d / "a.json"),
                 "--drop-suspected", "0.1"])
    assert code == 1 and "audit this very file" in capsys.readouterr().err
    code = main(["data", "curate", str(other), "-o", str(tmp_path / "o.jsonl"), "--drop-suspected", "0.1"])
    assert code == 1 and "give --audit AUDIT.json" in capsys.readouterr().err
    code = main(["data", "curate", str(d / "train.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--audit",
                 str(d / "a.json"), "--drop-suspected", "0.1", "--aggregate", "majority"])
    assert code == 1 and "give one of" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()
