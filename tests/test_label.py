"""Teacher labelling at the true boundary: the real Anthropic and OpenAI SDKs talk to fake
HTTP transports that answer with the APIs' real response shapes (success, malformed JSON,
schema violation then fix, 429 then success, 5xx, refused key), and a crash mid-run
then a resume loses and duplicates nothing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2 as httpx  # the SDKs (anthropic, openai) use httpx2
import pytest

from data_prep.formatting import format_completion
from data_prep.jsonl_io import sidecar
from data_prep.label import Labeller, dedup_prompts, read_prompts, run
from data_prep.schema import Record, check_record, errors
from data_prep.teacher_prompt import confidence, select_few_shot
from data_prep.teachers import AnthropicTeacher, OpenAITeacher, PermanentError, cost_usd

PROMPTS = {
    "p1": "Translate into German:\n1. Good morning\n2. Thank you",
    "p2": "Give me 3 slogans for a bakery",
    "p3": "Write one haiku about autumn",
    "p4": "What is the capital of Peru?",
}
GOOD = {
    "p1": {
        "parallelizable": True,
        "category": "translation",
        "template": "Translate into German: {data}",
        "context": None,
        "data": ["Good morning", "Thank you"],
        "n": None,
    },
    "p2": {
        "parallelizable": True,
        "category": "repeated_generation",
        "template": "Give me a slogan for a bakery",
        "context": None,
        "data": None,
        "n": 3,
    },
    "p3": {k: None for k in ("category", "template", "context", "data", "n")} | {"parallelizable": False},
    "p4": {k: None for k in ("category", "template", "context", "data", "n")} | {"parallelizable": False},
}
BAD_SCHEMA = {**GOOD["p1"], "template": "Translate into German"}  # no {data}


def anthropic_message(fields: dict, model: str = "claude-sonnet-4-5") -> dict:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "record_decomposition", "input": fields}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 1200, "output_tokens": 80},
    }


def anthropic_error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def openai_completion(content: str, model: str = "qwen2.5-coder-1.5b-instruct") -> dict:
    return {
        "id": "chatcmpl-9f8e7d",
        "object": "chat.completion",
        "created": 1763800000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 900, "completion_tokens": 60, "total_tokens": 960},
    }


def openai_error(code: str, message: str) -> dict:
    return {"error": {"message": message, "type": code, "param": None, "code": code}}


class Script:
    """A fake server: per prompt id, a queue of (status, body, headers) answers; the last repeats."""

    def __init__(self, answers: dict[str, list[tuple[int, dict, dict]]]):
        self.answers = answers
        self.requests: dict[str, list[dict]] = {k: [] for k in answers}

    def prompt_id(self, body: dict) -> str:
        users = [m for m in body["messages"] if m["role"] == "user"]
        asked = next(m for m in reversed(users) if not str(m["content"]).startswith("That answer breaks"))
        return next(k for k, v in PROMPTS.items() if v == asked["content"])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        rid = self.prompt_id(body)
        self.requests[rid].append(body)
        queue = self.answers[rid]
        status, payload, headers = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(status, json=payload, headers=headers)


def ok_anthropic(rid):
    return (200, anthropic_message(GOOD[rid]), {})


def ok_openai(rid):
    return (200, openai_completion(json.dumps(GOOD[rid])), {})


@pytest.fixture(scope="module")
def shots(labelled_rows):
    return select_few_shot([Record.model_validate(r) for r in labelled_rows])


def labeller(teacher, shots):
    return Labeller(teacher, shots, source_name="teacher-test", sleep=lambda s: None, backoff=0.0)


def anthropic_teacher(script):
    return AnthropicTeacher(
        "claude-sonnet-4-5", api_key="test", http_client=httpx.Client(transport=httpx.MockTransport(script))
    )


def openai_teacher(script):
    return OpenAITeacher(
        "qwen2.5-coder-1.5b-instruct",
        base_url="http://teacher.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(script)),
    )


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_anthropic_success_retry_and_fix(tmp_path, shots):
    script = Script(
        {
            "p1": [(200, anthropic_message(BAD_SCHEMA), {}), ok_anthropic("p1")],  # schema violation, then fixed
            "p2": [(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "0"}), ok_anthropic("p2")],
            "p3": [(529, anthropic_error("overloaded_error", "Overloaded"), {}), ok_anthropic("p3")],
            "p4": [ok_anthropic("p4")],
        }
    )
    out = tmp_path / "labelled.jsonl"
    summary = run(labeller(anthropic_teacher(script), shots), list(PROMPTS.items()), out, concurrency=2)
    records = read(out)
    assert sorted(r["id"] for r in records) == ["p1", "p2", "p3", "p4"]
    assert all(errors(check_record(r)) == [] for r in records)
    assert {r["id"]: r["parallelizable"] for r in records} == {"p1": True, "p2": True, "p3": False, "p4": False}
    # the correction request carried the previous answer and the validation error back to the teacher
    retry = script.requests["p1"][1]["messages"]
    assert "rule5.data_placeholder" in retry[-1]["content"] and retry[-2]["role"] == "assistant"
    assert summary["transport_retries"] == 2 and summary["attempts"] == 5 and summary["labelled"] == 4
    meta = {m["id"]: m for m in read(sidecar(out, "meta"))}
    assert meta["p1"]["attempts"] == 2 and meta["p1"]["reason"] is None and meta["p1"]["status"] == "labelled"
    assert summary["positives"] == 2 and summary["input_tokens"] == 1200 * 5
    assert (
        summary["cost_usd"] == pytest.approx(cost_usd("claude-sonnet-4-5", 1200 * 5, 80 * 5))
        and summary["cost_usd"] > 0
    )
    # the request used forced tool use with the schema's fields
    first = script.requests["p4"][0]
    assert first["tool_choice"] == {"type": "tool", "name": "record_decomposition"}
    assert first["tools"][0]["input_schema"]["required"][0] == "parallelizable" and first["system"]


def test_openai_malformed_json_then_fix_and_bounded_attempts(tmp_path, shots):
    script = Script(
        {
            "p1": [(200, openai_completion('{"parallelizable": true, "categ'), {}), ok_openai("p1")],
            "p2": [(200, openai_completion("not json at all"), {})],  # never fixed: rejected after 3 attempts
            "p3": [(503, openai_error("server_error", "busy"), {}), ok_openai("p3")],
            "p4": [ok_openai("p4")],
        }
    )
    out = tmp_path / "labelled.jsonl"
    summary = run(labeller(openai_teacher(script), shots), list(PROMPTS.items()), out, concurrency=1)
    assert sorted(r["id"] for r in read(out)) == ["p1", "p3", "p4"]
    rejected = read(sidecar(out, "rejected"))
    assert [r["id"] for r in rejected] == ["p2"] and "not valid JSON" in rejected[0]["reason"]
    assert len(script.requests["p2"]) == 3 and summary["rejected_by_reason"] == {"invalid after 3 attempt(s)": 1}
    body = script.requests["p4"][0]
    assert body["response_format"]["type"] == "json_schema" and body["messages"][0]["role"] == "system"
    assert summary["cost_usd"] == 0.0  # a local model


def test_crash_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path, shots):
    class PowerCut(RuntimeError):
        pass

    calls = {"n": 0}
    script = Script({k: [ok_openai(k)] for k in PROMPTS})

    def crashing(request):
        calls["n"] += 1
        if calls["n"] == 3:
            raise PowerCut("the machine went down")
        return script(request)

    out = tmp_path / "labelled.jsonl"
    items = list(PROMPTS.items())
    with pytest.raises(PowerCut):
        run(labeller(openai_teacher(crashing), shots), items, out, concurrency=1)
    done_before = [r["id"] for r in read(out)]
    assert done_before == ["p1", "p2"]
    with open(out, "a") as f:  # and a torn line, as if the crash hit mid-write
        f.write('{"id": "p3", "source": "tea')
    summary = run(labeller(openai_teacher(script), shots), items, out, concurrency=2)
    ids = [r["id"] for r in read(out)]
    assert sorted(ids) == ["p1", "p2", "p3", "p4"] and len(ids) == len(set(ids))
    assert summary["already_done"] == 2 and summary["labelled"] == 4
    assert len(script.requests["p1"]) == 1  # not asked again


def test_refused_key_stops_without_marking_prompts_done(tmp_path, shots):
    script = Script({k: [(401, anthropic_error("authentication_error", "invalid x-api-key"), {})] for k in PROMPTS})
    out = tmp_path / "labelled.jsonl"
    with pytest.raises(PermanentError, match="401"):
        run(labeller(anthropic_teacher(script), shots), list(PROMPTS.items()), out, concurrency=1)
    assert read(out) == [] and read(sidecar(out, "rejected")) == []


def test_teacher_down_after_bounded_retries_is_retried_on_rerun(tmp_path, shots):
    script = Script({k: [(500, openai_error("server_error", "boom"), {})] for k in PROMPTS})
    out = tmp_path / "labelled.jsonl"
    lab = labeller(openai_teacher(script), shots)
    lab.max_retries = 2
    summary = run(lab, [("p4", PROMPTS["p4"])], out)
    assert len(script.requests["p4"]) == 3 and summary["failed_not_done"] == 1
    assert read(out) == [] and read(sidecar(out, "rejected")) == []  # not done: a rerun asks again
    fixed = Script({"p4": [ok_openai("p4")]})
    assert run(labeller(openai_teacher(fixed), shots), [("p4", PROMPTS["p4"])], out)["labelled"] == 1


def test_confidence_tiers():
    assert confidence(PROMPTS["p1"], GOOD["p1"])[0] == "high"  # numbered list
    assert confidence(PROMPTS["p2"], GOOD["p2"])[0] == "high"  # the count 3
    soft = {**GOOD["p1"], "data": ["cats", "dogs"], "template": "Describe {data}"}
    assert confidence("Describe each of these animals: cats and dogs", soft)[0] == "medium"
    unsupported = {**GOOD["p2"], "n": 4}
    assert confidence("Write a slogan for my bakery", unsupported)[0] == "reject"
    assert confidence("hello", GOOD["p4"])[0] == "high"


def test_confidence_reject_is_recorded(tmp_path, shots):
    script = Script({"p3": [(200, openai_completion(json.dumps({**GOOD["p2"], "template": "Write a haiku"})), {})]})
    out = tmp_path / "labelled.jsonl"
    summary = run(labeller(openai_teacher(script), shots), [("p3", PROMPTS["p3"])], out)
    assert summary["rejected_by_reason"] == {"confidence": 1} and read(out) == []


def test_inputs_in_every_format_and_dedup(tmp_path):
    import pandas as pd

    rows = [
        {"id": "a", "prompt": "Same prompt"},
        {"id": "b", "prompt": "same   PROMPT"},
        {"id": "c", "prompt": "Other"},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_csv(tmp_path / "in.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "in.parquet")
    chats = [  # the shape of WildChat / LMSYS-Chat: a conversation list, the first user turn is the prompt
        {
            "conversation_hash": "h1",
            "conversation": [
                {"role": "user", "content": "List 3 uses of rice"},
                {"role": "assistant", "content": "..."},
            ],
        },
        {"conversation_hash": "h2", "conversation": [{"role": "user", "content": "hi"}]},
    ]
    pd.DataFrame(chats).to_parquet(tmp_path / "chats.parquet")
    for name in ("in.jsonl", "in.csv", "in.parquet"):
        items = read_prompts(str(tmp_path / name))
        assert items == [(r["id"], r["prompt"]) for r in rows]
        kept, dropped = dedup_prompts(items)
        assert [k for k, _ in kept] == ["a", "c"] and dropped == 1
    assert read_prompts(str(tmp_path / "chats.parquet")) == [("h1", "List 3 uses of rice"), ("h2", "hi")]
    assert len(read_prompts(str(tmp_path / "in.jsonl"), limit=2)) == 2


def test_cli_clear_errors(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    def cli(input_name: str, teacher: str = "openai"):
        args = ["--teacher", teacher, "--model", "m", "--input", str(tmp_path / input_name)]
        return subprocess.run(
            [sys.executable, "-m", "data_prep.label", *args, "--output", str(tmp_path / "o.jsonl")],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "ANTHROPIC_API_KEY": ""},
        )

    (tmp_path / "x.txt").write_text("hello")
    (tmp_path / "p.jsonl").write_text(json.dumps({"text": "no prompt column"}) + "\n")
    (tmp_path / "ok.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    for input_name, teacher, message in [
        ("none.jsonl", "openai", "input not found"),
        ("x.txt", "openai", "unsupported file type"),
        ("p.jsonl", "openai", "no 'prompt' or 'conversation' column"),
        ("ok.jsonl", "anthropic", "ANTHROPIC_API_KEY"),
    ]:
        proc = cli(input_name, teacher)
        assert proc.returncode == 2 and message in proc.stderr, (input_name, proc.stderr[-500:])


def test_few_shot_examples_are_valid_and_cover_every_category(shots):
    from data_prep.schema import CATEGORIES

    assert {s.category for s in shots if s.parallelizable} == set(CATEGORIES) - {None}
    assert any(not s.parallelizable for s in shots)
    assert all(errors(check_record(s)) == [] for s in shots)
    assert all(json.loads(format_completion(s, "json-v2"))["context"] == s.context for s in shots)


def test_timeouts_are_retried(tmp_path, shots):
    script = Script({"p4": [ok_openai("p4")]})
    calls = {"n": 0}

    def slow_then_fine(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise httpx.ReadTimeout("timed out", request=request)
        return script(request)

    out = tmp_path / "labelled.jsonl"
    summary = run(labeller(openai_teacher(slow_then_fine), shots), [("p4", PROMPTS["p4"])], out)
    assert summary["labelled"] == 1 and summary["transport_retries"] == 2
