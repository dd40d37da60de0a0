"""Numbers rounded to their precision, nested values as tables, texts escaped (preftune.report.fmt)."""

from __future__ import annotations

import math

import pytest

from preftune.report import fmt


def test_fmt_num_hand_values():
    cases = [(63.17307692307692, "63.17"), (89.39999999999998, "89.4"), (0.001220703125, "0.001221"),
             (2.346169920793348e-05, "2.346e-5"), (1e308, "1e+308"), (-1e308, "-1e+308"), (12345.6, "12346"),
             (5e-7, "5e-7"), (2e6, "2e+6"), (0.0, "0"), (63.0, "63"), (7, "7"), (True, "yes"), (None, "—"),
             (float("nan"), "NaN"), (float("inf"), "+inf"), (float("-inf"), "-inf"), ("text", "text")]
    assert [fmt.fmt_num(x) for x, _ in cases] == [want for _, want in cases]
    assert fmt.fmt_num(0.6484375, 3) == "0.648"


def test_decimals_follow_the_uncertainty():
    # two significant digits of the standard error, the value to the same place
    assert fmt.decimals_for(0.038) == 3      # win rate over 64 prompts: 0.648 [0.570, 0.719]
    assert fmt.decimals_for(0.0106) == 3     # accuracy 0.94 over 500 pairs
    assert fmt.decimals_for(0.2) == 2        # 5 pairs
    assert fmt.decimals_for(0.001) == 4
    assert fmt.decimals_for(None) == fmt.decimals_for(0.0) == fmt.decimals_for(float("nan")) == 3
    assert fmt.decimals_for(1e-9) == 6 and fmt.decimals_for(30.0) == 1  # clamped
    assert fmt.proportion_se(0.5, 100) == pytest.approx(0.05)
    assert fmt.proportion_se(1.0, 100) == pytest.approx(0.05)  # p = 1: the widest error, not 0
    assert fmt.fmt_fixed(0.6484375, 3) == "0.648" and fmt.fmt_fixed(float("nan"), 3) == "NaN"
    assert fmt.fmt_fixed(1e308, 2) == "1e+308" and fmt.fmt_fixed(3, 2) == "3.00"


def test_wilson_interval_matches_newcombe_and_statsmodels():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662
    lo, hi = fmt.wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    # and the boundary case 0/10 -> 0 to 0.2775 (same table)
    lo, hi = fmt.wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    assert fmt.wilson_interval(3, 0) is None
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for k, n in [(1, 7), (45, 50), (500, 1000)]:
        assert fmt.wilson_interval(k, n) == pytest.approx(proportion.proportion_confint(k, n, method="wilson"))


def test_value_html_never_shows_a_repr_and_escapes():
    v = {"a": [{"b": {"c": [1, 2]}, "d": None}], "e": [], "f": [[1, 2], {"g": "<b>x</b>"}],
         "h": {"i": {"j": {"k": {"l": {"m": 1}}}}}, "n": list(range(30))}
    out = fmt.value_html(v)
    assert "{'" not in out and "[{" not in out and '{"' not in out and "<b>x</b>" not in out
    assert "&lt;b&gt;x&lt;/b&gt;" in out and "(empty)" in out and "(1 fields)" in out
    assert "0, 1, 2" in out and "… (10 more)" in out


def test_text_of_renders_chat_messages_and_never_a_repr():
    assert fmt.text_of([{"role": "user", "content": "hi"}]) == "hi"
    assert fmt.text_of([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]) == \
        "system: be brief\nuser: hi"
    assert fmt.text_of({"role": "assistant", "content": "ok"}) == "ok"
    assert fmt.text_of({"odd": 1}) == "(1 fields)" and fmt.text_of(None) == "" and fmt.text_of(3.0) == "3"


def test_flatten_and_num_span():
    assert fmt.flatten({"a": 1, "b": {"c": 2, "d": {}}, "e": [1]}) == [("a", 1), ("b.c", 2), ("b.d", {}), ("e", [1])]
    span = fmt.num_span("0.648", "policy", "win_rate_ci95.0", run=1)
    assert span == "<span class='num' data-run='1' data-src='policy' data-key='win_rate_ci95.0'>0.648</span>"
    assert math.isclose(float("0.648"), 0.648)
