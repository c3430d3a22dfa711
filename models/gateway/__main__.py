"""Start, stop and inspect the gateway.

    python -m models.gateway start [--config configs/gateway/cpu.yaml]   # servers of `launch:`, then the gateway
    python -m models.gateway status
    python -m models.gateway stop
    python -m models.gateway serve --config C     # the gateway in the foreground (what `start` runs)

`start` returns once every server answers its health check (or fails with the log's
tail); each runs in its own process group with its PID and log under
`outputs/gateway/<port>/` (the vLLM servers under `outputs/serve/<port>/`), and `stop`
stops them all by PID, the gateway first.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from data_prep.config import ConfigError
from models.gateway.config import GatewayConfig, load_gateway_config
from models.serving.process import ServeError, healthy, read_pid, start_process, stop_process

DEFAULT_CONFIG = "configs/gateway/cpu.yaml"
STATE_ROOT = Path("outputs/gateway")


def state_dir(cfg: GatewayConfig) -> Path:
    return STATE_ROOT / str(cfg.port)


def start(cfg: GatewayConfig, config_path: str, timeout: float = 120.0) -> int:
    from models.serving import server

    for launch in cfg.launch:
        if server.read_pid(launch.port) is None:
            pid = server.start(
                launch.model,
                launch.adapters,
                port=launch.port,
                max_model_len=launch.max_model_len,
                kv_cache_gib=launch.kv_cache_gib,
                timeout=launch.timeout_s,
            )
            print(f"vllm serve on port {launch.port} (pid {pid})")
    cmd = [sys.executable, "-m", "models.gateway", "serve", "--config", config_path]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    url = f"http://{cfg.host if cfg.host != '0.0.0.0' else '127.0.0.1'}:{cfg.port}"
    return start_process(
        cmd,
        state_dir(cfg),
        f"{url}/health",
        env=env,
        info={"host": cfg.host, "port": cfg.port, "config": config_path},
        timeout=timeout,
        what="the gateway",
    )


def stop(cfg: GatewayConfig) -> list[str]:
    from models.serving import server

    stopped = ["gateway"] if stop_process(state_dir(cfg)) else []
    for launch in cfg.launch:
        if server.stop(launch.port):
            stopped.append(f"vllm serve :{launch.port}")
    return stopped


def serve(cfg: GatewayConfig) -> None:
    import uvicorn

    from models.gateway.app import create_app

    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "status", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--config", default=DEFAULT_CONFIG)
        p.add_argument("--port", type=int, help="override the config's gateway port")
    args = parser.parse_args(argv)
    try:
        cfg = load_gateway_config(args.config, {"port": args.port} if args.port else None)
        if args.command == "serve":
            serve(cfg)
        elif args.command == "start":
            pid = start(cfg, args.config)
            print(f"gateway on http://{cfg.host}:{cfg.port}/v1 (pid {pid}); stop: python -m models.gateway stop")
        elif args.command == "stop":
            stopped = stop(cfg)
            print("stopped: " + ", ".join(stopped) if stopped else "nothing of ours runs for this config")
        else:
            pid = read_pid(state_dir(cfg))
            up = pid is not None and healthy(f"http://127.0.0.1:{cfg.port}/health")
            print(f"gateway pid {pid}: {'healthy' if up else 'not answering'}" if pid else "the gateway is not running")
            return 0 if up else 1
    except (ConfigError, ServeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
