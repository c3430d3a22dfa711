"""Load and fault test of the gateway on loopback: test-split prompts through the gateway
and straight to the answer server, side by side, at several concurrencies and mixes.

    python -m eval.gateway.load --config configs/gateway/cpu.yaml --out artifacts/bench/gateway \\
        [--requests 64] [--concurrency 8 --concurrency 16] [--max-tokens 32] \\
        [--fault-config configs/gateway/cpu-split.yaml]

Starts what the config's `launch:` lists and the gateway (`models.gateway start`), runs
each mix (`traffic`: about 1 in 10 parallelizable, as real chat traffic; `split-heavy`: 1 in
2) at each concurrency through the gateway and direct, then stops everything. With
`--fault-config` (a deployment whose decomposer is its own server) it also kills the
decomposer server mid-run and checks that every request is still answered. Every request
is recorded (`requests.jsonl`); `results.json`, `report.md` and `latency.png` summarise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from data_prep.jsonl_io import atomic_write_text
from data_prep.schema import Record
from data_prep.splits import load_split
from eval.provenance import git_commit, machine_description
from models.gateway.config import GatewayConfig, load_gateway_config
from models.serving.loadtest import percentile

MIXES = {"traffic": 0.1, "split-heavy": 0.5}


def request_mix(records: list[Record], n: int, positive_share: float, seed: int) -> list[Record]:
    """`n` records, round(n * share) of them parallelizable, shuffled; each class cycled
    (in a shuffled order) when the split has fewer records than asked for."""
    rng = random.Random(seed)
    k = round(n * positive_share)
    out = []
    for pool, count in (
        ([r for r in records if r.parallelizable], k),
        ([r for r in records if not r.parallelizable], n - k),
    ):
        pool = pool[:]
        rng.shuffle(pool)
        out += [pool[i % len(pool)] for i in range(count)]
    rng.shuffle(out)
    return out


async def run_requests(
    base_url: str, model: str, mix: list[Record], concurrency: int, max_tokens: int, on_done=None
) -> list[dict[str, Any]]:
    """Every request of the mix, `concurrency` in flight; one row per request (failures included)."""
    import httpx
    from tqdm.auto import tqdm

    slots = asyncio.Semaphore(concurrency)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(mix), desc=f"{base_url} x{concurrency}", unit="req")

    async def one(client: httpx.AsyncClient, i: int, rec: Record) -> None:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": rec.prompt}],
            "temperature": 0.0,
            "max_tokens": max_tokens,
        }
        async with slots:
            began = time.perf_counter()
            row: dict[str, Any] = {"i": i, "id": rec.id, "gold_parallelizable": rec.parallelizable}
            try:
                resp = await client.post(f"{base_url}/chat/completions", json=body)
                row["status"] = resp.status_code
                data = resp.json()
                if resp.status_code == 200:
                    row["completion_tokens"] = (data.get("usage") or {}).get("completion_tokens")
                    row["answered"] = bool(data["choices"][0]["message"]["content"])
                    row["parallel"] = data.get("parallel")
                else:
                    row["error"] = str(data.get("error"))[:300]
            except Exception as err:  # noqa: BLE001  (a failed request is the measurement)
                row["status"], row["error"] = None, f"{type(err).__name__}: {err}"[:300]
            row["seconds"] = round(time.perf_counter() - began, 4)
        rows.append(row)
        bar.update(1)
        if on_done is not None:
            on_done(len(rows))

    async with httpx.AsyncClient(timeout=httpx.Timeout(1800, connect=10)) as client:
        await asyncio.gather(*(one(client, i, rec) for i, rec in enumerate(mix)))
    bar.close()
    return sorted(rows, key=lambda r: r["i"])


def summarise(rows: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    ok = [r for r in rows if r.get("status") == 200 and r.get("answered")]
    lat = [r["seconds"] for r in ok]
    outcomes = [r.get("parallel") or {} for r in ok]
    reasons = Counter((o.get("fallback_reason") or "").split(":")[0] for o in outcomes if o.get("fallback_reason"))
    return {
        "requests": len(rows),
        "failed": len(rows) - len(ok),
        "wall_s": round(wall, 2),
        "mean_s": round(sum(lat) / len(lat), 3) if lat else None,
        "p50_s": round(percentile(lat, 50), 3) if lat else None,
        "p95_s": round(percentile(lat, 95), 3) if lat else None,
        "split": sum(bool(o.get("split")) for o in outcomes),
        "fallbacks": dict(reasons),
    }


def run_case(url: str, model: str, mix: list[Record], concurrency: int, max_tokens: int, on_done=None):
    began = time.perf_counter()
    rows = asyncio.run(run_requests(url, model, mix, concurrency, max_tokens, on_done))
    return rows, summarise(rows, time.perf_counter() - began)


def gateway_url(cfg: GatewayConfig) -> str:
    return f"http://127.0.0.1:{cfg.port}/v1"


def fault_run(cfg_path: str, mix: list[Record], concurrency: int, max_tokens: int, kill_after: int):
    """The decomposer's own server is killed (SIGKILL) once `kill_after` requests are done."""
    from models.gateway.__main__ import start, stop
    from models.serving.server import read_pid

    cfg = load_gateway_config(cfg_path)
    decomposer_port = int(cfg.decomposer.base_url.rstrip("/").removesuffix("/v1").rsplit(":", 1)[1])
    start(cfg, cfg_path)
    killed: dict[str, float] = {}
    began = time.perf_counter()

    def on_done(count: int) -> None:
        if count >= kill_after and not killed:
            pid = read_pid(decomposer_port)
            if pid is not None:
                os.killpg(pid, signal.SIGKILL)
                killed["at_s"] = round(time.perf_counter() - began, 2)
                killed["after_requests"] = count

    try:
        rows, summary = run_case(gateway_url(cfg), cfg.answer.model, mix, concurrency, max_tokens, on_done)
    finally:
        stop(cfg)
    return rows, {**summary, "killed": killed, "concurrency": concurrency}


