"""The evaluation report: a markdown table and a PNG bar chart of every metric by method."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from instructrec_batch.evaluation.metrics import METHOD, METRICS, Metric

REPORT_FILE = "report.md"
CHART_FILE = "metrics.png"


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    chart: Path


def wide_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per method, one column per metric label (HR@1 ... MRR) plus n_users, in METRICS order."""
    labels = metrics.apply(lambda r: Metric(r["metric"], None if pd.isna(r["k"]) else int(r["k"])).label, axis=1)
    wide = metrics.assign(label=labels).pivot_table(index=METHOD, columns="label", values="value", aggfunc="first")
    wide = wide[[m.label for m in METRICS]]
    users = metrics.groupby(METHOD)["n_users"].max()
    return wide.assign(n_users=users).sort_values(by=METRICS[-1].label, ascending=False)


def markdown_table(wide: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (figures to 4 decimals), without a tabulate dependency."""
    header = ["method", *wide.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in wide.iterrows():
        cells = [str(int(v)) if column == "n_users" else f"{v:.4f}" for column, v in row.items()]
        lines.append("| " + " | ".join([str(method), *cells]) + " |")
    return "\n".join(lines)


def _chart(wide: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m.label for m in METRICS]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharey=False)
    colors = plt.get_cmap("tab10").colors
    methods = list(wide.index)
    for ax, label in zip(axes.flat, labels, strict=True):
        values = wide[label].to_numpy()
        ax.bar(range(len(methods)), values, color=[colors[i % len(colors)] for i in range(len(methods))])
        ax.set_title(label)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, max(1e-9, float(values.max())) * 1.15)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(metrics: pd.DataFrame, folder: Path, context: Mapping[str, str]) -> ReportPaths:
    """Write report.md and metrics.png for one evaluation run into `folder` (replacing older ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    wide = wide_table(metrics)
    chart = folder / CHART_FILE
    _chart(wide, chart, f"Ranking metrics by method — run {context.get('run_id', '?')}")
    lines = ["# Evaluation report", ""]
    lines += [f"- **{key}**: {value}" for key, value in context.items()]
    lines += [
        "",
        "Each user's list is the held-out target plus sampled negatives (DESIGN §8); every method ranks "
        "the same lists, ties broken by item_id. HR@k and NDCG@k use the target's rank; MRR is over the "
        "whole list.",
        "",
        markdown_table(wide),
        "",
        f"![metrics by method]({CHART_FILE})",
        "",
    ]
    markdown = folder / REPORT_FILE
    markdown.write_text("\n".join(lines))
    return ReportPaths(markdown, chart)
