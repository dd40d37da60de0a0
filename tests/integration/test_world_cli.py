"""`preftune data world`: files, summary, overwrite protection and bad input, through the real CLI."""

from __future__ import annotations

import json

from preftune.cli import main
from preftune.data.io import read_records


def _run(capsys, *argv):
    rc = main(["data", "world", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_world_cli_writes_the_four_files(tmp_path, capsys):
    out_dir = tmp_path / "world"
    rc, out, _ = _run(capsys, "-o", str(out_dir), "--num-pairs", "300", "--num-test-pairs", "60",
                      "--seed", "1", "--noise", "0.1")
    assert rc == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["prompts_test.jsonl", "summary.json", "test.jsonl",
                                                         "train.jsonl"]
    train, test = read_records(out_dir / "train.jsonl"), read_records(out_dir / "test.jsonl")
    assert len(train) == 300 and len(test) == 60
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["num_train"] == 300 and summary["prompt_overlap"] == 0
    flipped = sum(not r.extra["gold_chosen_is_better"] for r in train)
    assert summary["label_changed_share"] == round(flipped / 300, 4)
    prompts = [json.loads(line) for line in (out_dir / "prompts_test.jsonl").read_text().splitlines()]
    assert {p["prompt"][0]["content"] for p in prompts} == {r.prompt[0]["content"] for r in test}
    assert f"{summary['chosen_longer_share']:.1%}" in out and "labels changed" in out and "300 rows" in out


def test_world_cli_refuses_a_non_empty_folder_without_force(tmp_path, capsys):
    out_dir = tmp_path / "w"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    rc, _, err = _run(capsys, "-o", str(out_dir), "--num-pairs", "20", "--num-test-pairs", "5")
    assert rc == 1 and "not empty" in err and "--force" in err
    assert [p.name for p in out_dir.iterdir()] == ["notes.txt"]
    rc, _, _ = _run(capsys, "-o", str(out_dir), "--num-pairs", "20", "--num-test-pairs", "5", "--force")
    assert rc == 0 and len(read_records(out_dir / "train.jsonl")) == 20


def test_world_cli_bad_options(tmp_path, capsys):
    rc, _, err = _run(capsys, "-o", str(tmp_path / "a"), "--noise", "0.7")
    assert rc == 1 and "preftune: error: noise must be in [0, 0.5]" in err
    rc, _, err = _run(capsys, "-o", str(tmp_path / "b"), "--num-pairs", "0")
    assert rc == 1 and "num_pairs" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_world_cli_same_seed_same_bytes(tmp_path, capsys):
    for name in ("x", "y"):
        assert _run(capsys, "-o", str(tmp_path / name), "--num-pairs", "50", "--num-test-pairs", "10",
                    "--seed", "7", "--length-bias", "0.5")[0] == 0
    for f in ("train.jsonl", "test.jsonl", "prompts_test.jsonl"):
        assert (tmp_path / "x" / f).read_bytes() == (tmp_path / "y" / f).read_bytes()
