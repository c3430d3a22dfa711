"""An OpenAI-compatible parallel-prompting gateway in front of vLLM.

    python -m models.gateway start      # vllm serve (answer model + decomposer adapter), then the gateway
    curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"messages": [{"role": "user", "content": "Translate into French:\\n1. cat\\n2. dog"}]}'

`config` holds the settings, `protocol` the wire format (request checks, OpenAI-style
errors, responses and stream chunks), `app` the FastAPI application (decompose, pass
through or split, reassemble, fall back), `__main__` the start/stop/status commands.
"""
