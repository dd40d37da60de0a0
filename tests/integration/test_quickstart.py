"""`preftune quickstart --fast` wires every stage together (tiny random models, a few steps).

The real quickstart (smollm2-135m, minilm-l6; about 15 minutes) is measured in the README, not here;
this test proves the command runs the whole chain and leaves every artefact the README promises."""

import json

from preftune.cli import main


def test_quickstart_fast_runs_the_whole_loop(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--fast", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    for step in ("1. generate", "2. curate", "3. train a reward model", "4b. DPO", "5. judge", "5b. regression",
                 "6. write the HTML report"):
        assert step in printed
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["rm_accuracy"] <= 1.0
    wins, ties, losses = summary["wins_ties_losses"]
    assert wins + ties + losses == 8  # every judged prompt is a win, a tie or a loss
    assert 0.0 <= summary["win_rate"] <= 1.0
    assert (out / "dpo" / "report.html").stat().st_size > 10_000
    # the DPO page links the reward model's page (written first) and says how its reference was made
    dpo_page = (out / "dpo" / "report.html").read_text()
    assert (out / "rm" / "report.html").is_file() and "<a href='../rm/report.html'>" in dpo_page
    assert "adapter-disabled base" in dpo_page and summary["report_kib"] == round(len(dpo_page.encode()) / 1024)
    regress = json.loads((out / "dpo" / "eval" / "regress.json").read_text())
    assert summary["regressions"] == regress["num_regressions"] == len(regress["regressions"])
    # curation accounted for every row: kept + removed == generated
    report = json.loads((out / "data" / "clean.jsonl.report.json").read_text())
    kept = len((out / "data" / "clean.jsonl").read_text().splitlines())
    assert kept + len(report["removed"]) == 400