def report(result: dict[str, Any]) -> str:
    lines = [
        "# Gateway under load",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}; commit {result['commit']}; {result['requests']} requests per run, "
        f"max_tokens {result['max_tokens']} per request (and per branch).",
        "",
        "| mix | in flight | path | failed | p50 s | p95 s | mean s | wall s | split | fallbacks |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case in result["cases"]:
        s = case["summary"]
        fb = ", ".join(f"{k} {v}" for k, v in s["fallbacks"].items()) or "-"
        lines.append(
            f"| {case['mix']} | {case['concurrency']} | {case['path']} | {s['failed']} | {s['p50_s']} | "
            f"{s['p95_s']} | {s['mean_s']} | {s['wall_s']} | {s['split']} | {fb} |"
        )
    lines += ["", "Ratios, gateway over direct (same mix, same concurrency):", ""]
    lines += ["| mix | in flight | p50 | p95 | wall |", "|---|---:|---:|---:|---:|"]
    for mix, conc, ratio in result["ratios"]:
        lines.append(f"| {mix} | {conc} | {ratio['p50']} | {ratio['p95']} | {ratio['wall']} |")
    if result.get("fault"):
        f = result["fault"]
        lines += [
            "",
            "## Fault: the decomposer server killed mid-run",
            "",
            f"{f['requests']} split-heavy requests at {f['concurrency']} in flight; the decomposer's server got "
            f"SIGKILL after {f['killed'].get('after_requests')} answers ({f['killed'].get('at_s')} s). "
            f"Failed: {f['failed']}. Split: {f['split']}. Fallbacks: {f['fallbacks'] or '-'}.",
        ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], rows: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = sorted({c["mix"] for c in result["cases"]})
    fig, axes = plt.subplots(1, len(mixes), figsize=(6 * len(mixes), 4), squeeze=False)
    for ax, mix in zip(axes[0], mixes, strict=True):
        for case in result["cases"]:
            if case["mix"] != mix:
                continue
            lat = sorted(r["seconds"] for r in rows[case["key"]] if r.get("status") == 200)
            ax.step(
                lat, [(i + 1) / len(lat) for i in range(len(lat))], where="post", label=case["key"].split("/", 1)[1]
            )
        ax.set(title=f"{mix} mix", xlabel="latency per request (s)", ylabel="share of requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/gateway/cpu.yaml")
    parser.add_argument("--split", default="outputs/data/default/test.jsonl")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, action="append")
    parser.add_argument("--mix", action="append", choices=sorted(MIXES))
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-config", help="a config whose decomposer runs on its own server (killed mid-run)")
    parser.add_argument("--fault-requests", type=int, default=32)
    parser.add_argument("--out", default="artifacts/bench/gateway")
    args = parser.parse_args(argv)
    from models.gateway.__main__ import start, stop

    records = load_split(args.split)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_gateway_config(args.config)
    result: dict[str, Any] = {
        "command": "python -m eval.gateway.load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_description(),
        "commit": git_commit(),
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "cases": [],
        "ratios": [],
    }
    all_rows: dict[str, list[dict[str, Any]]] = {}
    start(cfg, args.config)
    try:
        for mix_name in args.mix or list(MIXES):
            mix = request_mix(records, args.requests, MIXES[mix_name], args.seed)
            for conc in args.concurrency or [8, 16]:
                by_path = {}
                for path, url in (("direct", cfg.answer.base_url), ("gateway", gateway_url(cfg))):
                    rows, summary = run_case(url, cfg.answer.model, mix, conc, args.max_tokens)
                    key = f"{mix_name}/{path} x{conc}"
                    all_rows[key] = rows
                    by_path[path] = summary
                    result["cases"].append(
                        {"key": key, "mix": mix_name, "concurrency": conc, "path": path, "summary": summary}
                    )
                    atomic_write_text(out / "requests.json", json.dumps(all_rows, ensure_ascii=False))
                g, d = by_path["gateway"], by_path["direct"]
                ratio = {
                    k: round(g[f"{k}_s"] / d[f"{k}_s"], 3) if d[f"{k}_s"] else None for k in ("p50", "p95", "wall")
                }
                result["ratios"].append((mix_name, conc, ratio))
    finally:
        stop(cfg)
    if args.fault_config:
        mix = request_mix(records, args.fault_requests, MIXES["split-heavy"], args.seed + 1)
        rows, fault = fault_run(args.fault_config, mix, 8, args.max_tokens, kill_after=args.fault_requests // 4)
        all_rows["fault"] = rows
        result["fault"] = fault
    atomic_write_text(out / "requests.json", json.dumps(all_rows, ensure_ascii=False))
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    atomic_write_text(out / "report.md", report(result))
    plot(result, all_rows, out / "latency.png")
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
