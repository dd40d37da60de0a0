"""Series extraction, smoothing and matplotlib figures for the run report.

Everything here is pure: rows in, series/groups out, or a finished PNG (bytes) out. matplotlib is
imported inside the drawing functions (Agg canvas, no pyplot global state), so importing this module
stays cheap and the report works on machines without a display.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# metric-name prefixes that say where a value was measured; `train/x` and `eval/x` share one plot
SPLIT_PREFIXES = ("train", "eval", "val", "test")
# keys of a metrics row that are coordinates or bookkeeping, not metrics
NON_METRIC_KEYS = frozenset({"step", "epoch", "time", "timestamp", "wall_time"})  # also as train/epoch

# (plot name, title, y label, metric suffixes) in the order the report shows them. A suffix is the
# metric name without its split prefix; several suffixes share one axis (chosen vs rejected).
KNOWN_GROUPS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("loss", "Loss", "loss", ("loss",)),
    ("rewards", "Implicit rewards: chosen vs rejected", "reward", ("rewards/chosen", "rewards/rejected")),
    ("margin", "Reward margin (chosen - rejected)", "margin", ("rewards/margin", "margin")),
    ("accuracy", "Preference accuracy (reward chosen > rejected)", "accuracy",
     ("rewards/accuracy", "accuracy")),
    ("logps", "Policy log-probs: chosen vs rejected", "summed log-prob", ("logps/chosen", "logps/rejected")),
    ("kl", "KL to the reference", "KL (nats)", ("kl",)),
    ("ppl", "Perplexity", "perplexity", ("ppl",)),
    ("grad_norm", "Gradient norm (before clipping)", "grad norm", ("grad_norm",)),
    ("lr", "Learning rate", "lr", ("lr",)),
    ("lengths", "Completion lengths: chosen vs rejected", "tokens", ("lengths/chosen", "lengths/rejected")),
    # online RL (`preftune train rl`): eval/reward is the held-out judge (eval_reward), eval/proxy the
    # training reward on the same held-out prompts
    ("reward", "Reward: training and held-out", "mean reward per completion", ("reward", "proxy")),
    ("reward_components", "Reward components (each term of --reward)", "mean reward", ()),
    ("reward_std", "Reward spread within a prompt's group", "reward std", ("reward_std",)),
    ("kl_coef", "KL coefficient", "coefficient", ("kl_coef",)),
    ("entropy", "Policy entropy of the sampled tokens", "nats per token", ("entropy",)),
    ("completion_length", "Mean completion length", "tokens", ("completion_length",)),
    ("clip", "Clip fractions of the importance ratio", "share of tokens",
     ("clip/low", "clip/high", "clip/region", "clip/value")),
    ("tied_groups", "Share of groups whose rewards all tie (no learning signal)", "share of groups",
     ("tied_groups",)),
    ("truncated", "Share of completions truncated (no EOS within max_new_tokens)", "share", ("truncated",)),
    ("value_loss", "Value loss (PPO)", "value loss", ("value_loss",)),
    ("samples_per_s", "Throughput", "completions per second", ("perf/samples_per_s",)),
    ("rollout_share", "Share of step time spent sampling", "share of wall time", ("perf/rollout_share",)),
)
SUFFIX_TO_GROUP = {s: name for name, _, _, suffixes in KNOWN_GROUPS for s in suffixes}
# `rewards/<component>` suffixes not named above (DPO's rewards/chosen etc. are) are RL reward components
COMPONENT_PREFIX, COMPONENT_GROUP = "rewards/", "reward_components"
# the plots an RL run's training section shows first, in this order (the rest follow in KNOWN_GROUPS order)
RL_FIRST = ("reward", "reward_components", "kl", "kl_coef", "entropy", "completion_length", "tied_groups",
            "truncated", "clip", "reward_std", "value_loss", "loss", "grad_norm", "lr", "samples_per_s",
            "rollout_share")

# values beyond this are not drawn: matplotlib's transforms and tickers overflow near the float maximum
PLOT_LIMIT = 1e100
COLORS = {"chosen": "#1f77b4", "rejected": "#d62728", "proxy": "#9467bd", "judge": "#2ca02c"}


@dataclass(frozen=True)
class Series:
    """One metric over training: `steps[i]` is the x of `values[i]` (both length N)."""
    name: str
    steps: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class PlotGroup:
    """Series drawn on one axis; `name` becomes the figure's `data-plot` attribute."""
    name: str
    title: str
    ylabel: str
    series: tuple[Series, ...]


