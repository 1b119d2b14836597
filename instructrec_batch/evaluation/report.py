"""The evaluation report: markdown tables (figures, 95% intervals, the paired comparison) and a PNG
bar chart of every metric by method with its interval."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from instructrec_batch.evaluation.intervals import difference_rows, plain_rows, significant
from instructrec_batch.ranking.metrics import METHOD, METRICS, Metric

REPORT_FILE = "report.md"
CHART_FILE = "metrics.png"


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    chart: Path


def wide_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per method, one column per metric label (HR@1 ... MRR) plus n_users, in METRICS order."""
    metrics = plain_rows(metrics)
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


KEY_METRICS = (Metric("HR", 1), Metric("NDCG", 10), Metric("MRR", None))


def _label(row: pd.Series) -> str:
    return Metric(row["metric"], None if pd.isna(row["k"]) else int(row["k"])).label


def interval_table(metrics: pd.DataFrame) -> str:
    """HR@1, NDCG@10 and MRR with 95% bootstrap intervals per method, and the paired difference of the
    best language-model method against the best non-LLM method (when both were evaluated)."""
    if "ci_low" not in metrics:
        return ""
    plain = plain_rows(metrics).assign(label=lambda f: f.apply(_label, axis=1))
    order = wide_table(metrics).index
    keys = [m.label for m in KEY_METRICS]
    lines = ["| method (95% interval) | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for method in order:
        cells = []
        for label in keys:
            row = plain[(plain[METHOD] == method) & (plain["label"] == label)].iloc[0]
            cells.append(f"{row['value']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    diffs = difference_rows(metrics)
    if not diffs.empty:
        diffs = diffs.assign(label=lambda f: f.apply(_label, axis=1))
        first = diffs.iloc[0]
        lines += ["", f"Paired difference {first[METHOD]} − {first['versus']} on the same {first['n_users']} users:"]
        for label in keys:
            row = diffs[diffs["label"] == label].iloc[0]
            verdict = "significant" if significant(row["ci_low"], row["ci_high"]) else "not significant"
            lines.append(
                f"- {label}: {row['value']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] ({verdict} at 95%)"
            )
    return "\n".join(lines)


def _chart(wide: pd.DataFrame, path: Path, title: str, metrics: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m.label for m in METRICS]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharey=False)
    colors = plt.get_cmap("tab10").colors
    methods = list(wide.index)
    plain = plain_rows(metrics).assign(label=lambda f: f.apply(_label, axis=1)).set_index([METHOD, "label"])
    for ax, label in zip(axes.flat, labels, strict=True):
        values = wide[label].to_numpy()
        errors = None
        if "ci_low" in plain:
            low = [values[i] - plain.loc[(m, label), "ci_low"] for i, m in enumerate(methods)]
            high = [plain.loc[(m, label), "ci_high"] - values[i] for i, m in enumerate(methods)]
            errors = [low, high]
        ax.bar(
            range(len(methods)),
            values,
            yerr=errors,
            capsize=3,
            color=[colors[i % len(colors)] for i in range(len(methods))],
        )
        ax.set_title(label)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, min(1.05, max(1e-9, float(values.max())) * 1.25))
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
    _chart(
        wide, chart, f"Ranking metrics by method (95% bootstrap intervals) — run {context.get('run_id', '?')}", metrics
    )
    lines = ["# Evaluation report", ""]
    lines += [f"- **{key}**: {value}" for key, value in context.items()]
    lines += [
        "",
        "Each user's list is the held-out target plus sampled negatives; every method ranks the same "
        "lists, ties broken by item_id. HR@k and NDCG@k use the target's rank; MRR is over the whole list. "
        "Intervals are 95% bootstrap intervals over users; the paired difference resamples the same users "
        "for both methods.",
        "",
        markdown_table(wide),
        "",
        interval_table(metrics),
        "",
        f"![metrics by method]({CHART_FILE})",
        "",
    ]
    markdown = folder / REPORT_FILE
    markdown.write_text("\n".join(lines))
    return ReportPaths(markdown, chart)
