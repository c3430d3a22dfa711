"""Serve the decomposer with `vllm serve` on loopback: base model, LoRA adapter(s),
structured outputs on the guidance backend; the CPU fixes of `models.serving.vllm_env` applied.

    python -m models.serving.server start --model qwen2.5-coder-0.5b-instruct \\
        --adapter artifacts/adapters/qwen2.5-coder-0.5b-lora-cpu-anchor-v4
    python -m models.serving.server status
    python -m models.serving.server stop

`start` returns once `/health` answers (or fails with the server log's tail); the
server runs in its own process group, its PID and log under `outputs/serve/<port>/`.
`stop` sends SIGTERM to that group, then SIGKILL after a grace period. Each adapter is
served under its folder name (the `--model` the OpenAI client asks for); the base model
under its registry name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from models.serving.process import ServeError, healthy, start_process, stop_process
from models.serving.process import read_pid as process_pid
from models.serving.vllm_env import STRUCTURED_OUTPUTS, VLLMUnavailable, cpu_env, lora_rank, on_gpu, require_vllm
from models.weights.registry import DEFAULT_DECOMPOSER

STATE_ROOT = Path("outputs/serve")


def state_dir(port: int) -> Path:
    return STATE_ROOT / str(port)


def looks_local(model: str) -> bool:
    """A folder path rather than a registry name or a Hub id (`org/name`)."""
    p = Path(model)
    return (
        p.is_absolute()
        or model.startswith(".")
        or len(p.parts) > 2
        or (len(p.parts) == 2 and Path(p.parts[0]).is_dir())
    )


def adapter_name(adapter: str) -> str:
    return Path(adapter).resolve().name


def serve_command(
    model: str,
    adapters: list[str],
    host: str,
    port: int,
    max_model_len: int,
    dtype: str,
    served_name: str,
) -> list[str]:
    from models.weights import resolve_model

    cmd = [
        sys.executable, "-m", "models.serving.vllm_cli", "serve", str(resolve_model(model)),
        "--host", host, "--port", str(port),
        "--served-model-name", served_name,
        "--dtype", dtype, "--max-model-len", str(max_model_len), "--seed", "0",
        "--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS),
    ]  # fmt: skip
    if not on_gpu():
        cmd += ["--enforce-eager"]
    if adapters:
        cmd += ["--enable-lora", "--max-lora-rank", str(max(lora_rank(a) for a in adapters))]
        cmd += ["--max-loras", str(len(adapters)), "--lora-modules"]
        cmd += [f"{adapter_name(a)}={Path(a).resolve()}" for a in adapters]
    return cmd


def _healthy(host: str, port: int) -> bool:
    return healthy(f"http://{host}:{port}/health")


def read_pid(port: int) -> int | None:
    return process_pid(state_dir(port))


def start(
    model: str,
    adapters: list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    max_model_len: int = 4096,
    dtype: str | None = None,
    kv_cache_gib: float = 2.0,
    timeout: float = 600.0,
) -> int:
    """Start the server and wait for /health; returns its PID."""
    require_vllm()
    dtype = dtype or ("auto" if on_gpu() else "float32")
    for a in adapters:
        lora_rank(a)  # a clear error for a missing adapter, before anything starts
    if looks_local(model) and not Path(model).exists():
        raise ServeError(
            f"{model} does not exist (a merged decomposer? python -m models.decomposer.merge --adapter <adapter>)"
        )
    served_name = Path(model).name if Path(model).exists() else model
    cmd = serve_command(model, adapters, host, port, max_model_len, dtype, served_name)
    env = {**os.environ, **cpu_env(kv_cache_gib, in_process=False), "OMP_WAIT_POLICY": "PASSIVE"}
    info = {"host": host, "port": port, "model": served_name}
    return start_process(
        cmd, state_dir(port), f"http://{host}:{port}/health", env=env, info=info, timeout=timeout, what="vllm serve"
    )


def stop(port: int = 8000, grace: float = 30.0) -> bool:
    """Stop the server started on `port`; False when none runs."""
    return stop_process(state_dir(port), grace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start vllm serve and wait until it is healthy")
    p_start.add_argument("--model", default=DEFAULT_DECOMPOSER)
    p_start.add_argument("--adapter", action="append", default=[], help="LoRA adapter folder (repeatable)")
    p_start.add_argument("--host", default="127.0.0.1")
    p_start.add_argument("--max-model-len", type=int, default=4096)
    p_start.add_argument("--dtype", help="default: float32 on CPU, the model's own dtype (auto) on a GPU")
    p_start.add_argument("--kv-cache-gib", type=float, default=2.0, help="CPU only: VLLM_CPU_KVCACHE_SPACE")
    p_start.add_argument("--timeout", type=float, default=600.0)
    for p in (p_start, sub.add_parser("stop"), sub.add_parser("status")):
        p.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            pid = start(
                args.model, args.adapter, args.host, args.port, args.max_model_len, args.dtype, args.kv_cache_gib,
                args.timeout,
            )  # fmt: skip
            print(
                f"serving on http://{args.host}:{args.port}/v1 (pid {pid}); stop: python -m models.serving.server stop"
            )
        elif args.command == "stop":
            print("stopped" if stop(args.port) else f"no server of ours runs on port {args.port}")
        else:
            pid = read_pid(args.port)
            info = state_dir(args.port) / "server.json"
            host = json.loads(info.read_text())["host"] if info.exists() else "127.0.0.1"
            health = "healthy" if pid and _healthy(host, args.port) else "not answering"
            print(f"pid {pid}: {health}" if pid else f"no server of ours runs on port {args.port}")
            return 0 if pid else 1
    except (ServeError, VLLMUnavailable, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
