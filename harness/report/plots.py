"""Accuracy vs peak memory (with the Pareto front) and accuracy vs trainable parameters, as PNG bytes.

Points are seed-aggregated groups; the accuracy is the paper's average when every set it needs
was evaluated, else the all-sets average. Accuracies are comparable only when measured the same
way: same task family, scoring, items per set, decoding, training set and evaluation precision. So
points are split into series by that protocol (`series`), and each series has its own colour,
marker, legend entry and Pareto front (`fronts`): a log-likelihood score on 50 items must not
"dominate" a generated answer scored on 4. Markers say the method's family (LoRA variants, adapters,
prompt-based, ...), one legend entry per family shown.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and no GUI backend is ever picked up
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

# what makes two accuracies comparable (a subset of aggregate.KEY: model and method are what we compare)
PROTOCOL = ("task", "scoring", "eval_limit", "decoding", "train_set", "eval_precision")
# a colour per series (protocol), a marker per method family (harness.methods.FAMILIES, in order)
COLORS = [f"C{i}" for i in range(10)]
FAMILY_MARKERS = {"base": "X", "full": "*", "lora": "o", "adapter": "s", "prompt": "^", "multiplicative": "D",
                  "selective": "v"}
UNKNOWN_MARKER = "P"  # a method this checkout does not know
LEADER = {"arrowstyle": "-", "lw": 0.5, "color": "grey", "shrinkA": 0, "shrinkB": 3}


def family_key(method: str) -> str | None:
    from harness import methods
    spec = methods.all_methods().get(methods.canonical(str(method)))
    return spec.family if spec else None


def _scatter(ax, pts: list[tuple[dict, float, float]], color: str, families: set, **kw) -> None:
    """The points of one series, one scatter call per family marker; `families` collects those drawn."""
    by_family: dict = {}
    for g, x, y in pts:
        by_family.setdefault(family_key(g["method"]), []).append((x, y))
    for fam, xy in by_family.items():
        ax.scatter([x for x, _ in xy], [y for _, y in xy], c=color, marker=FAMILY_MARKERS.get(fam, UNKNOWN_MARKER),
                   **kw)
        families.add(fam)
    # error bars: the 95% interval of the average, bootstrapped over items (when predictions exist)
    bars = [(x, y, g["avg_ci"]) for g, x, y in pts if g.get("avg_ci") and g["avg_ci"]["mean"] is not None
            and abs(g["avg_ci"]["mean"] - y) < 1e-6]
    if bars:
        ax.errorbar([x for x, _, _ in bars], [y for _, y, _ in bars],
                    yerr=[[y - ci["low"] for _, y, ci in bars], [ci["high"] - y for _, y, ci in bars]],
                    fmt="none", ecolor=color, elinewidth=1, capsize=3, alpha=0.7, zorder=2)


def _family_legend(ax, families: set) -> None:
    """One grey legend entry per family drawn (the series entries carry the colours)."""
    from harness import methods
    for fam in [f for f in methods.FAMILIES if f in families] + ([None] if None in families else []):
        ax.scatter([], [], c="grey", marker=FAMILY_MARKERS.get(fam, UNKNOWN_MARKER),
                   label=f"family: {methods.FAMILY_LABELS[fam] if fam else 'unknown'}")


def accuracy_of(g: dict) -> float | None:
    return g["avg_paper"][0] if g["avg_paper"][0] is not None else g["avg_all"][0]


def peak_memory(g: dict) -> float | None:
    """The run's peak over the phases measured (training, evaluation)."""
    vals = [v for v in (g["mem_train_gib"][0], g["mem_eval_gib"][0]) if v is not None]
    return max(vals) if vals else None


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower or equal memory and higher accuracy),
    in order of increasing memory."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def series(groups: list[dict]) -> dict[str, list[dict]]:
    """Groups split by PROTOCOL into comparable series, keyed by a short label: the family, then
    only the parts that differ between series of that family, so a family measured one way reads
    just its name. Decoding counts as differing only between series of the same scoring: label and cloze
    has none ('-'), which is not a second decoding."""
    by_key: dict[tuple, list[dict]] = {}
    for g in groups:
        by_key.setdefault(tuple(g[k] for k in PROTOCOL), []).append(g)
    out = {}
    for key in sorted(by_key, key=lambda k: (*map(str, k[:2]), k[2] == 0, k[2], *map(str, k[3:]))):  # 0 = all: last
        parts = [str(key[0])]
        for i, field in enumerate(PROTOCOL[1:], 1):
            peers = [k for k in by_key if k[0] == key[0] and (field != "decoding" or k[1] == key[1])]
            if len({k[i] for k in peers}) > 1:
                parts.append(("first " + str(key[i]) if key[i] else "all items") if field == "eval_limit" else
                             str(key[i]))
        out[" · ".join(parts)] = by_key[key]
    return out


def _located(members: list[dict], x) -> list[tuple[dict, float, float]]:
    """(group, x, accuracy) of the groups with both known."""
    pts = [(g, x(g), accuracy_of(g)) for g in members]
    return [p for p in pts if p[1] is not None and p[2] is not None]


def fronts(groups: list[dict]) -> dict[str, list[dict]]:
    """Per series, the groups on its Pareto front (peak memory vs accuracy), in order of increasing
    memory, computed over that series' points only."""
    out = {}
    for label, members in series(groups).items():
        pts = _located(members, peak_memory)
        out[label] = [pts[i][0] for i in pareto_front([(x, y) for _, x, y in pts])]
    return out


