"""The adapter's model card (README.md): base model, data and its sources, config, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _data_summary(dataset_path: str | Path) -> dict[str, Any] | None:
    summary = Path(dataset_path).parent / "summary.json"
    return json.loads(summary.read_text()) if summary.is_file() else None


def render_model_card(
    *,
    repo_id: str | None,
    base_model: str,
    base_model_id: str,
    dataset_path: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    output_format: str | None,
) -> str:
    summary = _data_summary(dataset_path)
    name = repo_id or "parallel-decomposer adapter"
    front = [
        "---",
        "library_name: peft",
        f"base_model: {base_model_id}",
        "license: apache-2.0",
        "pipeline_tag: text-generation",
        "tags: [lora, peft, trl, sft, intra-query-parallelism, parallel-decomposer]",
        "---",
        "",
        f"# {name}",
        "",
        "A LoRA adapter that reads a chatbot prompt, decides whether it holds independent subtasks, and",
        "emits a JSON decomposition (template + shared context + data items, or a count n) following the",
        f"parallel-decomposer schema (output format `{output_format or 'custom system prompt'}`).",
        "",
        "## Base model",
        f"- `{base_model_id}` (loaded here from `{base_model}`)",
        "",
        "## Data",
    ]
    if summary:
        front += [f"- sources: {', '.join(f'{k} ({v})' for k, v in summary['loaded_by_source'].items())}"]
        front += [f"- splits: {', '.join(f'{k} {v}' for k, v in summary['split_sizes'].items())}"]
        front += [f"- languages: {', '.join(sorted(summary['by_language']))}"]
    front += [
        "- Claude-labelled multilingual prompts (parallel-decomposer), and ParallelPrompt (Kolawole et al.,",
        "  NeurIPS 2025 Datasets and Benchmarks, arXiv 2506.18728; prompts from LMSYS-Chat-1M, its terms apply).",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    front += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(metrics.items())]
    front += [
        "",
        "## Training config",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True, default=str),
        "```",
        "",
        "## Use",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"base = AutoModelForCausalLM.from_pretrained({base_model_id!r})",
        f"model = PeftModel.from_pretrained(base, {repo_id or 'ADAPTER_DIR'!r})",
        "```",
        "",
        "With vLLM: `LLM(model=BASE, enable_lora=True)` and `LoRARequest('decomposer', 1, ADAPTER_DIR)`.",
        "",
    ]
    return "\n".join(front)
