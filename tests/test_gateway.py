"""The gateway, really run: uvicorn on loopback in front of a real `vllm serve` of the tiny
model (and its tiny trained adapter as the decomposer). The regex decomposer makes the
split decision deterministic where a test needs it; fault injection (a decomposer that
raises or stalls, branches the answer server rejects) exercises every fallback. Skips
without vLLM."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import openai
import pytest
from conftest import free_port

from data_prep.schema import render_subprompts
from models.decomposer.base import Decomposer
from models.decomposer.rule_backend import RuleDecomposer
from models.gateway.config import GatewayConfig
from models.pipeline.answer import reassemble

SPLIT = "Translate into French:\n1. the red cat\n2. a big dog\n3. my old house"
SERIAL = "Write a short poem about the sea."


@dataclass(kw_only=True)
class Failing(Decomposer):
    def decompose(self, prompts, ids=None, batch_size=8):
        raise RuntimeError("decomposer crashed")


@dataclass(kw_only=True)
class Stalling(RuleDecomposer):
    delay: float = 3.0

    def decompose(self, prompts, ids=None, batch_size=8):
        time.sleep(self.delay)
        return super().decompose(prompts, ids, batch_size)


@pytest.fixture(scope="module")
def upstream(server, tiny_model_dir):
    port, _, adapter = server
    return f"http://127.0.0.1:{port}/v1", tiny_model_dir.name, adapter


def make_cfg(upstream, **overrides) -> GatewayConfig:
    base_url, model, _ = upstream
    fields = {
        "port": free_port(),
        "answer": {"base_url": base_url, "model": model},
        "decomposer": {"backend": "rules", "adapter": None},
        "branch_max_tokens": 8,
        **overrides,
    }
    return GatewayConfig.model_validate(fields)


@contextmanager
def gateway(cfg: GatewayConfig, decomposer: Decomposer | str | None = "rules"):
    """The gateway on its own port; `decomposer`: an instance, "rules", or None (the config's)."""
    import uvicorn

    from models.gateway.app import create_app

    app = create_app(cfg, RuleDecomposer() if decomposer == "rules" else decomposer)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=cfg.port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{cfg.port}", app.state.gateway
    finally:
        srv.should_exit = True
        thread.join(15)


def chat(url: str, content: str, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "temperature": 0.0}
    body.update({k: v for k, v in extra.items() if v is not None})
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def direct(upstream, content: str, max_tokens: int | None) -> str:
    base_url, model, _ = upstream
    client = openai.OpenAI(base_url=base_url, api_key="EMPTY")
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], temperature=0.0, max_tokens=max_tokens
    )
    return resp.choices[0].message.content


def test_a_split_prompt_gets_the_reassembled_branch_answers(upstream):
    with gateway(make_cfg(upstream)) as (url, _):
        resp = chat(url, SPLIT, max_tokens=64)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["parallel"]["split"] is True and data["parallel"]["branches"] == 3
    assert resp.headers["x-parallel-split"] == "1" and resp.headers["x-parallel-branches"] == "3"
    [rec] = [d.record for d in RuleDecomposer().decompose([SPLIT])]
    expected = reassemble(rec, [direct(upstream, sub, 8) for sub in render_subprompts(rec)])
    assert data["choices"][0]["message"]["content"] == expected
    assert data["usage"]["completion_tokens"] <= 3 * 8


def test_a_serial_prompt_passes_through_unchanged(upstream):
    with gateway(make_cfg(upstream)) as (url, _):
        resp = chat(url, SERIAL, max_tokens=12)
    data = resp.json()
    assert resp.status_code == 200 and data["parallel"]["split"] is False
    assert resp.headers["x-parallel-split"] == "0"
    assert data["choices"][0]["message"]["content"] == direct(upstream, SERIAL, 12)


def test_streaming_sends_items_in_order_and_the_same_text(upstream):
    with gateway(make_cfg(upstream)) as (url, _):
        whole = chat(url, SPLIT).json()["choices"][0]["message"]["content"]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="EMPTY")
        stream = client.chat.completions.create(
            model=upstream[1], messages=[{"role": "user", "content": SPLIT}], temperature=0.0, stream=True
        )
        chunks = list(stream)
        serial = client.chat.completions.create(
            model=upstream[1],
            messages=[{"role": "user", "content": SERIAL}],
            max_tokens=6,
            stream=True,
            temperature=0.0,
        )
        serial_text = "".join(c.choices[0].delta.content or "" for c in serial if c.choices)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == whole
    assert [p.lstrip().split(" ")[0] for p in pieces] == ["1.", "2.", "3."]  # the user's markers, in order
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"}
    assert chunks[-1].model_extra["parallel"]["split"] is True
    assert serial_text == direct(upstream, SERIAL, 6)


