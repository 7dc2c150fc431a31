"""Accuracy vs peak memory (with the Pareto front) and accuracy vs trainable parameters, as PNG bytes.

Points are seed-aggregated groups; the accuracy is the paper's average when every set it needs
was evaluated, else the all-sets average. Accuracies of different task families are not
comparable, so each family has its own colour, marker and Pareto front.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and no GUI backend is ever picked up
import matplotlib.pyplot as plt  # noqa: E402

STYLES = [("tab:blue", "o"), ("tab:orange", "s"), ("tab:green", "^"), ("tab:red", "D"), ("tab:purple", "v")]


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


def _label(g: dict, many_models: bool, ambiguous: bool) -> str:
    label = g["method"]
    if ambiguous:  # several groups of one (model, method, task): say which
        extra = [g["scoring"]] + ([f"first {g['eval_limit']}"] if g["eval_limit"] else []) + (
            [g["variant"]] if g["variant"] else [])
        label += f" ({', '.join(extra)})"
    return f"{g['model']}/{label}" if many_models else label


def _labels(groups: list[dict]) -> list[str]:
    many_models = len({g["model"] for g in groups}) > 1
    count: dict[tuple, int] = {}
    for g in groups:
        count[(g["model"], g["method"], g["task"])] = count.get((g["model"], g["method"], g["task"]), 0) + 1
    return [_label(g, many_models, count[(g["model"], g["method"], g["task"])] > 1) for g in groups]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no ok runs with {what}", ha="center", va="center", transform=ax.transAxes)


def accuracy_vs_memory(groups: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = _labels(groups)
    pts = [(g, lab, peak_memory(g), accuracy_of(g)) for g, lab in zip(groups, labels)]
    pts = [p for p in pts if p[2] is not None and p[3] is not None]
    families = sorted({g["task"] for g, *_ in pts})
    for (color, marker), fam in zip(STYLES * 3, families):
        mine = [p for p in pts if p[0]["task"] == fam]
        xs, ys = [p[2] for p in mine], [p[3] for p in mine]
        ax.scatter(xs, ys, c=color, marker=marker, label=fam, alpha=0.8, zorder=3)
        front = pareto_front(list(zip(xs, ys)))
        ax.plot([xs[i] for i in front], [ys[i] for i in front], c=color, ls="--", lw=1, zorder=2)
        ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=140, facecolors="none", edgecolors=color,
                   lw=1.5, zorder=4, label=f"{fam}: Pareto front")
        for _, lab, x, y in mine:
            ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    kinds = sorted({g["mem_kind"] for g, *_ in pts if g["mem_kind"]})
    ax.set_xlabel(f"peak memory, train or eval (GiB; {' / '.join(kinds) or 'n/a'})")
    ax.set_ylabel("accuracy, average (%)")
    ax.set_title("Accuracy vs peak memory (higher and further left is better)")
    if pts:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    else:
        _empty(ax, "accuracy and memory")
    return _png(fig)


def accuracy_vs_params(groups: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = _labels(groups)
    pts = [(g, lab, g["trainable"][0], accuracy_of(g)) for g, lab in zip(groups, labels)]
    families = sorted({g["task"] for g, _, _, acc in pts if acc is not None})
    plotted = False
    for (color, marker), fam in zip(STYLES * 3, families):
        mine = [p for p in pts if p[0]["task"] == fam and p[3] is not None]
        trained = [p for p in mine if p[2]]  # a log axis has no 0: the base model is a line instead
        if trained:
            ax.scatter([p[2] for p in trained], [p[3] for p in trained], c=color, marker=marker, label=fam, zorder=3)
            for _, lab, x, y in trained:
                ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            plotted = True
        for _, lab, _, y in (p for p in mine if not p[2]):
            ax.axhline(y, color=color, ls=":", lw=1, label=f"{fam}: {lab} (0 trainable)")
            plotted = True
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("accuracy, average (%)")
    ax.set_title("Accuracy vs trainable parameters")
    if plotted:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    else:
        _empty(ax, "accuracy")
    return _png(fig)