def _point_label(g: dict, many_models: bool) -> str:
    """The series names the protocol already: say the method, the model when several are shown,
    and the variant (the config that tells apart groups of one model and method)."""
    label = f"{g['model']}/{g['method']}" if many_models else str(g["method"])
    return f"{label} ({g['variant']})" if g.get("variant") else label


# where a label may go, in points from its point (the first that is free wins): right, left, then a
# line further up or down; a label away from its point gets a thin line to it
SPOTS = [(4, 4, "left"), (-4, 4, "right"), (4, -11, "left"), (-4, -11, "right"), (4, 14, "left"), (4, -21, "left"),
         (4, 24, "left"), (-4, 14, "right"), (-4, -21, "right")]


def _text(ax, text: str, xy: tuple, dx: float, dy: float, ha: str, arrow: dict | None = None):
    return ax.annotate(text, xy, textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=7, arrowprops=arrow)


def _annotate(ax, pts: list[tuple[str, float, float]]) -> None:
    """Label the points without text on text or on a marker: points that coincide (same rounded x
    and y) share one label listing their names, and each label takes the first free spot in SPOTS."""
    at: dict[tuple, list] = {}
    for lab, x, y in pts:
        names = at.setdefault((f"{x:.3g}", f"{y:.3g}"), [x, y, []])[2]
        if lab not in names:
            names.append(lab)
    ax.get_xlim(), ax.get_ylim()  # settle the autoscaled limits: label positions on screen depend on them
    renderer, taken = ax.figure.canvas.get_renderer(), []
    marks = {k: Bbox.from_bounds(*(ax.transData.transform((x, y)) - 6), 12, 12) for k, (x, y, _) in at.items()}
    for key, (x, y, names) in sorted(at.items(), key=lambda kv: kv[1][:2]):
        others = taken + [m for k, m in marks.items() if k != key]
        for i, spot in enumerate(SPOTS + SPOTS[:1]):  # the last: none is free, so the first after all
            text = _text(ax, ", ".join(names), (x, y), *spot)
            box = text.get_window_extent(renderer)  # measured without the leader line, which ends at the point
            text.remove()
            if i == len(SPOTS) or not any(box.overlaps(o) for o in others):
                break
        _text(ax, ", ".join(names), (x, y), *spot, arrow=LEADER if 0 < i < len(SPOTS) else None)
        taken.append(box)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no ok runs with {what}", ha="center", va="center", transform=ax.transAxes)


def _legend(ax) -> None:
    # outside the axes, on the right: with one entry per series it would otherwise cover points
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def accuracy_vs_memory(groups: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    many_models = len({g["model"] for g in groups}) > 1
    on_front = {label: {id(g) for g in front} for label, front in fronts(groups).items()}
    labels, kinds, families = [], set(), set()
    for i, (label, members) in enumerate(series(groups).items()):
        pts = sorted(_located(members, peak_memory), key=lambda p: p[1])
        if not pts:
            continue
        color = COLORS[i % len(COLORS)]
        _scatter(ax, pts, color, families, alpha=0.8, zorder=3)
        ax.plot([], [], c=color, lw=6, label=label)  # the series' colour in the legend
        front = [(x, y) for g, x, y in pts if id(g) in on_front[label]]
        ax.plot(*zip(*front), c=color, ls="--", lw=1, zorder=2)
        ax.scatter(*zip(*front), s=140, facecolors="none", edgecolors=color, lw=1.5, zorder=4)
        labels += [(_point_label(g, many_models), x, y) for g, x, y in pts]
        kinds |= {g["mem_kind"] for g, _, _ in pts if g["mem_kind"]}
    _annotate(ax, labels)
    ax.set_xlabel(f"peak memory, train or eval (GiB; {' / '.join(sorted(kinds)) or 'n/a'})")
    ax.set_ylabel("accuracy, average (%)")
    ax.set_title("Accuracy vs peak memory (higher and further left is better)")
    if labels:
        # one legend entry for every series' front (ringed points, dashed line), not one per series
        ax.scatter([], [], s=140, facecolors="none", edgecolors="grey", lw=1.5, label="Pareto front of its series")
        _family_legend(ax, families)
        _legend(ax)
        ax.grid(alpha=0.3)
    else:
        _empty(ax, "accuracy and memory")
    return _png(fig)


def accuracy_vs_params(groups: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    many_models = len({g["model"] for g in groups}) > 1
    labels, plotted, families = [], False, set()
    for i, (label, members) in enumerate(series(groups).items()):  # same order, so same colours, as above
        color = COLORS[i % len(COLORS)]
        pts = _located(members, lambda g: g["trainable"][0] or 0)
        trained = [p for p in pts if p[1]]  # a log axis has no 0: the base model is a line instead
        if trained:
            _scatter(ax, trained, color, families, zorder=3)
            ax.plot([], [], c=color, lw=6, label=label)
            labels += [(_point_label(g, many_models), x, y) for g, x, y in trained]
        for g, _, y in (p for p in pts if not p[1]):
            ax.axhline(y, color=color, ls=":", lw=1, label=f"{label}: {_point_label(g, many_models)} (0 trainable)")
        plotted = plotted or bool(pts)
    ax.set_xscale("log")  # before the labels are placed: their screen positions depend on it
    _annotate(ax, labels)
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("accuracy, average (%)")
    ax.set_title("Accuracy vs trainable parameters")
    if plotted:
        _family_legend(ax, families)
        _legend(ax)
        ax.grid(alpha=0.3, which="both")
    else:
        _empty(ax, "accuracy")
    return _png(fig)
