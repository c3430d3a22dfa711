"""The data summary as a picture: counts per language and per category, stacked by split."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_summary(summary: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(summary["split_sizes"])
    colors = {"train": "#4C72B0", "validation": "#DD8452", "test": "#55A868"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, title in (
        (axes[0], "by_language", "Records by language"),
        (axes[1], "by_category", "Records by category"),
    ):
        table = summary[key]
        names = sorted(table, key=lambda n: sum(table[n].values()))
        left = [0] * len(names)
        for split in splits:
            values = [table[n].get(split, 0) for n in names]
            ax.barh(names, values, left=left, label=split, color=colors.get(split))
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_title(title)
        ax.set_xlabel("records")
    axes[0].legend(loc="lower right")
    fig.suptitle(f"Data set `{summary['config']}`: " + ", ".join(f"{s} {n}" for s, n in summary["split_sizes"].items()))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
