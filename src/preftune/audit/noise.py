"""Suspected mislabels, cross-fitted (`preftune data audit --folds K`).

Each pair is scored by a pairwise model that never saw it: the rows are cut into K folds by prompt (all rows
of a prompt, so every label of an item, fall in one fold), a model is trained on K-1 folds and scores the
held-out one. A row's suspicion is the held-out model's probability that its label is wrong,
1 - P(its chosen wins) (confident learning's self-confidence, Northcutt et al. 2021, sec. 3; ranking by it
is their "prune by self-confidence" order). Two refinements: prune-and-refit (`cross_fit_pruned`) and, when
the rows name two or more annotators, each annotator's own error rate as the prior (`annotator_adjusted`).

Fast mode (this module): features of each (prompt, response), the difference chosen - rejected, and a
logistic pairwise head (scikit-learn; Bradley-Terry with a linear score). Features are cheap text features
(hashed word n-grams of the response, hashed prompt-word x response-word pairs, lengths, lines, bullets,
digits, JSON validity, overlap with the prompt) and, with `model`, the frozen encoder's mean-pooled
embedding of prompt + response. No gold scorer or world knowledge is used.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence

import numpy as np

from preftune.data.curate import prompt_key
from preftune.data.records import PairRecord, Record, render_text

_WORD = re.compile(r"[a-z0-9]+")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S", re.MULTILINE)
_NUM_HASH = 2 ** 14
_CROSS_WORDS = 24  # distinct words of the prompt and of the response paired (24 x 24 hashed pairs at most)


def _json_ok(text: str) -> float:
    t = text.strip()
    if not t.startswith(("{", "[")):
        return 0.0
    try:
        json.loads(t)
    except ValueError:
        return 0.5
    return 1.0


def dense_features(prompt: str, response: str) -> list[float]:
    """Hand-picked surface features of one response to its prompt."""
    pw, rw = set(_WORD.findall(prompt.lower())), _WORD.findall(response.lower())
    rs = set(rw)
    sentences = [s.strip().lower() for s in re.split(r"[.!?]\s+", response) if s.strip()]
    return [math.log1p(len(response)), math.log1p(len(rw)), float(response.count("\n")),
            float(len(_BULLET.findall(response))), float(sum(c.isdigit() for c in response) > 0),
            _json_ok(response), len(rs & pw) / max(len(rs), 1), len(rs & pw) / max(len(pw), 1),
            float(len(sentences) - len(set(sentences)))]


def text_features(prompts: Sequence[str], responses: Sequence[str]):
    """(n, d) sparse features: hashed response words and bigrams, hashed (prompt word, response word)
    pairs (so "refuse" can count differently under different requests), and the dense ones."""
    from scipy import sparse
    from sklearn.feature_extraction.text import HashingVectorizer

    words = HashingVectorizer(n_features=_NUM_HASH, ngram_range=(1, 2), alternate_sign=False, norm="l2")
    cross = HashingVectorizer(n_features=_NUM_HASH, analyzer=lambda s: s.split(" "), alternate_sign=False,
                              norm="l2")
    joined = []
    for p, r in zip(prompts, responses):
        pw = sorted(set(_WORD.findall(p.lower())))[:_CROSS_WORDS]
        rw = sorted(set(_WORD.findall(r.lower())))[:_CROSS_WORDS]
        joined.append(" ".join(f"{a}|{b}" for a in pw for b in rw))
    dense = np.array([dense_features(p, r) for p, r in zip(prompts, responses)], dtype=np.float64)
    # fixed scales (no statistics of the data, so chosen and rejected get the same map and the head's
    # solver sees columns of about unit size, like the l2-normalised hashed blocks)
    dense = dense / np.array([8.0, 6.0, 10.0, 10.0, 1.0, 1.0, 1.0, 1.0, 3.0])
    return sparse.hstack([words.transform(responses), cross.transform(joined), sparse.csr_matrix(dense)]).tocsr()


def encoder_embeddings(texts: Sequence[str], model_name: str, batch_size: int = 32, max_length: int = 256):
    """Mean-pooled last hidden states of a frozen encoder (preftune's model loading), (n, hidden)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModel

    from preftune.models import load_tokenizer, resolve_model_path

    tok = load_tokenizer(model_name)
    model = AutoModel.from_pretrained(resolve_model_path(model_name)).eval()
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(texts), batch_size), desc="embedding", unit="batch", leave=False):
            enc = tok(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            h = model(**enc).last_hidden_state  # (b, T, H)
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(((h * m).sum(1) / m.sum(1).clamp(min=1)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def pair_matrices(pairs: Sequence[PairRecord], model: str | None = None):
    """(X_chosen, X_rejected), sparse, one row per pair."""
    from scipy import sparse

    prompts = [render_text(p.prompt) for p in pairs]
    keys_c = [(q, render_text(p.chosen)) for q, p in zip(prompts, pairs)]
    keys_r = [(q, render_text(p.rejected)) for q, p in zip(prompts, pairs)]
    # each distinct (prompt, response) once: multi-labelled items and shared references (AlpacaEval
    # compares every model with one reference answer per prompt) repeat them
    uniq = list(dict.fromkeys(keys_c + keys_r))
    pos = {k: i for i, k in enumerate(uniq)}
    feats = text_features([q for q, _ in uniq], [r for _, r in uniq])
    xc, xr = feats[[pos[k] for k in keys_c]], feats[[pos[k] for k in keys_r]]
    if model:
        tc = [f"{q}\n{render_text(p.chosen)}" for q, p in zip(prompts, pairs)]
        tr = [f"{q}\n{render_text(p.rejected)}" for q, p in zip(prompts, pairs)]
        uniq = list(dict.fromkeys(tc + tr))  # each distinct text once (multi-labelled items repeat them)
        emb = encoder_embeddings(uniq, model)
        pos = {t: i for i, t in enumerate(uniq)}
        ec, er = emb[[pos[t] for t in tc]], emb[[pos[t] for t in tr]]
        xc, xr = sparse.hstack([xc, sparse.csr_matrix(ec)]).tocsr(), sparse.hstack([xr, sparse.csr_matrix(er)]).tocsr()
    return xc, xr


def cross_fit(xc, xr, groups: Sequence[str], folds: int, seed: int = 0, c: float = 0.1,
              train_mask: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold P(chosen wins) per row. The head is a logistic regression on d = x_chosen - x_rejected
    without intercept, trained on both orientations (d, 1) and (-d, 0), so P(a over b) = 1 - P(b over a).
    `train_mask`: rows that may be trained on (ties are scored, not trained on)."""
    from scipy import sparse
    from sklearn.model_selection import GroupKFold

    n = xc.shape[0]
    d = (xc - xr).tocsr()
    mask = np.ones(n, dtype=bool) if train_mask is None else train_mask
    uniq = len(set(groups))
    if uniq < folds:
        raise ValueError(f"--folds {folds} needs at least {folds} distinct prompts; the file has {uniq}")
    p = np.full(n, np.nan)
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    from tqdm import tqdm

    split = splitter.split(np.zeros(n), groups=list(groups))
    for train_idx, test_idx in tqdm(split, total=folds, desc="cross-fit", unit="fold", leave=False):
        tr = train_idx[mask[train_idx]]
        x = sparse.vstack([d[tr], -d[tr]]).tocsr()
        y = np.concatenate([np.ones(len(tr)), np.zeros(len(tr))])
        p[test_idx] = _fit_head(x, y, c, seed).predict_proba(d[test_idx])[:, 1]
    return p


LIBLINEAR_MAX_ROWS = 20_000  # training rows (both orientations) above which the head is fitted by SGD


def _fit_head(x, y, c: float, seed: int):
    """The L2-regularised logistic head. liblinear (exact) on small data; above LIBLINEAR_MAX_ROWS rows the
    same objective by SGD (alpha = 1 / (C n), scikit-learn's mapping), whose cost is linear in the rows:
    liblinear's dual took over 7 minutes a fold on AlpacaEval's 34k pairs on 2 shared cores."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    if x.shape[0] <= LIBLINEAR_MAX_ROWS:
        return LogisticRegression(C=c, fit_intercept=False, solver="liblinear", dual=True, max_iter=5000).fit(x, y)
    return SGDClassifier(loss="log_loss", alpha=1.0 / (c * x.shape[0]), fit_intercept=False, max_iter=20,
                         tol=1e-4, random_state=seed).fit(x, y)


def cross_fit_pruned(xc, xr, groups: Sequence[str], folds: int, seed: int = 0, c: float = 0.1,
                     train_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two rounds (confident learning's prune-and-refit): round 1 scores every row out of fold; the rows it
    says are wrong (P(label) < 0.5) are left out of round 2's training, which rescores every row.
    Returns (round-2 P(chosen wins), the pruned mask)."""
    mask = np.ones(xc.shape[0], dtype=bool) if train_mask is None else train_mask
    p1 = cross_fit(xc, xr, groups, folds, seed, c, mask)
    pruned = mask & (p1 < 0.5)
    return cross_fit(xc, xr, groups, folds, seed, c, mask & ~pruned), pruned


def annotator_adjusted(p: np.ndarray, annotators: Sequence[str | None], min_labels: int = 10) -> np.ndarray:
    """P(label wrong) with each annotator's own error rate in place of the data's average: the log-odds
    log((1-p)/p) + logit(e_a) - logit(e), where e_a is the annotator's mean held-out P(wrong) and e the mean
    over all rows (annotators with fewer than `min_labels` rows, or none, keep e). This is the Bayes update
    of a prior flip rate per labeller, with the model's odds as the likelihood ratio."""
    q = np.clip(p, 1e-4, 1 - 1e-4)
    wrong = 1.0 - q
    e = float(wrong.mean())
    names = np.array(["" if a is None else str(a) for a in annotators])
    rate = {a: float(wrong[names == a].mean()) for a in set(names) if a and (names == a).sum() >= min_labels}
    shift = np.array([_logit(rate.get(a, e)) - _logit(e) for a in names])
    return 1.0 / (1.0 + np.exp(-(np.log(wrong / q) + shift)))


def _logit(x: float) -> float:
    x = min(max(x, 1e-4), 1 - 1e-4)
    return math.log(x / (1 - x))


def add_mislabel_scores(report: dict, records: Sequence[Record], lines: Sequence[int], folds: int,
                        model: str | None = None, seed: int = 0) -> dict:
    """Score every pair row out of fold and merge the scores into the report's items (in place): each row
    gets `oof_p_chosen` and `oof_suspicion` (its `suspicion` becomes the cross-fitted one), each item
    `oof_p_chosen` (for its first row's chosen) and `suspicion` = max over its rows. Adds `mislabels`."""
    t0 = time.perf_counter()
    idx = [i for i, r in enumerate(records) if isinstance(r, PairRecord)]
    pairs = [records[i] for i in idx]
    xc, xr = pair_matrices(pairs, model)
    ties = np.array([p.close is True and report.get("ties") == "close" for p in pairs])
    p, pruned = cross_fit_pruned(xc, xr, [prompt_key(r) for r in pairs], folds, seed, train_mask=~ties)
    names = [r.annotator for r in pairs]
    adjust = len({a for a in names if a is not None}) >= 2
    wrong = annotator_adjusted(p, names) if adjust else 1.0 - p
    by_line = {lines[i]: (float(p[k]), float(wrong[k])) for k, i in enumerate(idx)}
    for item in report["items"]:
        for row in item["rows"]:
            got = by_line.get(row["line"])
            if got is None:
                continue
            pc, w = got  # P(this row's chosen wins), P(this row's label is wrong)
            row["oof_p_chosen"] = pc
            row["oof_suspicion"] = None if row["verdict"] == "tie" else w
            row["ds_suspicion"] = row.get("ds_suspicion", row["suspicion"])
            if row["oof_suspicion"] is not None:
                row["suspicion"] = row["oof_suspicion"]
        first = by_line.get(item["lines"][0])
        item["oof_p_chosen"] = None if first is None else first[0]
        sus = [r["suspicion"] for r in item["rows"] if r.get("suspicion") is not None]
        item["suspicion"] = max(sus) if sus else None
        item["suspicion_source"] = "cross_fit" if sus else None
    labelled = ~ties
    report["mislabels"] = {"folds": folds, "model": model, "features": "text" + (" + encoder" if model else ""),
                           "num_scored": len(p), "num_pruned_in_round_1": int(pruned.sum()),
                           "annotator_adjusted": adjust, "oof_agreement_with_labels": float(np.mean(p[labelled] > 0.5))
                           if labelled.any() else None, "seconds": round(time.perf_counter() - t0, 2)}
    return report
