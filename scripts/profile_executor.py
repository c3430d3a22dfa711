"""Profile the executor's decode steps (torch.profiler), to see where a step's time goes.

python scripts/profile_executor.py --branches 16 --doc-tokens 512 --answer-tokens 16
"""

from __future__ import annotations

import argparse

import torch

from models.executor import ParallelExecutor, SamplingConfig
from models.executor.benchmark import Workload, make_prompts
from models.weights.registry import DEFAULT_DECOMPOSER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_DECOMPOSER)
    parser.add_argument("--branches", type=int, default=16)
    parser.add_argument("--doc-tokens", type=int, default=512)
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    from models.weights import load_causal_lm

    tok, model = load_causal_lm(args.model, "float32")
    groups, _ = make_prompts(tok, Workload("p", args.doc_tokens, args.branches, args.answer_tokens))
    cfg = SamplingConfig(max_new_tokens=args.answer_tokens)
    ParallelExecutor(model).run(groups[0], SamplingConfig(max_new_tokens=2))  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        ex = ParallelExecutor(model)
        ex.run(groups[0], cfg)
    s = ex.stats
    print(
        f"prefill {s.prefill_seconds:.2f} s, {s.decode_steps} decode steps in {s.decode_seconds:.2f} s "
        f"= {1000 * s.decode_seconds / max(1, s.decode_steps):.0f} ms/step for {args.branches} branches"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
