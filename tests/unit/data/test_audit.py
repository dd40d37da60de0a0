"""`data audit` on the world's multi-labelled data (known labellers, known truth) and on bad inputs:
Dawid-Skene recovers every labeller's accuracy, the biased labellers are flagged, DS-aggregated labels
beat majority vote against gold; each missing column is skipped with its reason, never a crash."""

from __future__ import annotations

import json

import pytest
from helpers import write_jsonl

from preftune.cli import main
from preftune.data.audit import audit_report, build_items
from preftune.data.io import write_rows
from preftune.data.records import record_from_dict
from preftune.world.generate import generate_world
from preftune.world.pool import parse_labellers

NUM_PAIRS = 400


@pytest.fixture(scope="module")
def world():
    w = generate_world(NUM_PAIRS, seed=0, num_test_pairs=1, labels_per_pair=3, honeypot_share=0.2)
    report = audit_report(w.train, list(range(1, len(w.train) + 1)), ties="none")
    return w, report


def test_pool_rows(world):
    w, _ = world
    assert len(w.train) == 3 * NUM_PAIRS and w.summary["labels_per_pair"] == 3
    by_item: dict[int, list] = {}
    for r in w.train:
        by_item.setdefault(r.extra["world_item"], []).append(r)
    assert all(len(rows) == 3 and len({r.annotator for r in rows}) == 3 for rows in by_item.values())
    assert all(r.extra["shown_first"] in ("chosen", "rejected") for r in w.train)
    honey = [rows for rows in by_item.values() if "gold" in rows[0].extra]
    assert 0.1 < len(honey) / NUM_PAIRS < 0.3
    # gold names the truly better response in every row's own orientation
    assert all((r.extra["gold"] == "chosen") == r.extra["gold_chosen_is_better"] for rows in honey for r in rows)
    # the summary's accuracy is the realised share of right labels
    for name, s in w.summary["annotators"].items():
        mine = [r.extra["gold_chosen_is_better"] for r in w.train if r.annotator == name]
        assert s["accuracy"] == pytest.approx(sum(mine) / len(mine), abs=1e-4)


def test_parse_labellers():
    pool = parse_labellers("clean:2,noisy:1@0.4,length")
    assert [(a.name, a.kind.value, a.rate) for a in pool] == [("clean-1", "clean", 0.0), ("clean-2", "clean", 0.0),
                                                             ("noisy-1", "noisy", 0.4), ("length-1", "length", 0.8)]
    with pytest.raises(ValueError, match="kind:count"):
        parse_labellers("sloppy:2")
    with pytest.raises(ValueError, match="between 1 and the pool's size"):
        generate_world(10, num_test_pairs=1, labels_per_pair=9)
    with pytest.raises(ValueError, match="one or the other"):
        generate_world(10, num_test_pairs=1, labels_per_pair=2, noise=0.2)


def test_dawid_skene_recovers_every_labellers_accuracy(world):
    w, rep = world
    truth = w.summary["annotators"]
    assert {a["annotator"] for a in rep["annotators"]} == set(truth)
    for a in rep["annotators"]:
        assert a["dawid_skene_accuracy"] == pytest.approx(truth[a["annotator"]]["accuracy"], abs=0.05), a["annotator"]


def test_biased_labellers_are_flagged_and_clean_ones_are_not(world):
    _, rep = world
    flags = {a["annotator"]: {f["flag"] for f in a["flags"]} for a in rep["annotators"]}
    assert "length_biased" in flags["length-1"] and "position_biased" in flags["position-1"]
    assert all("noisy" in flags[n] for n in ("noisy-1", "noisy-2"))
    assert all(not flags[f"clean-{i}"] for i in range(1, 5))
    assert not any("length_biased" in flags[n] for n in flags if n != "length-1")
    assert not any("position_biased" in flags[n] for n in flags if n != "position-1")


def test_dawid_skene_beats_majority_vote_against_gold(world):
    w, rep = world
    rows = {i + 1: r for i, r in enumerate(w.train)}
    ds_right = mv_right = 0
    for it in rep["items"]:
        want = "chosen" if rows[it["lines"][0]].extra["gold_chosen_is_better"] else "rejected"
        ds_right += max(("chosen", "rejected"), key=lambda v: it["ds_posterior"][v]) == want
        mv_right += it["majority"] == want
    n = len(rep["items"])
    assert ds_right / n > mv_right / n + 0.03 and ds_right / n > 0.95