@pytest.mark.parametrize(
    ("overrides", "decomposer", "reason", "max_tokens"),
    [
        ({}, Failing(), "decomposer_error", 10),
        ({"decomposer": {"backend": "rules", "timeout_s": 0.3}}, Stalling(), "decomposer_timeout", 10),
        # branches ask for more tokens than the server's max_model_len: it rejects them (400)
        ({"branch_max_tokens": 100_000}, None, "branch_failed", None),
        ({"max_branches": 2}, None, "over_limit", 10),
    ],
    ids=["error", "timeout", "branch", "over-limit"],
)
def test_every_fallback_answers_serially(upstream, overrides, decomposer, reason, max_tokens):
    with gateway(make_cfg(upstream, **overrides), decomposer or "rules") as (url, gw):
        resp = chat(url, SPLIT, max_tokens=max_tokens)
        streamed = chat(url, SPLIT, max_tokens=max_tokens, stream=True)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["parallel"]["split"] is False
    assert data["parallel"]["fallback_reason"].startswith(reason)
    assert resp.headers["x-parallel-fallback"].startswith(reason)
    assert data["choices"][0]["message"]["content"] == direct(upstream, SPLIT, max_tokens)
    assert streamed.status_code == 200 and streamed.headers["x-parallel-split"] == "0"
    assert streamed.text.rstrip().endswith("data: [DONE]")
    assert gw.stats["serial"] == 2


@pytest.mark.parametrize(
    "body",
    [
        {
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "none",
        },
        {"n": 2, "temperature": 1.0},
        {"logprobs": True},
    ],
    ids=["tools", "n", "logprobs"],
)
def test_requests_it_cannot_split_pass_through(upstream, body):
    with gateway(make_cfg(upstream)) as (url, _):
        resp = chat(url, SPLIT, max_tokens=4, **body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["parallel"]["fallback_reason"].startswith("pass_through")


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"model": "x"}', "messages"),
        (b'{"messages": "hello"}', "messages"),
        (b'{"messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role"),
        (b'{"messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
        (b'{"messages": [{"role": "user", "content": "   "}]}', "messages[0].content"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens"),
    ],
)
def test_bad_input_gets_an_openai_style_400(upstream, raw, param):
    with gateway(make_cfg(upstream, max_prompt_chars=1000)) as (url, _):
        resp = httpx.post(f"{url}/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        huge = chat(url, "x" * 1001)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and "Traceback" not in resp.text
    assert huge.status_code == 400 and huge.json()["error"]["code"] == "context_length_exceeded"


def test_an_unknown_model_gets_the_answer_servers_404(upstream):
    with gateway(make_cfg(upstream)) as (url, _):
        resp = chat(url, SERIAL, model="no-such-model")
        models = httpx.get(f"{url}/v1/models").json()
        health = httpx.get(f"{url}/health")
    assert resp.status_code == 404 and "error" in resp.json()
    assert upstream[1] in [m["id"] for m in models["data"]]
    assert health.status_code == 200


def test_beyond_the_queue_requests_get_429(upstream):
    cfg = make_cfg(upstream, max_in_flight=1, max_queue=1, decomposer={"backend": "rules", "timeout_s": 30})

    async def burst(url):
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"messages": [{"role": "user", "content": SPLIT}], "max_tokens": 4}
            return await asyncio.gather(*(client.post(f"{url}/v1/chat/completions", json=body) for _ in range(4)))

    with gateway(cfg, Stalling(delay=1.0)) as (url, gw):
        codes = sorted(r.status_code for r in asyncio.run(burst(url)))
        after = chat(url, SPLIT, max_tokens=4)
    assert codes == [200, 200, 429, 429]  # one in flight, one queued, two refused
    assert after.status_code == 200 and gw.stats["rejected_429"] == 2 and gw.admission.admitted == 0


def _running(base_url: str) -> float:
    root = base_url.removesuffix("/v1")
    text = urllib.request.urlopen(f"{root}/metrics", timeout=5).read().decode()
    lines = [x for x in text.splitlines() if x.startswith("vllm:num_requests_running")]
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_client_disconnect_cancels_its_branches(upstream, stream):
    cfg = make_cfg(upstream, branch_max_tokens=1500)
    with gateway(cfg) as (url, gw):
        began = time.monotonic()
        assert chat(url, SPLIT, max_tokens=1500).status_code == 200
        full = time.monotonic() - began  # the uncancelled request, for scale
        with pytest.raises(httpx.ReadTimeout):
            chat_timeout = httpx.Timeout(full / 4, connect=5)
            body = {"messages": [{"role": "user", "content": SPLIT}], "max_tokens": 1500, "stream": stream}
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=chat_timeout)
        gone = time.monotonic()
        while _running(upstream[0]) > 0 and time.monotonic() - gone < full:
            time.sleep(0.05)
        idle_after = time.monotonic() - gone
        deadline = time.monotonic() + 5
        while gw.admission.admitted and time.monotonic() < deadline:
            time.sleep(0.05)
    assert _running(upstream[0]) == 0
    assert idle_after < full / 2, (idle_after, full)  # aborted, not run to the end
    assert gw.admission.admitted == 0 and gw.stats["cancelled"] >= 1


