"""Label prompts with a teacher model: Claude (Anthropic API) or any OpenAI-compatible
server (e.g. a larger local model under `vllm serve`), safely and resumably.

    python -m data_prep.label --teacher openai --model qwen2.5-coder-1.5b-instruct \\
        --base-url http://127.0.0.1:8000/v1 --input prompts.jsonl --output labelled.jsonl
    python -m data_prep.label --teacher anthropic --model claude-sonnet-4-5 \\
        --input lmsys/lmsys-chat-1m --limit 500 --output labelled.jsonl   # online users

Input: JSONL / JSON / CSV / parquet files with a prompt column (or a `conversation`
column, whose first user turn is the prompt), or the Hub datasets LMSYS-Chat-1M and
WildChat-1M (first user turns, streamed with `datasets`). Duplicate prompts are labelled
once. Each label is validated with the schema module; a broken one is sent back to the
teacher with the reason (bounded attempts); a positive label without an explicit or soft
cue in the prompt is rejected by the confidence post-check.

Outputs, all append-only and fsynced per prompt, so a crash loses nothing and a rerun
resumes without duplicates: OUT.jsonl (schema records), OUT.rejected.jsonl (prompt, reason,
last answer), OUT.meta.jsonl (tier, attempts, retries, tokens, cost per prompt), and
OUT.summary.json (written atomically at the end, over all runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.dedup import find_duplicates, normalize_prompt
from data_prep.formatting import parse_completion
from data_prep.jsonl_io import append_jsonl, atomic_write_text, done_ids, read_jsonl_repairing, sidecar
from data_prep.langid import detect_record_language
from data_prep.schema import Record, errors, parse_record
from data_prep.teacher_prompt import confidence, select_few_shot, teacher_messages
from data_prep.teachers import PermanentError, TransientError, cost_usd, make_teacher

HUB_SOURCES = {"lmsys/lmsys-chat-1m": "conversation", "allenai/WildChat-1M": "conversation"}
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class LabelInputError(ValueError):
    pass


def _first_user_turn(conversation: Any) -> str | None:
    for turn in conversation or []:
        if isinstance(turn, dict) and turn.get("role") in ("user", "human"):
            return turn.get("content")
    return None


def read_prompts(source: str, limit: int | None = None, prompt_column: str = "prompt") -> list[tuple[str, str]]:
    """(id, prompt) pairs from a file or a Hub chat dataset, through `datasets`."""
    import datasets

    path = Path(source)
    if source in HUB_SOURCES:
        ds = datasets.load_dataset(source, split="train", streaming=True)
        rows = (row for row in ds)
    elif path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise LabelInputError(f"{source}: unsupported file type (use {', '.join(FILE_BUILDERS)})")
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as err:  # datasets raises many types for a malformed file
            raise LabelInputError(f"{source}: cannot be read as {builder}: {err}") from None
        columns = set(ds.column_names or [])
        if prompt_column not in columns and "conversation" not in columns:
            raise LabelInputError(f"{source}: no {prompt_column!r} or 'conversation' column (has {sorted(columns)})")
        rows = iter(ds)
    else:
        raise LabelInputError(f"input not found: {source} (a file, or one of {', '.join(HUB_SOURCES)})")
    out: list[tuple[str, str]] = []
    for row in rows:
        if limit is not None and len(out) >= limit:
            break
        prompt = row.get(prompt_column) if prompt_column in row else _first_user_turn(row.get("conversation"))
        if not isinstance(prompt, str) or not prompt.strip():
            continue
        rid = row.get("id") or row.get("conversation_id") or row.get("conversation_hash")
        out.append((str(rid) if rid else f"p-{hashlib.sha1(prompt.encode()).hexdigest()[:12]}", prompt))
    return out


def dedup_prompts(items: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """The first of each group of prompts equal up to case and white space (the data
    pipeline's exact-duplicate rule)."""
    dropped = find_duplicates([p for _, p in items], near_threshold=1.0)
    return [item for i, item in enumerate(items) if i not in dropped], len(dropped)


class RateLimiter:
    """At most `per_minute` request starts per minute, spaced evenly, across threads."""

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.lock = threading.Lock()
        self.next_at = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
        time.sleep(max(0.0, start - now))


@dataclass
class Outcome:
    id: str
    prompt: str
    record: Record | None = None
    reason: str | None = None
    tier: str | None = None
    raw: str = ""
    attempts: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    failed: bool = False  # the teacher stayed unavailable: not done, a rerun tries again

    @property
    def status(self) -> str:
        return "labelled" if self.record else "failed" if self.failed else "rejected"


@dataclass
class Labeller:
    teacher: Any
    shots: list[Record]
    source_name: str
    max_attempts: int = 3  # answers per prompt (the first + corrections after validation errors)
    max_retries: int = 6  # transport retries per request (429 / 5xx / timeouts)
    backoff: float = 1.0
    max_backoff: float = 60.0
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(None))
    sleep: Any = time.sleep

    def _request(self, messages, outcome: Outcome):
        for attempt in range(self.max_retries + 1):
            self.limiter.wait()
            try:
                return self.teacher.complete(messages)
            except TransientError as err:
                if attempt == self.max_retries:
                    raise
                outcome.retries += 1
                delay = err.retry_after or min(self.max_backoff, self.backoff * 2**attempt)
                self.sleep(delay * (1.0 + 0.1 * random.random()))
        raise AssertionError("unreachable")

    def label(self, rid: str, prompt: str) -> Outcome:
        outcome = Outcome(rid, prompt)
        feedback = None
        for _ in range(self.max_attempts):
            outcome.attempts += 1
            try:
                reply = self._request(teacher_messages(prompt, self.shots, feedback), outcome)
            except TransientError as err:
                outcome.reason = f"teacher unavailable after {self.max_retries} retries: {err}"
                outcome.failed = True
                return outcome
            outcome.input_tokens += reply.input_tokens
            outcome.output_tokens += reply.output_tokens
            outcome.raw = reply.text
            problem, rec = self.validate(rid, prompt, reply.text)
            if rec is not None:
                tier, why = confidence(prompt, rec.model_dump())
                outcome.tier, outcome.reason = tier, None
                if tier == "reject":
                    outcome.reason = f"confidence: {why}"
                else:
                    outcome.record = rec
                return outcome
            outcome.reason = f"invalid after {outcome.attempts} attempt(s): {problem}"
            feedback = (reply.text, problem)
        return outcome

    def validate(self, rid: str, prompt: str, text: str) -> tuple[str | None, Record | None]:
        try:
            fields = parse_completion(text)  # verbatim labels: no anchors
        except ValueError as err:
            return str(err), None
        language = detect_record_language({"prompt": prompt, **fields})
        rec, violations = parse_record(
            {"id": rid, "source": self.source_name, "language": language, "prompt": prompt, **fields}
        )
        errs = errors(violations)
        if rec is None or errs:
            return "; ".join(map(str, errs)), None
        return None, rec


