"""Background servers on loopback: start one in its own process group with its PID, log
and settings under a state folder, wait until its health URL answers, stop it by PID
(SIGTERM to the group, SIGKILL after a grace period). Used by `models.serving.server`
(vllm serve) and `models.gateway` (the gateway and the servers behind it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


class ServeError(RuntimeError):
    pass


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_tail(log: Path, lines: int = 40) -> str:
    if not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def read_pid(directory: Path) -> int | None:
    """The PID of the server started under `directory`, if it still runs."""
    pid_file = directory / "server.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip())
    return pid if alive(pid) else None


def start_process(
    cmd: list[str], directory: Path, health_url: str, *, env: dict[str, str], info: dict, timeout: float, what: str
) -> int:
    """Start `cmd` in the background and wait until `health_url` answers 200; its PID."""
    if read_pid(directory) is not None:
        port = urllib.parse.urlsplit(health_url).port
        raise ServeError(f"{what} already runs on port {port} (stop it first; its state is in {directory})")
    if healthy(health_url):
        raise ServeError(f"something else already answers at {health_url}")
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "server.log"
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    (directory / "server.pid").write_text(f"{proc.pid}\n")
    (directory / "server.json").write_text(json.dumps({"pid": proc.pid, **info, "command": cmd}, indent=2))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (directory / "server.pid").unlink(missing_ok=True)
            raise ServeError(f"{what} exited with code {proc.returncode}; log tail:\n{log_tail(log)}")
        if healthy(health_url):
            return proc.pid
        time.sleep(1.0)
    stop_process(directory)
    raise ServeError(f"{what} did not answer {health_url} within {timeout:.0f} s; log tail:\n{log_tail(log)}")


def stop_process(directory: Path, grace: float = 30.0) -> bool:
    """Stop the server started under `directory`; False when none runs."""
    pid_file = directory / "server.pid"
    pid = read_pid(directory)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.5)
        try:  # reap it when it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    if alive(pid):
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True
