"""Loss curves from a Trainer's log history, as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_loss_curves(log_history: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    gate = [e for e in log_history if "eval_gate_f1" in e and "step" in e]
    fig, axes = plt.subplots(1, 2 if gate else 1, figsize=(12 if gate else 7, 4), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#4C72B0")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss (validation)", color="#DD8452")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_title(title or "SFT loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if gate:  # the detector's learning curve on the validation split
        gx = axes[0][1]
        steps = [e["step"] for e in gate]
        for key, label, style in (
            ("eval_gate_f1", "F1 (threshold 0.5)", "o-"),
            ("eval_gate_precision", "precision (0.5)", "s--"),
            ("eval_gate_recall", "recall (0.5)", "^--"),
            ("eval_gate_ap", "average precision", "d-"),
            ("eval_gate_recall_at_target", "recall at precision 0.95", "x:"),
        ):
            gx.plot(steps, [e.get(key, float("nan")) for e in gate], style, label=label)
        gx.set_xlabel("optimizer step")
        gx.set_ylabel("validation, parallelizable")
        gx.set_ylim(0, 1.02)
        gx.set_title("decision gate on the validation split")
        gx.grid(alpha=0.3)
        gx.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