def split_metric(key: str) -> tuple[str, str]:
    """`"train/rewards/chosen"` -> `("train", "rewards/chosen")`; `"loss"` -> `("", "loss")`."""
    head, sep, tail = key.partition("/")
    if sep and head in SPLIT_PREFIXES and tail:
        return head, tail
    return "", key


def _as_number(value: object) -> float | None:
    # bools are ints in Python but a flag is not a curve
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def extract_series(rows: Sequence[dict]) -> dict[str, Series]:
    """Numeric metric columns of metrics.jsonl rows, keyed by metric name, in first-seen order.

    x is the row's `step` (the row index when a row has none). Rows that lack a metric simply do not
    contribute a point to it (train and eval rows are logged at different steps). A metric whose
    values are all NaN/inf has nothing to draw and is left out.
    """
    points: dict[str, tuple[list[float], list[float]]] = {}
    for i, row in enumerate(rows):
        step = _as_number(row.get("step"))
        x = float(i) if step is None else step
        for key, value in row.items():
            num = _as_number(value)
            if key in NON_METRIC_KEYS or split_metric(key)[1] in NON_METRIC_KEYS or num is None:
                continue
            xs, ys = points.setdefault(key, ([], []))
            xs.append(x)
            ys.append(num)
    return {k: Series(k, tuple(xs), tuple(ys)) for k, (xs, ys) in points.items()
            if any(math.isfinite(v) for v in ys)}


def group_series(series: dict[str, Series]) -> tuple[list[PlotGroup], list[PlotGroup]]:
    """Split metric series into (known groups in KNOWN_GROUPS order, other groups by suffix).

    Known groups hold every split (`train/loss` and `eval/loss` share the "loss" plot). Each unknown
    suffix gets its own plot named `other:SUFFIX`, so a metric a trainer invents is still drawn.
    """
    known: dict[str, list[Series]] = {}
    other: dict[str, list[Series]] = {}
    for key, s in series.items():
        _, suffix = split_metric(key)
        group = SUFFIX_TO_GROUP.get(suffix)
        if group is None and suffix.startswith(COMPONENT_PREFIX) and len(suffix) > len(COMPONENT_PREFIX):
            group = COMPONENT_GROUP
        if group is not None:
            known.setdefault(group, []).append(s)
        else:
            other.setdefault(suffix, []).append(s)
    known_groups = [PlotGroup(name, title, ylabel, tuple(known[name]))
                    for name, title, ylabel, _ in KNOWN_GROUPS if name in known]
    other_groups = [PlotGroup(f"other:{suffix}", suffix, suffix, tuple(ss)) for suffix, ss in other.items()]
    return known_groups, other_groups


def rl_order(groups: list[PlotGroup]) -> list[PlotGroup]:
    """Known groups with an RL run's reward, KL and sampling plots first (RL_FIRST order)."""
    rank = {name: i for i, name in enumerate(RL_FIRST)}
    return sorted(groups, key=lambda g: rank.get(g.name, len(rank)))  # stable: the rest keep their order


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing); `weight` in [0, 1).

    weight 0 returns the values unchanged; a constant series stays constant for any weight (the
    debiasing divides out the zero start). Non-finite values are passed through and do not update
    the average, so one NaN step does not blank the rest of the curve.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out: list[float] = []
    acc, norm = 0.0, 0.0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        acc = weight * acc + (1.0 - weight) * v
        norm = weight * norm + (1.0 - weight)
        out.append(acc / norm)
    return out


def auto_smoothing(num_points: int) -> float:
    """Smoothing weight for a curve of `num_points`: none below 10 points, then about a 5-point
    window that widens with the run, capped at 0.9 so late changes still show."""
    if num_points < 10:
        return 0.0
    return min(0.9, 1.0 - 5.0 / num_points)


# ----------------------------------------------------------------------------------------------
# drawing: each function returns PNG bytes