def test_the_trained_adapter_decomposes_through_the_server(upstream):
    base_url, model, adapter = upstream
    cfg = make_cfg(upstream, decomposer={"backend": "openai", "adapter": adapter, "base_url": base_url})
    with gateway(cfg, decomposer=None) as (url, gw):
        resp = chat(url, SPLIT, max_tokens=8)
    assert resp.status_code == 200, resp.text
    outcome = resp.json()["parallel"]
    assert gw._decomposer is not None and gw._decomposer.backend == "openai"
    assert gw._decomposer.client.max_retries == 0  # past the budget: serial, not a second try
    assert gw._decomposer.client.timeout == cfg.decomposer.timeout_s
    assert outcome["decomposer_ms"] > 0 and 0.0 <= outcome["p_parallel"] <= 1.0  # the gate ran on the server
    if not outcome["split"]:  # a tiny random adapter: serial, or an output the validator refused
        assert outcome["fallback_reason"] is None or outcome["fallback_reason"].startswith("decomposer_output")


def test_one_command_starts_everything_and_stop_ends_it_by_pid(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    import yaml
    from conftest import ROOT

    from models.serving.process import alive

    answer_port, gateway_port = free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "port": gateway_port,
                "answer": {"base_url": f"http://127.0.0.1:{answer_port}/v1", "model": tiny_model_dir.name},
                "decomposer": {"backend": "rules", "adapter": None},
                "launch": [
                    {"model": str(tiny_model_dir), "adapters": [], "port": answer_port, "max_model_len": 1024}
                    | {"kv_cache_gib": 1}
                ],
                "branch_max_tokens": 4,
            }
        )
    )

    def cli(*args):
        cmd = [sys.executable, "-m", "models.gateway", *args, "--config", str(config)]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)

    started = cli("start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        pids = [
            int((ROOT / d / str(p) / "server.pid").read_text())
            for d, p in (("outputs/gateway", gateway_port), ("outputs/serve", answer_port))
        ]
        resp = chat(f"http://127.0.0.1:{gateway_port}", SPLIT, max_tokens=4)
        assert resp.status_code == 200 and resp.json()["parallel"]["split"] is True
        assert cli("status").returncode == 0
        assert cli("start").returncode == 2  # already running: a clear error, nothing started twice
    finally:
        stopped = cli("stop")
    assert "gateway" in stopped.stdout and "vllm serve" in stopped.stdout
    assert not any(alive(pid) for pid in pids)
    assert cli("status").returncode == 1


def test_the_load_mix_has_the_asked_share_of_parallelizable_prompts(labelled_rows):
    from data_prep.schema import Record
    from eval.gateway.load import request_mix

    records = [Record.model_validate(r) for r in labelled_rows]
    mix = request_mix(records, 64, 0.1, seed=0)
    assert len(mix) == 64 and sum(r.parallelizable for r in mix) == 6
    assert request_mix(records, 64, 0.1, seed=0) == mix  # seeded


def test_the_executor_engine_runs_the_branches_in_one_sequence(upstream, tiny_model_dir):
    from models.pipeline.answer import load_answerer
    from models.pipeline.config import AnswerConfig

    cfg = make_cfg(upstream, engine="executor")
    cfg.answer.model = str(tiny_model_dir)  # the executor loads it in process; serial requests use the server
    with gateway(cfg) as (url, _):
        resp = chat(url, SPLIT, max_tokens=8, model=upstream[1])
    assert resp.status_code == 200, resp.text
    assert resp.json()["parallel"]["split"] is True
    [rec] = [d.record for d in RuleDecomposer().decompose([SPLIT])]
    answerer = load_answerer("executor", AnswerConfig(model=str(tiny_model_dir), branch_max_new_tokens=8))
    assert resp.json()["choices"][0]["message"]["content"] == reassemble(rec, answerer.run_record(rec).texts)


def test_a_launch_of_a_missing_merged_folder_is_a_clear_error():
    from models.serving import server
    from models.serving.process import ServeError

    with pytest.raises(ServeError, match="does not exist .*models.decomposer.merge"):
        server.start("outputs/merged/not-merged-yet", [], port=free_port())
    assert server.looks_local("outputs/merged/x") and not server.looks_local("Qwen/Qwen2.5-0.5B-Instruct")


def test_sampled_branches_carry_seeds_unless_the_config_turns_them_off():
    from data_prep.schema import Record
    from models.gateway.app import Gateway

    rec = Record(
        id="x",
        source="t",
        language="en",
        prompt="Give me 3 slogans for a bakery",
        parallelizable=True,
        category="repeated_generation",
        template="Give me 1 slogan for a bakery",
        n=3,
    )
    body = {"model": "m", "messages": [{"role": "user", "content": rec.prompt}], "seed": 7}
    seeded = Gateway(GatewayConfig(), client=object()).branch_bodies(body, rec)
    assert [b["seed"] for b in seeded] == [7, 8, 9] and all(b["temperature"] > 0 for b in seeded)
    unseeded = Gateway(GatewayConfig(branch_seeds=False), client=object()).branch_bodies(body, rec)
    assert all("seed" not in b and b["temperature"] > 0 for b in unseeded) and len(unseeded) == 3
