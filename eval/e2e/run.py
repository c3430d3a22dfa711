"""End-to-end evaluation: the W2 workload of docs/DESIGN.md, fully local.

    python -m eval.e2e --config configs/eval/cpu-test.yaml            # every stage, resumable
    python -m eval.e2e --config configs/eval/cpu-test.yaml --stage report

Stages (each checkpoints per prompt under `work_dir`; a rerun skips what is done):

1. ``decompose``: every decomposer of the config (gold = the oracle, rules, the base
   model, the LoRA adapter, ...) decomposes the whole split in batches (decomposition
   quality, `eval.decomposer.metrics`), and the end-to-end subset one prompt at a time (its
   latency, counted in the speedup).
2. ``answers``: on each answer engine (the masked-attention executor, vLLM batch), the answer
   model runs each subset prompt serially (the prompt as is), and each distinct
   decomposition's sub-prompts in parallel, with the same system prompt.
3. ``judge``: a local judge compares the serial answer with the reassembled parallel one,
   in both orders (`eval.e2e.judge`).
4. ``report``: figures, tables and plots in `<report_dir>/<date>-<name>/` (`eval.e2e.report`).

The subset (`limit` prompts) is stratified over the gold categories (not parallelizable
included), with a fixed seed, so every category is represented.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
from collections import defaultdict
from typing import Any

from data_prep.config import ConfigError
from data_prep.jsonl_io import append_jsonl, sidecar
from data_prep.schema import Record
from data_prep.splits import load_split
from eval.config import DecomposerSpec, E2EConfig, load_e2e_config
from eval.e2e.reference import ReferenceError, load_references
from eval.e2e.workdir import (
    Workdir,
    answer_pair,
    control_pairs,
    gold_group,
    pair_key,
    parallel_run,
    record_key,
    rows_by,
    runs_parallel,
)

STAGES = ("decompose", "answers", "judge", "report")
WARMUP_PROMPT = "Say hello."


def load_gold(cfg: E2EConfig) -> list[Record]:
    """The gold records: the reference set's when the config names one, else the split's."""
    return [r.record for r in load_references(cfg.references)] if cfg.references else load_split(cfg.split)


def select_subset(gold: list[Record], limit: int | None, seed: int) -> list[Record]:
    """`limit` records taken round-robin over the gold categories (shuffled with `seed`)."""
    if limit is None or limit >= len(gold):
        return list(gold)
    rng = random.Random(seed)
    groups: dict[str, list[Record]] = defaultdict(list)
    for rec in gold:
        groups[gold_group(rec)].append(rec)
    queues = [rng.sample(v, len(v)) for _, v in sorted(groups.items())]
    picked: list[Record] = []
    while len(picked) < limit:
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop())
    return picked


def _release() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ---------------------------------------------------------------- decompose
def make_decomposer(spec: DecomposerSpec):
    from models.decomposer import load_decomposer

    options: dict[str, Any] = {"max_new_tokens": spec.max_new_tokens}
    if spec.backend != "rules":
        options.update(model=spec.model, adapter=spec.adapter, gate=spec.gate, threshold=spec.threshold)
        if not spec.adapter:
            options["fmt"] = spec.fmt or "json-v2"  # an untrained model gets the verbatim contract
    if spec.backend == "openai":
        options["base_url"] = spec.base_url
    return load_decomposer(spec.backend, **options)


def stage_decompose(cfg: E2EConfig, gold: list[Record], subset: list[Record], work: Workdir) -> None:
    from models.decomposer.batch import run_file

    everything = [(r.id, r.prompt) for r in gold]
    sample = [(r.id, r.prompt) for r in subset]
    for spec in cfg.decomposers:
        if spec.backend == "gold":
            continue
        quality, latency = work.decompositions("quality", spec.name), work.decompositions("latency", spec.name)
        todo_q = {r for r, _ in everything} - set(rows_by(quality))
        todo_l = {r for r, _ in sample} - set(rows_by(latency))
        if not todo_q and not todo_l:
            continue
        print(f"[decompose] {spec.name}: {len(todo_q)} (quality) + {len(todo_l)} (latency) prompts", file=sys.stderr)
        decomposer = make_decomposer(spec)
        run_file(decomposer, everything, quality, cfg.quality_batch_size)
        run_file(decomposer, sample, latency, 1)  # one prompt at a time: the latency a user sees
        del decomposer
        _release()


def load_decompositions(
    cfg: E2EConfig, subset: list[Record], work: Workdir
) -> dict[str, dict[str, tuple[Record, float]]]:
    """{decomposer: {id: (record, decomposer seconds)}} over the subset."""
    out: dict[str, dict[str, tuple[Record, float]]] = {}
    for spec in cfg.decomposers:
        if spec.backend == "gold":
            out[spec.name] = {r.id: (r, 0.0) for r in subset}
            continue
        path = work.decompositions("latency", spec.name)
        recs, meta = rows_by(path), rows_by(sidecar(path, "meta"))
        missing = [r.id for r in subset if r.id not in recs]
        if missing:
            raise ConfigError(f"{spec.name}: {len(missing)} subset prompts not decomposed yet: run --stage decompose")
        out[spec.name] = {r.id: (Record.model_validate(recs[r.id]), float(meta[r.id]["seconds"])) for r in subset}
    return out


# ---------------------------------------------------------------- answers
def parallel_jobs(cfg: E2EConfig, decomps: dict[str, dict[str, tuple[Record, float]]]) -> dict[str, Record]:
    """One run per distinct set of sub-prompts (systems that agree share it)."""
    jobs: dict[str, Record] = {}
    for per_prompt in decomps.values():
        for rec, _ in per_prompt.values():
            if runs_parallel(rec, cfg):
                jobs.setdefault(record_key(rec), rec)
    return jobs


def stage_answers(cfg: E2EConfig, subset: list[Record], decomps, work: Workdir) -> None:
    from tqdm.auto import tqdm

    from models.pipeline.answer import load_answerer

    jobs = parallel_jobs(cfg, decomps)
    for engine in cfg.engines:
        serial_path, parallel_path = work.serial(engine), work.parallel(engine)
        serial_path.parent.mkdir(parents=True, exist_ok=True)
        done_serial, done_parallel = rows_by(serial_path), rows_by(parallel_path, "key")
        todo_serial = [r for r in subset if r.id not in done_serial]
        todo_parallel = {k: r for k, r in jobs.items() if k not in done_parallel}
        if not todo_serial and not todo_parallel:
            continue
        answerer = load_answerer(engine, cfg.answer)
        answerer.serial(WARMUP_PROMPT)  # first-call costs (allocations, graph setup) stay out of the timings
        total = len(todo_serial) + len(todo_parallel)
        with tqdm(total=total, desc=f"answers ({engine})", unit="run") as bar:
            for rec in todo_serial:
                append_jsonl(serial_path, [{"id": rec.id, **answerer.serial(rec.prompt).to_json()}])
                bar.update()
            for key, rec in todo_parallel.items():
                run = answerer.run_record(rec)
                row = {"key": key, "branches": len(run.texts), "sampled": rec.n is not None, **run.to_json()}
                append_jsonl(parallel_path, [row])
                bar.update()
        del answerer
        _release()


def load_answers(cfg: E2EConfig, work: Workdir) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    return {b: (rows_by(work.serial(b)), rows_by(work.parallel(b), "key")) for b in cfg.engines}


# ---------------------------------------------------------------- judge
def judge_pairs(cfg: E2EConfig, subset: list[Record], decomps, answers) -> dict[str, tuple[str, str, str]]:
    """{pair key: (prompt, serial answer, reassembled parallel answer)} needing a verdict."""
    serial, parallel = answers[cfg.judge.answers_from]
    pairs = {}
    for per_prompt in decomps.values():
        for rec in subset:
            pred, _ = per_prompt[rec.id]
            run = parallel_run(cfg, pred, parallel)
            if run is None or rec.id not in serial:
                continue
            s_text, p_text, same = answer_pair(pred, serial[rec.id], run)
            if not same:
                pairs[pair_key(rec.prompt, s_text, p_text)] = (rec.prompt, s_text, p_text)
    return pairs


def stage_judge(cfg: E2EConfig, subset: list[Record], decomps, work: Workdir) -> None:
    from tqdm.auto import tqdm

    from eval.e2e.judge import Judge

    answers = load_answers(cfg, work)
    pairs = {**judge_pairs(cfg, subset, decomps, answers), **control_pairs(cfg, subset, answers)}
    todo = {k: v for k, v in pairs.items() if k not in rows_by(work.judge, "key")}
    if not todo:
        return
    judge = Judge(cfg.judge)
    for key, (prompt, s_text, p_text) in tqdm(todo.items(), desc="judge", unit="pair"):
        append_jsonl(work.judge, [{"key": key, **judge.compare(prompt, s_text, p_text)}])
    del judge
    _release()


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/eval/<name>.yaml")
    parser.add_argument("--stage", choices=("all", *STAGES), default="all")
    parser.add_argument("--limit", type=int, help="override the config's limit")
    args = parser.parse_args(argv)
    try:
        cfg = load_e2e_config(args.config, {"limit": args.limit} if args.limit else None)
        gold = load_gold(cfg)
    except (ConfigError, ReferenceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from models.decomposer import DecomposerError, PromptError

    subset = select_subset(gold, cfg.limit, cfg.seed)
    work = Workdir(cfg.work_dir)
    work.root.mkdir(parents=True, exist_ok=True)
    stages = STAGES if args.stage == "all" else (args.stage,)
    try:
        if "decompose" in stages:
            stage_decompose(cfg, gold, subset, work)
        decomps = load_decompositions(cfg, subset, work)
        if "answers" in stages:
            stage_answers(cfg, subset, decomps, work)
        if "judge" in stages and cfg.judge is not None:
            stage_judge(cfg, subset, decomps, work)
        if "report" in stages:
            from eval.e2e.report import build_results, write_report

            results = build_results(cfg, gold, subset, decomps, load_answers(cfg, work), work, args.config)
            out = write_report(results, cfg)
            print(f"report: {out / 'report.md'}", file=sys.stderr)
    except (ConfigError, PromptError, DecomposerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