def _render(draw: Callable[[object], None], size: tuple[float, float] = (6.4, 3.4), dpi: int = 90) -> bytes:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("preftune report draws its plots with matplotlib: pip install 'preftune[report]'") from None

    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    draw(ax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _palette_png(buf.getvalue())


def _palette_png(png: bytes) -> bytes:
    """The same image with a 256-colour palette: a line plot has few colours, and the file (inlined in
    the page) shrinks about 3x with no visible change. Pillow comes with matplotlib."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _series_color(name: str) -> str | None:
    for word, color in COLORS.items():
        if word in name:
            return color
    return None


def drawable(steps: Sequence[float], values: Sequence[float]) -> tuple[list[float], list[float], int]:
    """(xs, ys, number left out): points whose value is NaN, infinite or beyond +-PLOT_LIMIT cannot be
    drawn (matplotlib's transforms overflow); the caller says how many were left out."""
    pts = [(x, y) for x, y in zip(steps, values)
           if math.isfinite(y) and abs(y) <= PLOT_LIMIT and math.isfinite(x) and abs(x) <= PLOT_LIMIT]
    return [p[0] for p in pts], [p[1] for p in pts], len(values) - len(pts)


def _draw_series(ax, s: Series, label: str, color: str | None, smooth: bool = True) -> int:
    """One metric: raw values faint and the smoothed curve solid (eval splits dashed); returns the
    number of points that could not be drawn."""
    xs, ys, left_out = drawable(s.steps, s.values)
    if not ys:
        return left_out
    weight = auto_smoothing(len(ys)) if smooth else 0.0
    style = "--" if split_metric(s.name)[0] in ("eval", "val", "test") else "-"
    marker = "o" if len(ys) <= 20 else None
    if weight > 0:
        (raw,) = ax.plot(xs, ys, alpha=0.25, color=color, linewidth=1)
        ax.plot(xs, ema(ys, weight), style, color=raw.get_color(), linewidth=1.8, label=f"{label} (EMA {weight:.2f})")
    else:
        ax.plot(xs, ys, style, color=color, marker=marker, markersize=3, label=label)
    return left_out


def _note_left_out(ax, left_out: int) -> None:
    if left_out:
        ax.annotate(f"{left_out} non-finite or out-of-range points not drawn", (0.01, 0.01),
                    xycoords="axes fraction", fontsize=7, color="#b00")


# legend labels that say what a metric measures where its name alone does not
SERIES_LABELS = {"eval/reward": "eval/reward (held-out judge: eval_reward)",
                 "eval/proxy": "eval/proxy (training reward, held-out prompts)"}


def plot_group(group: PlotGroup) -> bytes:
    """Line plot of a group: raw values faint, the smoothed curve solid; eval series dashed."""

    def draw(ax) -> None:
        # the schedule is exact: smoothing it would only misdraw warmup
        left_out = sum(_draw_series(ax, s, SERIES_LABELS.get(s.name, s.name), _series_color(s.name),
                                    smooth=group.name != "lr") for s in group.series)
        if group.name == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        _note_left_out(ax, left_out)
        ax.set_title(group.title)
        ax.set_xlabel("step")
        ax.set_ylabel(group.ylabel)
        ax.legend(fontsize=8)

    return _render(draw)


RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def plot_overlay(runs: Sequence[tuple[str, Series]], title: str, ylabel: str) -> bytes:
    """The same metric from several runs on one axis, one colour per run (compare pages)."""

    def draw(ax) -> None:
        left_out = sum(_draw_series(ax, s, label, RUN_COLORS[i % len(RUN_COLORS)], smooth=not s.name.endswith("lr"))
                       for i, (label, s) in enumerate(runs))
        _note_left_out(ax, left_out)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)

    return _render(draw)


def plot_histograms(groups: Sequence[tuple[str, Sequence[float]]], title: str, xlabel: str,
                    colors: Sequence[str] | None = None) -> bytes:
    """Overlaid histograms of a few groups of values on shared bins (e.g. model vs baseline lengths)."""
    kept = [(label, drawable(range(len(v)), v)[1]) for label, v in groups]
    left_out = sum(len(v) for _, v in groups) - sum(len(v) for _, v in kept)
    colors = list(colors or RUN_COLORS)

    def draw(ax) -> None:
        both = [x for _, v in kept for x in v]
        lo, hi = (min(both), max(both)) if both else (0.0, 1.0)
        bins = [lo + (hi - lo) * i / 30 for i in range(31)] if hi > lo else 10
        for i, (label, v) in enumerate(kept):
            ax.hist(v, bins=bins, alpha=0.55, color=colors[i % len(colors)], label=f"{label} (n={len(v)})")
        _note_left_out(ax, left_out)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        ax.legend(fontsize=8)

    return _render(draw)


def plot_ranges(rows: Sequence[tuple[str, dict]], title: str, xlabel: str) -> bytes:
    """Length summaries (min, median, mean, p90, max per field) drawn as one horizontal range each:
    a line from min to max, a bar from the median to the 90th percentile, a diamond at the mean.
    For statistics files that keep only these summaries, not every value."""

    def draw(ax) -> None:
        for i, (label, d) in enumerate(rows):
            y = len(rows) - 1 - i
            ax.plot([d["min"], d["max"]], [y, y], color="#556", linewidth=1)
            ax.barh(y, d["p90"] - d["median"], left=d["median"], height=0.4, color="#1f77b4", alpha=0.6)
            ax.plot([d["median"]], [y], "|", color="black", markersize=14)
            ax.plot([d["mean"]], [y], "D", color="#d62728", markersize=5)
        ax.set_yticks(range(len(rows)), [label for label, _ in rows][::-1])
        ax.set_title(title)
        ax.set_xlabel(xlabel + "   (line: min-max; bar: median-p90; diamond: mean)")

    return _render(draw, size=(6.4, 0.55 * len(rows) + 1.4))


def plot_reward_histograms(chosen: Sequence[float], rejected: Sequence[float]) -> bytes:
    """Overlaid histograms of chosen and rejected rewards on shared bins."""
    return plot_histograms([("chosen", chosen), ("rejected", rejected)], "Reward distributions", "reward",
                           colors=[COLORS["chosen"], COLORS["rejected"]])


def plot_reliability(bins: Sequence[dict], ece: float | None) -> bytes:
    """Reliability diagram: per-bin accuracy against mean confidence, the diagonal is perfect."""

    def draw(ax) -> None:
        conf = [float(b["mean_confidence"]) for b in bins]
        acc = [float(b["accuracy"]) for b in bins]
        width = 0.8 / max(len(bins), 1)
        ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
        ax.bar(conf, acc, width=width, alpha=0.7, color=COLORS["chosen"], edgecolor="black",
               label="accuracy in bin")
        for c, a, b in zip(conf, acc, bins):
            if b.get("count") is not None:
                ax.annotate(str(b["count"]), (c, a), ha="center", va="bottom", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("confidence P(chosen > rejected)")
        ax.set_ylabel("observed accuracy")
        ax.set_title("Calibration" + (f" (ECE = {ece:.3f})" if ece is not None else ""))
        ax.legend(fontsize=8, loc="upper left")

    return _render(draw, size=(6.4, 4.4))


def plot_reward_vs_length(chosen: tuple[Sequence[float], Sequence[float]],
                          rejected: tuple[Sequence[float], Sequence[float]], corr: float | None) -> bytes:
    """Scatter of reward (y) against length (x) for chosen and rejected completions.

    `chosen` and `rejected` are (lengths, rewards) pairs of equal-length sequences.
    """

    chosen, rejected = drawable(*chosen)[:2], drawable(*rejected)[:2]

    def draw(ax) -> None:
        ax.scatter(chosen[0], chosen[1], s=8, alpha=0.5, color=COLORS["chosen"], label="chosen")
        ax.scatter(rejected[0], rejected[1], s=8, alpha=0.5, color=COLORS["rejected"], label="rejected")
        ax.set_xlabel("length (characters)")
        ax.set_ylabel("reward")
        ax.set_title("Reward vs length" + (f" (corr = {corr:.3f})" if corr is not None else ""))
        ax.legend(fontsize=8)

    return _render(draw)


def plot_bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str,
              colors: Iterable[str] | None = None, ylim: tuple[float, float] | None = None) -> bytes:
    """Labelled bar chart with each bar's value printed on it (a bar that is not a finite number is
    drawn at 0 and labelled with its value)."""
    shown = [v if math.isfinite(v) and abs(v) <= PLOT_LIMIT else 0.0 for v in values]

    def draw(ax) -> None:
        bars = ax.bar(list(labels), shown, color=list(colors) if colors else None, alpha=0.8)
        for bar, v in zip(bars, values):
            ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(title)
        ax.set_ylabel(ylabel)

    return _render(draw)


def plot_overoptimisation(x: Sequence[float], proxy: Sequence[float], judge: Sequence[float],
                          xlabel: str, flag_x: float | None = None) -> bytes:
    """Proxy reward and judge score against optimisation pressure, on twin y axes (their scales
    differ); the hacking signature is the proxy rising while the judge falls. `flag_x` marks where
    the guard flagged it."""

    xp, proxy = drawable(x, proxy)[:2]
    xj, judge = drawable(x, judge)[:2]

    def draw(ax) -> None:
        ax.plot(xp, proxy, "o-", color=COLORS["proxy"], label="proxy reward")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("proxy reward", color=COLORS["proxy"])
        ax2 = ax.twinx()
        ax2.plot(xj, judge, "s--", color=COLORS["judge"], label="judge score")
        ax2.set_ylabel("judge score", color=COLORS["judge"])
        if flag_x is not None:
            ax.axvline(flag_x, color="#d62728", linestyle=":", label=f"flagged at {flag_x:g}")
        ax.set_title("Over-optimisation: proxy vs judge")
        lines = [ln for ln in ax.get_lines() + ax2.get_lines() if not ln.get_label().startswith("_")]
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")

    return _render(draw)
