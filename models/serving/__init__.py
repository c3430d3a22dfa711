"""Serving with vLLM: `server` starts / stops an OpenAI-compatible vLLM server with the
decomposer adapter (`python -m models.serving.server start|stop`), `vllm_env` holds the
engine options and the CPU fixes in one place, `vllm_cli` is the patched `vllm` entry
point the server runs, `loadtest` measures a running server."""
