"""The end-to-end evaluation's figures, apart from their rendering (`eval.e2e.report`).

Definitions (per prompt, on one answer engine):
- pipeline time = decomposer time + (parallel run if the decomposer split the prompt,
  else the serial run): a prompt the decomposer calls serial costs the decomposer's time;
- raw speedup = serial time / pipeline time;
- normalised speedup = (serial time / serial output tokens) / (pipeline time / parallel
  output tokens), ParallelPrompt's definition, with the decomposer's time counted;
- execution speedup = serial time / parallel run time, on split prompts only;
- throughput ratio (the scaling plot) = parallel output tokens/s / serial output tokens/s;
- judged: "same" when the pipeline's answer is the serial one (not split, or identical
  text), else the judge's verdict for the parallel answer (win / tie / loss, both orders);
  retention = (win + tie + same) / prompts; agreement = judged pairs whose two orders
  raw picks agree / judged pairs; "A" rate = raw picks of the first position / picks
  (0.5 for an unbiased judge); the verdict itself averages both orders' probabilities;
  preference = mean of P(parallel better) - P(serial better) over judged pairs;
- a decomposition with more sub-prompts than `answer.max_branches` runs serially (counted
  in "split/prompts" as not split, and as over the limit in results.json);
- cut: answers that hit the token budget (serial_max_new_tokens / branch_max_new_tokens).
Groups average speedups geometrically; "total" is the ratio of summed times.
"""

from __future__ import annotations

import math
from typing import Any

from data_prep.schema import Record
from eval.config import E2EConfig
from eval.e2e.workdir import answer_pair, gold_group, pair_key, parallel_run, runs_parallel


def geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return round(math.exp(sum(map(math.log, xs)) / len(xs)), 3) if xs else None


def timing(serial_s: float, serial_tokens: int, decomposer_s: float, run: dict[str, Any] | None) -> dict[str, Any]:
    """One prompt's times and speedups. The pipeline's time is the decomposer's plus the
    parallel run's (or the serial answer's, when it does not split).

    - speedup_raw: serial seconds / pipeline seconds;
    - speedup_norm: the same per generated token (serial s/token over pipeline s/token), so
      that answers of different lengths compare;
    - speedup_exec: serial seconds / the parallel run's seconds (no decomposer), split only;
    - throughput_ratio: the parallel run's tokens/s over the serial answer's, split only.
    """
    exec_s, out_tokens = (run["seconds"], sum(run["tokens"])) if run else (serial_s, serial_tokens)
    pipeline_s = decomposer_s + exec_s
    return {
        "decomposer_s": round(decomposer_s, 3),
        "serial_s": serial_s,
        "serial_tokens": serial_tokens,
        "parallel_s": run["seconds"] if run else None,
        "parallel_tokens": out_tokens if run else None,
        "pipeline_s": round(pipeline_s, 3),
        "speedup_raw": round(serial_s / pipeline_s, 3),
        "speedup_norm": round((serial_s / serial_tokens) / (pipeline_s / out_tokens), 3),
        "speedup_exec": round(serial_s / run["seconds"], 3) if run else None,
        "throughput_ratio": round((out_tokens / run["seconds"]) / (serial_tokens / serial_s), 3) if run else None,
    }


def prompt_rows(cfg: E2EConfig, subset: list[Record], decomps, answers, verdicts) -> list[dict[str, Any]]:
    rows = []
    for name, per_prompt in decomps.items():
        for engine, (serial, parallel) in answers.items():
            for rec in subset:
                pred, dec_s = per_prompt[rec.id]
                s = serial.get(rec.id)
                fits = runs_parallel(pred, cfg)
                run = parallel_run(cfg, pred, parallel)
                if s is None or (fits and run is None):
                    continue  # not run yet
                serial_s, serial_tok = s["seconds"], s["tokens"][0]
                row = {
                    "decomposer": name,
                    "engine": engine,
                    "id": rec.id,
                    "language": rec.language,
                    "category": gold_group(rec),
                    "split": bool(run),
                    "over_branch_limit": pred.parallelizable and not fits,
                    "branches": len(run["texts"]) if run else 1,
                    **timing(serial_s, serial_tok, dec_s, run),
                    "serial_cut": serial_tok >= cfg.answer.serial_max_new_tokens,
                    "branch_cut": bool(run) and max(run["tokens"]) >= cfg.answer.branch_max_new_tokens,
                    "verdict": None,
                    "agree": None,
                }
                if cfg.judge is not None and engine == cfg.judge.answers_from:
                    s_text, p_text, same = answer_pair(pred, s, run)
                    if same:
                        row["verdict"] = "same"
                    elif (v := verdicts.get(pair_key(rec.prompt, s_text, p_text))) is not None:
                        row["verdict"], row["agree"], row["picks_a"] = v["verdict"], v["agree"], v["picks"].count("A")
                        row["preference"] = round(v["p_win"] - v["p_loss"], 4)
                rows.append(row)
    return rows


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    split = [r for r in rows if r["split"]]
    verdicts = [r["verdict"] for r in rows if r["verdict"] is not None]
    judged = [r for r in rows if r["agree"] is not None]
    counts = {v: verdicts.count(v) for v in ("win", "tie", "loss", "same")}
    return {
        "prompts": len(rows),
        "split": len(split),
        "speedup_raw": geomean([r["speedup_raw"] for r in rows]),
        "speedup_norm": geomean([r["speedup_norm"] for r in rows]),
        "speedup_raw_split": geomean([r["speedup_raw"] for r in split]),
        "speedup_exec_split": geomean([r["speedup_exec"] for r in split]),
        "speedup_total": round(sum(r["serial_s"] for r in rows) / sum(r["pipeline_s"] for r in rows), 3)
        if rows
        else None,
        "over_branch_limit": sum(r["over_branch_limit"] for r in rows),
        "serial_cut": sum(r["serial_cut"] for r in rows),
        "branch_cut": sum(r["branch_cut"] for r in rows),
        "decomposer_s_mean": round(sum(r["decomposer_s"] for r in rows) / len(rows), 3) if rows else None,
        **counts,
        "with_verdict": len(verdicts),
        "retention": round((counts["win"] + counts["tie"] + counts["same"]) / len(verdicts), 3) if verdicts else None,
        "judged": len(judged),
        "agreement": round(sum(r["agree"] for r in judged) / len(judged), 3) if judged else None,
        "preference": round(sum(r["preference"] for r in judged) / len(judged), 4) if judged else None,
        "picks_a": round(sum(r["picks_a"] for r in judged) / (2 * len(judged)), 3) if judged else None,
    }