def test_agreement_keys_and_range(world):
    _, rep = world
    ag = rep["agreement"]
    assert {"raw", "fleiss_kappa", "krippendorff_alpha", "num_items"} <= set(ag)
    assert 0.3 < ag["fleiss_kappa"] < 0.6 and ag["krippendorff_alpha"] == pytest.approx(ag["fleiss_kappa"], abs=0.02)
    assert all({"id", "suspicion", "oof_p_chosen", "ds_posterior"} <= set(it) for it in rep["items"])


def test_items_match_in_either_order_and_ties():
    base = {"prompt": "p", "chosen": "x", "rejected": "y"}
    recs = [record_from_dict({**base, "annotator": "u"}),
            record_from_dict({"prompt": "p", "chosen": "y", "rejected": "x", "annotator": "v"}),
            record_from_dict({**base, "annotator": "w", "close": True})]
    items = build_items(recs)
    assert items.rows == [[0, 1, 2]]
    assert [lab.value for lab in items.labels][:2] in ([0, 1], [1, 0]) and items.labels[2].value == 2
    assert build_items(recs, ties="none").labels[2].value == items.labels[0].value


# ---------------------------------------------------------------- the command and its bad inputs

def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _pairs(n: int, **extra) -> list[dict]:
    return [{"prompt": f"q{i}", "chosen": f"a long answer {i}", "rejected": f"b {i}", **extra} for i in range(n)]


def test_cli_world_json_and_summary(capsys, tmp_path, world):
    w, _ = world
    f = tmp_path / "train.jsonl"
    write_rows(w.train[:300], f)
    out = tmp_path / "audit.json"
    code, text, _ = _run(capsys, "data", "audit", str(f), "--json", str(out), "--ties", "none")
    assert code == 0 and "Fleiss' kappa" in text and "position_biased" in text
    rep = json.loads(out.read_text())
    assert rep["input"] == str(f) and {"agreement", "annotators", "items", "skipped"} <= set(rep)
    code, _, err = _run(capsys, "data", "audit", str(f), "--json", str(out))
    assert code == 1 and "already exists" in err


def test_cli_no_annotator_column(capsys, tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", _pairs(5))
    code, text, _ = _run(capsys, "data", "audit", str(f), "--json", str(tmp_path / "a.json"))
    assert code == 0 and "no `annotator` column" in text
    rep = json.loads((tmp_path / "a.json").read_text())
    assert rep["agreement"] is None and rep["annotators"] == [] and len(rep["items"]) == 5


def test_cli_single_annotator_and_single_labels(capsys, tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", _pairs(30, annotator="gpt4"))
    code, text, _ = _run(capsys, "data", "audit", str(f))
    assert code == 0 and "a single annotator (gpt4)" in text and "every item has one label" in text
    assert "gpt4" in text  # the per-annotator table still prints


def test_cli_bad_gold_value_is_named_and_the_rest_runs(capsys, tmp_path):
    rows = _pairs(4, annotator="u") + _pairs(4, annotator="v")
    rows[1]["gold"] = "maybe"
    f = write_jsonl(tmp_path / "p.jsonl", rows)
    code, text, _ = _run(capsys, "data", "audit", str(f), "--json", str(tmp_path / "a.json"))
    assert code == 0 and f"{f}:2: gold: must be one of chosen, rejected, tie, got 'maybe'" in text
    rep = json.loads((tmp_path / "a.json").read_text())
    assert rep["agreement"]["num_items"] == 4 and rep["agreement"]["raw"] == 1.0


def test_cli_gold_file_and_bad_args(capsys, tmp_path):
    rows = _pairs(3, annotator="u") + _pairs(3, annotator="v")
    f = write_jsonl(tmp_path / "p.jsonl", rows)
    gold = write_jsonl(tmp_path / "g.jsonl", [{"prompt": "q0", "chosen": "b 0", "rejected": "a long answer 0"}])
    code, text, _ = _run(capsys, "data", "audit", str(f), "--gold", str(gold), "--json", str(tmp_path / "a.json"))
    assert code == 0 and "1 of 1 gold item(s) match" in text
    ann = {a["annotator"]: a for a in json.loads((tmp_path / "a.json").read_text())["annotators"]}
    assert ann["u"]["num_honeypots"] == 1 and ann["u"]["honeypot_accuracy"] == 0.0
    code, _, err = _run(capsys, "data", "audit", str(f), "--folds", "1")
    assert code == 1 and "--folds must be 0" in err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "chosen": "x"}])
    code, _, err = _run(capsys, "data", "audit", str(bad))
    assert code == 1 and "bad.jsonl:1: rejected: is missing" in err
