"""Cross-fitted mislabel scores on the world with 20% of the labels flipped (known flips), the head's
symmetry, the annotator prior by hand, and `data audit --folds K` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from preftune.audit.noise import add_mislabel_scores, annotator_adjusted, cross_fit, pair_matrices
from preftune.cli import main
from preftune.data.audit import audit_report
from preftune.data.curate import prompt_key
from preftune.data.io import write_rows
from preftune.world.generate import generate_world

NUM_PAIRS = 1000


@pytest.fixture(scope="module")
def noisy_world():
    return generate_world(NUM_PAIRS, seed=0, num_test_pairs=1, noise=0.2)


def _scores(train, keep_annotators: bool):
    lines = list(range(1, len(train) + 1))
    rep = audit_report(train, lines, ties="none")
    add_mislabel_scores(rep, train, lines, folds=5)
    sus = np.array([it["rows"][0]["suspicion"] for it in rep["items"]])
    flip = np.array([not train[it["lines"][0] - 1].extra["gold_chosen_is_better"] for it in rep["items"]])
    top = np.argsort(-sus)[: int(0.2 * len(sus))]
    return rep, float(flip[top].mean()), float(roc_auc_score(flip, sus)), flip


def test_flipped_labels_are_found_with_annotators(noisy_world):
    rep, precision, auroc, flip = _scores(noisy_world.train, True)
    assert 0.15 < flip.mean() < 0.25  # the world flipped about 20%
    assert rep["mislabels"]["annotator_adjusted"] is True
    # the thresholds: top 20% by suspicion precision >= 0.8, AUROC >= 0.9 (seed 0: 0.88 and 0.97)
    assert precision >= 0.8 and auroc >= 0.9


def test_flipped_labels_are_found_without_annotators(noisy_world):
    import copy

    train = copy.deepcopy(noisy_world.train)
    for r in train:
        r.annotator = None
    rep, precision, auroc, _ = _scores(train, False)
    assert rep["mislabels"]["annotator_adjusted"] is False
    # text features alone: AUROC >= 0.9 holds (0.93-0.95 over seeds 0-2); precision@20% is 0.71-0.83
    # over those seeds, so only >= 0.7 is asserted (the notes say so)
    assert auroc >= 0.9 and precision >= 0.7


def test_head_is_mirror_equivariant(noisy_world):
    pairs = noisy_world.train[:200]
    xc, xr = pair_matrices(pairs)
    groups = [prompt_key(r) for r in pairs]
    p = cross_fit(xc, xr, groups, 4)
    # every label reversed: the head is trained on (d, 1) and (-d, 0), so the mirrored file trains the
    # mirrored head (w -> -w) and each row's own chosen gets the same probability as before
    p_swapped = cross_fit(xr, xc, groups, 4)
    assert np.allclose(p, p_swapped, atol=1e-5) and not np.allclose(p, 0.5, atol=0.05)
    with pytest.raises(ValueError, match="distinct prompts"):
        cross_fit(xc[:3], xr[:3], groups[:3], 5)


def test_annotator_prior_by_hand():
    p = np.array([0.9, 0.9, 0.6, 0.2])
    names = ["u", "u", "v", "v"]
    got = annotator_adjusted(p, names, min_labels=2)
    wrong = 1 - p
    e, eu, ev = wrong.mean(), wrong[:2].mean(), wrong[2:].mean()
    logit = lambda x: math.log(x / (1 - x))
    want = [1 / (1 + math.exp(-(math.log(w / (1 - w)) + logit(r) - logit(e))))
            for w, r in zip(wrong, (eu, eu, ev, ev))]
    assert got == pytest.approx(want)
    assert annotator_adjusted(p, names, min_labels=3) == pytest.approx(wrong)  # too few rows: no shift


def test_cli_folds(capsys, tmp_path, noisy_world):
    f = tmp_path / "train.jsonl"
    write_rows(noisy_world.train[:200], f)
    out = tmp_path / "a.json"
    code = main(["data", "audit", str(f), "--folds", "3", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "(cross_fit)" in text
    rep = json.loads(out.read_text())
    assert rep["mislabels"]["folds"] == 3 and rep["mislabels"]["num_scored"] == 200
    assert all(0.0 <= it["oof_p_chosen"] <= 1.0 for it in rep["items"])
    # close rows are ties (the default --ties close): scored, not suspected; every other row is
    ties = [it["verdicts"]["tie"] == 1 for it in rep["items"]]
    assert 0 < sum(ties) < len(ties)
    assert all((it["suspicion"] is None) == tie for it, tie in zip(rep["items"], ties))


def test_sgd_head_for_large_files_agrees(noisy_world, monkeypatch):
    """Above LIBLINEAR_MAX_ROWS the head is fitted by SGD; forced on a small file it finds the flips as well."""
    from preftune.audit import noise

    train = noisy_world.train[:600]
    xc, xr = pair_matrices(train)
    groups = [prompt_key(r) for r in train]
    exact = noise.cross_fit(xc, xr, groups, 5)
    monkeypatch.setattr(noise, "LIBLINEAR_MAX_ROWS", 0)
    sgd = noise.cross_fit(xc, xr, groups, 5)
    flip = np.array([not r.extra["gold_chosen_is_better"] for r in train])
    assert roc_auc_score(flip, 1 - sgd) == pytest.approx(roc_auc_score(flip, 1 - exact), abs=0.03)
    assert np.corrcoef(exact, sgd)[0, 1] > 0.9