def summarize(output: Path, model: str, prices: tuple[float, float] | None) -> dict[str, Any]:
    """Totals over every run that wrote into `output` (the meta ledger, last line per id)."""
    meta = {row["id"]: row for row in read_jsonl_repairing(sidecar(output, "meta"))}
    rows = list(meta.values())
    labelled = [r for r in rows if r["status"] == "labelled"]
    rejected = [r for r in rows if r["status"] == "rejected"]
    tokens_in = sum(r["input_tokens"] for r in rows)
    tokens_out = sum(r["output_tokens"] for r in rows)
    return {
        "model": model,
        "prompts": len(rows),
        "labelled": len(labelled),
        "positives": sum(r["parallelizable"] for r in labelled),
        "rejected": len(rejected),
        "rejected_by_reason": dict(Counter(r["reason"].split(":")[0] for r in rejected).most_common()),
        "failed_not_done": sum(r["status"] == "failed" for r in rows),
        "tiers": dict(Counter(r["tier"] for r in labelled)),
        "attempts": sum(r["attempts"] for r in rows),
        "transport_retries": sum(r["retries"] for r in rows),
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": round(cost_usd(model, tokens_in, tokens_out, prices), 4),
    }


def run(
    labeller: Labeller,
    items: list[tuple[str, str]],
    output: Path,
    concurrency: int = 4,
    prices: tuple[float, float] | None = None,
) -> dict[str, Any]:
    output.parent.mkdir(parents=True, exist_ok=True)
    rejected_path, meta_path = sidecar(output, "rejected"), sidecar(output, "meta")
    finished = done_ids(output) | done_ids(rejected_path)
    todo = [(rid, p) for rid, p in items if rid not in finished]
    model = labeller.teacher.model

    def write(o: Outcome) -> None:
        meta = {
            "id": o.id,
            "status": o.status,
            "parallelizable": bool(o.record and o.record.parallelizable),
            "tier": o.tier,
            "reason": o.reason,
            "attempts": o.attempts,
            "retries": o.retries,
            "input_tokens": o.input_tokens,
            "output_tokens": o.output_tokens,
            "cost_usd": round(cost_usd(model, o.input_tokens, o.output_tokens, prices), 6),
        }
        # called from this thread only (as results complete), so the appends never interleave
        append_jsonl(meta_path, [meta])
        if o.record is not None:  # last: the id counts as done once this line is written
            append_jsonl(output, [o.record.model_dump()])
        elif not o.failed:
            append_jsonl(rejected_path, [{"id": o.id, "prompt": o.prompt, "reason": o.reason, "raw": o.raw}])

    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(labeller.label, rid, p) for rid, p in todo]
        order = {fut: i for i, fut in enumerate(futures)}
        pending = set(futures)
        with tqdm(total=len(items), initial=len(items) - len(todo), desc="label", unit="prompt") as bar:
            try:
                while pending:
                    # the labels finished so far, in prompt order, up to a failure among them (a refused
                    # request: bad key, bad model), which stops the run. (as_completed would hand out
                    # already-finished futures in set order: a failure could drop an earlier label.)
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in sorted(done, key=order.__getitem__):
                        write(fut.result())
                        bar.update(1)
            except BaseException:  # stop, keep what is written
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    summary = {"already_done": len(items) - len(todo), **summarize(output, model, prices)}
    atomic_write_text(sidecar(output, "summary").with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", choices=("anthropic", "openai"), required=True)
    parser.add_argument("--model", required=True, help="Claude model id, or the served model name")
    parser.add_argument("--input", required=True, help="JSONL/JSON/CSV/parquet file, or lmsys/lmsys-chat-1m, ...")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--prompt-column", default="prompt")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="openai teacher: server URL")
    parser.add_argument("--few-shot", default="data/raw/labeled/claude_multilingual.jsonl")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests-per-minute", type=float, help="rate limit (default: none)")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--max-retries", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--price-in", type=float, help="USD per million input tokens")
    parser.add_argument("--price-out", type=float, help="USD per million output tokens")
    args = parser.parse_args(argv)
    prices = (args.price_in or 0.0, args.price_out or 0.0) if args.price_in or args.price_out else None
    try:
        items, duplicates = dedup_prompts(read_prompts(args.input, args.limit, args.prompt_column))
        shot_rows = [json.loads(x) for x in Path(args.few_shot).read_text(encoding="utf-8").splitlines() if x.strip()]
        shots = select_few_shot([Record.model_validate(r) for r in shot_rows])
        shot_prompts = {normalize_prompt(s.prompt) for s in shots}
        leaked = [rid for rid, p in items if normalize_prompt(p) in shot_prompts]
        if leaked:  # the teacher would see the answer in its own examples
            items = [(rid, p) for rid, p in items if rid not in leaked]
            print(f"note: skipped {len(leaked)} input prompt(s) that are few-shot examples", file=sys.stderr)
        options: dict[str, Any] = {"max_tokens": args.max_tokens}
        if args.teacher == "openai":
            options["base_url"] = args.base_url
        elif not os.environ.get("ANTHROPIC_API_KEY"):
            raise LabelInputError("ANTHROPIC_API_KEY is not set (or use --teacher openai with a local server)")
        teacher = make_teacher(args.teacher, args.model, **options)
    except (LabelInputError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    labeller = Labeller(
        teacher,
        shots,
        source_name=f"teacher-{args.teacher}:{args.model}",
        max_attempts=args.max_attempts,
        max_retries=args.max_retries,
        limiter=RateLimiter(args.requests_per_minute),
    )
    print(f"{len(items)} prompts ({duplicates} duplicates dropped), {len(shots)} few-shot examples", file=sys.stderr)
    try:
        summary = run(labeller, items, args.output, args.concurrency, prices)
    except PermanentError as err:
        print(f"error: the teacher refused the request: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
