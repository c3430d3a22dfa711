"""The gateway: an OpenAI-compatible `/v1/chat/completions` that decomposes the last user
turn and, when it splits, runs the sub-prompts concurrently and returns one reassembled
completion.

Per request: check it (4xx on bad input), admit it (429 beyond `max_in_flight` +
`max_queue`), decompose within the budget, then either pass the request through to the
answer server unchanged or send one request per sub-prompt (the conversation so far, the
sub-prompt as the last user turn; the shared context is a common prefix, so vLLM's prefix
cache prefills it once) and reassemble them in the user's order (`models.pipeline.answer`,
the one reassembly). Every failure on the way to a split (decomposer error or timeout, a
failed branch, too many branches) falls back to the plain request: never worse than no
gateway. What happened goes in the `parallel` field of the response and `x-parallel-*`
headers. A client that disconnects cancels its upstream requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from data_prep.schema import Record, render_subprompts
from models.decomposer.base import Decomposer, Decomposition
from models.gateway import protocol
from models.gateway.config import GatewayConfig
from models.gateway.protocol import DONE, Outcome, RequestError, error_response
from models.pipeline import runs_in_parallel
from models.pipeline.answer import answer_part, item_markers

log = logging.getLogger("models.gateway")

_CREATE_PARAMS = set(inspect.signature(openai.resources.chat.AsyncCompletions.create).parameters) - {
    "self",
    "extra_headers",
    "extra_query",
    "extra_body",
    "timeout",
}


def openai_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """A request body as the openai client's arguments: what it does not know (vLLM's own
    sampling options, say) travels unchanged in `extra_body`."""
    known = {k: v for k, v in body.items() if k in _CREATE_PARAMS}
    extra = {k: v for k, v in body.items() if k not in _CREATE_PARAMS}
    return {**known, "extra_body": extra} if extra else known


def _short(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:300]


class Admission:
    """At most `in_flight` requests worked on, `queue` more waiting; beyond: refuse."""

    def __init__(self, in_flight: int, queue: int):
        self.slots = asyncio.Semaphore(in_flight)
        self.limit = in_flight + queue
        self.admitted = 0

    def try_enter(self) -> bool:
        if self.admitted >= self.limit:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1


class BranchFailed(Exception):
    def __init__(self, index: int, err: BaseException):
        super().__init__(f"branch {index}: {_short(err)}")


class Gateway:
    def __init__(self, cfg: GatewayConfig, decomposer: Decomposer | None = None, client=None):
        self.cfg = cfg
        self.client = client or openai.AsyncOpenAI(
            base_url=cfg.answer.base_url, api_key=cfg.answer.api_key, timeout=cfg.answer.timeout_s, max_retries=0
        )
        self._decomposer = decomposer
        self._decomposer_error: str | None = None
        self._next_load = 0.0
        self._load_lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=cfg.max_in_flight, thread_name_prefix="decompose")
        self._executor = None  # the masked-attention answerer, loaded on first use (engine: executor)
        self._executor_lock = asyncio.Lock()
        self.admission = Admission(cfg.max_in_flight, cfg.max_queue)
        self.stats: Counter[str] = Counter()

    # ---------------------------------------------------------------- decomposer
    def _load_decomposer(self) -> Decomposer:
        from models.decomposer import load_decomposer

        d = self.cfg.decomposer
        options: dict[str, Any] = {"model": d.model, "adapter": d.adapter, "threshold": d.threshold}
        if d.backend == "openai":
            # past the budget the request is answered serially: a retry (or a call left running
            # longer than the budget) would only take the answer server's time from other requests
            options.update(base_url=d.base_url, timeout=d.timeout_s, max_retries=0)
        if d.backend != "rules":
            options["gate"] = True
        return load_decomposer(d.backend, **options)

    def decomposer(self) -> Decomposer:
        """The decomposer, loaded on first use; a failed load is retried after `retry_after_s`."""
        with self._load_lock:
            return self._loaded_decomposer()

    def _loaded_decomposer(self) -> Decomposer:
        if self._decomposer is None:
            if time.monotonic() < self._next_load:
                raise RuntimeError(f"decomposer unavailable: {self._decomposer_error}")
            try:
                self._decomposer = self._load_decomposer()
                self._decomposer_error = None
            except Exception as err:  # noqa: BLE001  (any failure here means: answer serially)
                self._decomposer_error = _short(err)
                self._next_load = time.monotonic() + self.cfg.decomposer.retry_after_s
                raise
        return self._decomposer

    async def decompose(self, prompt: str) -> tuple[Decomposition | None, Outcome]:
        began = time.perf_counter()
        loop = asyncio.get_running_loop()

        def work() -> Decomposition:
            return self.decomposer().decompose([prompt], ["gateway"])[0]

        outcome = Outcome()
        try:
            d = await asyncio.wait_for(loop.run_in_executor(self._threads, work), self.cfg.decomposer.timeout_s)
        except TimeoutError:
            outcome.fallback_reason = f"decomposer_timeout: over {self.cfg.decomposer.timeout_s:g} s"
            d = None
        except Exception as err:  # noqa: BLE001
            outcome.fallback_reason = f"decomposer_error: {_short(err)}"
            d = None
        outcome.decomposer_ms = 1000 * (time.perf_counter() - began)
        if d is not None:
            outcome.p_parallel = d.p_parallel
            outcome.fallback_reason = d.fallback_reason and f"decomposer_output: {d.fallback_reason}"[:300]
            rec = d.record
            if rec.parallelizable and not runs_in_parallel(rec, self.cfg.max_branches):
                outcome.fallback_reason = (
                    f"over_limit: {len(render_subprompts(rec))} sub-prompts, the limit is {self.cfg.max_branches}"
                )
            elif rec.parallelizable:
                outcome.split, outcome.category = True, rec.category
                outcome.branches = len(render_subprompts(rec))
        return d, outcome

    # ---------------------------------------------------------------- upstream
    async def _branch(self, body: dict[str, Any]) -> tuple[str, str, dict[str, int]]:
        resp = await self.client.chat.completions.create(**openai_kwargs(body))
        choice = resp.choices[0]
        usage = (
            resp.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) if resp.usage else {}
        )
        return choice.message.content or "", choice.finish_reason or "stop", usage

    def branch_bodies(self, body: dict[str, Any], rec: Record) -> list[dict[str, Any]]:
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        bodies = []
        for i, sub in enumerate(render_subprompts(rec)):
            b = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "n", "max_completion_tokens")}
            b["messages"] = [*body["messages"][:-1], {"role": "user", "content": sub}]
            b["max_tokens"] = min(cap, self.cfg.branch_max_tokens) if cap else self.cfg.branch_max_tokens
            if rec.n is not None:  # identical sub-prompts: sample, one seed each, so the n outputs differ
                b["temperature"] = body.get("temperature") or self.cfg.repeat_temperature
                if self.cfg.branch_seeds:
                    b["seed"] = int(body.get("seed") or 0) + i
                else:  # one shared client seed would also make the n outputs identical
                    b.pop("seed", None)
            bodies.append(b)
        return bodies

    async def _executor_texts(self, rec: Record, max_tokens: int) -> list[str]:
        """All sub-prompts inside one sequence on the in-process masked-attention executor."""
        from models.pipeline.answer import load_answerer
        from models.pipeline.config import AnswerConfig

        async with self._executor_lock:  # one sequence at a time on this model
            if self._executor is None:
                cfg = AnswerConfig(model=self.cfg.answer.model, branch_max_new_tokens=max_tokens, seed=0)
                self._executor = await asyncio.to_thread(load_answerer, "executor", cfg)
            run = await asyncio.to_thread(self._executor.run_record, rec)
        return run.texts

    def start_branches(self, body: dict[str, Any], rec: Record) -> list[asyncio.Task]:
        bodies = self.branch_bodies(body, rec)
        if self.cfg.engine == "upstream":
            return [asyncio.create_task(self._branch(b)) for b in bodies]
        shared = asyncio.create_task(self._executor_texts(rec, bodies[0]["max_tokens"]))

        async def pick(i: int) -> tuple[str, str, dict[str, int]]:
            return (await asyncio.shield(shared))[i], "stop", {}

        return [asyncio.create_task(pick(i)) for i in range(len(bodies))]

    @staticmethod
    async def wait_in_order(tasks: list[asyncio.Task], upto: int) -> None:
        """Until tasks[:upto + 1] are done; BranchFailed as soon as any task fails."""
        while True:
            for i, t in enumerate(tasks):
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise BranchFailed(i, t.exception())
            if all(t.done() for t in tasks[: upto + 1]):
                return
            await asyncio.wait([t for t in tasks if not t.done()], return_when=asyncio.FIRST_COMPLETED)

    # ---------------------------------------------------------------- answers
    async def serial(self, body: dict[str, Any], outcome: Outcome) -> Response:
        """The request passed through unchanged; the upstream's own status on its errors."""
        self.stats["serial"] += 1
        headers = outcome.headers()
        try:
            if body.get("stream"):
                manager = self.client.chat.completions.with_streaming_response.create(**openai_kwargs(body))
                upstream = await manager.__aenter__()

                async def relay():
                    try:
                        async for line in upstream.iter_lines():
                            yield f"{line}\n"
                    finally:
                        await manager.__aexit__(None, None, None)

                return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)
            raw = await self.client.chat.completions.with_raw_response.create(**openai_kwargs(body))
        except openai.APIStatusError as err:
            return JSONResponse(_upstream_body(err), status_code=err.status_code, headers=headers)
        except openai.APITimeoutError:
            return error_response(504, "the answer server did not answer in time", headers=headers)
        except openai.APIConnectionError:
            return error_response(
                502, f"the answer server at {self.cfg.answer.base_url} is unreachable", headers=headers
            )
        data = json.loads(raw.http_response.content)
        data["parallel"] = outcome.to_json()
        return JSONResponse(data, headers=headers)

    async def split(self, body: dict[str, Any], rec: Record, outcome: Outcome) -> Response:
        model = body.get("model") or self.cfg.answer.model
        tasks = self.start_branches(body, rec)
        markers = item_markers(rec, len(tasks))
        try:
            # a stream starts once its first item is ready, so that a failure before it still falls back
            await self.wait_in_order(tasks, upto=len(tasks) - 1 if not body.get("stream") else 0)
        except BranchFailed as err:
            for t in tasks:
                t.cancel()
            self.stats["fallback: branch_failed"] += 1
            outcome.split, outcome.fallback_reason = False, f"branch_failed: {err}"[:300]
            return await self.serial(body, outcome)
        except BaseException:  # the client went away: cancel its upstream requests
            for t in tasks:
                t.cancel()
            raise
        self.stats["split"] += 1
        if not body.get("stream"):
            results = [t.result() for t in tasks]
            text = "".join(answer_part(i, m, r[0]) for i, (m, r) in enumerate(zip(markers, results, strict=True)))
            finish = "length" if any(r[1] == "length" for r in results) else "stop"
            usage = Counter()
            for r in results:
                usage.update(r[2])
            return JSONResponse(
                protocol.completion(model, text, finish, dict(usage), outcome), headers=outcome.headers()
            )
        return StreamingResponse(
            self.stream_split(body, rec, tasks, markers, model, outcome),
            media_type="text/event-stream",
            headers=outcome.headers(),
        )

    async def stream_split(self, body, rec, tasks, markers, model, outcome):
        """Items in order, each as soon as it and those before it are done. A branch that
        fails after the stream began is retried once; then the stream ends with an error."""
        cid = protocol.completion_id()
        finish, usage = "stop", Counter()
        try:
            yield protocol.chunk(cid, model, {"role": "assistant", "content": ""})
            for i, task in enumerate(tasks):
                try:
                    text, why, used = await task
                except Exception:  # noqa: BLE001  (retried once, then reported in the stream)
                    try:
                        text, why, used = await self._branch(self.branch_bodies(body, rec)[i])
                    except Exception as err:  # noqa: BLE001
                        self.stats["stream_branch_failed"] += 1
                        failure = protocol.error_body(f"branch {i} failed: {_short(err)}", "server_error")
                        yield f"data: {json.dumps(failure)}\n\n"
                        return
                finish = "length" if why == "length" else finish
                usage.update(used)
                yield protocol.chunk(cid, model, {"content": answer_part(i, markers[i], text)})
            extra: dict[str, Any] = {"parallel": outcome.to_json()}
            if (body.get("stream_options") or {}).get("include_usage"):
                extra["usage"] = dict(usage)
            yield protocol.chunk(cid, model, {}, finish, **extra)
            yield DONE
        finally:
            for t in tasks:
                t.cancel()


def _upstream_body(err: openai.APIStatusError) -> dict[str, Any]:
    body = err.body
    if isinstance(body, dict) and "error" in body:
        return body
    if isinstance(body, dict) and "message" in body:
        return {"error": body}
    return protocol.error_body(str(err.message), "upstream_error")


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(cfg: GatewayConfig, decomposer: Decomposer | None = None, client=None) -> FastAPI:
    gw = Gateway(cfg, decomposer, client)
    app = FastAPI(title="parallel-decomposer gateway", docs_url=None, redoc_url=None)
    app.state.gateway = gw

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> JSONResponse:  # no traceback to the client
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"internal gateway error ({type(err).__name__})")

    @app.get("/health")
    async def health() -> JSONResponse:
        try:
            await gw.client.models.list(timeout=5)
        except openai.APIError as err:
            return JSONResponse({"status": "unavailable", "answer_server": _short(err)}, status_code=503)
        loaded = gw._decomposer is not None
        return JSONResponse({"status": "ok", "decomposer": "loaded" if loaded else gw._decomposer_error or "lazy"})

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {**gw.stats, "admitted": gw.admission.admitted}

    @app.get("/v1/models")
    async def models() -> Response:
        try:
            page = await gw.client.models.list()
        except openai.APIStatusError as err:
            return JSONResponse(_upstream_body(err), status_code=err.status_code)
        except openai.APIError:
            return error_response(502, f"the answer server at {cfg.answer.base_url} is unreachable")
        return JSONResponse({"object": "list", "data": [m.model_dump() for m in page.data]})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        gw.stats["requests"] += 1
        try:
            body = protocol.parse_request(await request.body(), cfg.max_prompt_chars)
        except RequestError as err:
            gw.stats["bad_request"] += 1
            return error_response(err.status, err.message, param=err.param, code=err.code)
        if not gw.admission.try_enter():
            gw.stats["rejected_429"] += 1
            return error_response(429, "too many requests in flight; retry later", headers={"retry-after": "1"})
        body.setdefault("model", cfg.answer.model)
        work = asyncio.ensure_future(_handle(gw, body))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if work not in done:
            work.cancel()  # cancels its branches and upstream requests
            gw.stats["cancelled"] += 1
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            gw.admission.leave()
            return Response(status_code=499)
        try:
            response = work.result()
        except BaseException:
            gw.admission.leave()
            raise
        if isinstance(response, StreamingResponse):  # the slot is held until the stream ends
            response.body_iterator = _releasing(response.body_iterator, gw)
        else:
            gw.admission.slots.release()
            gw.admission.leave()
        return response

    return app


async def _releasing(stream, gw: Gateway):
    try:
        async for part in stream:
            yield part
    except asyncio.CancelledError:
        gw.stats["cancelled"] += 1
        raise
    finally:
        gw.admission.slots.release()
        gw.admission.leave()


async def _handle(gw: Gateway, body: dict[str, Any]) -> Response:
    """The response to one admitted request; it holds a slot, which the caller releases
    (at once, or when a streamed response ends). On failure or cancellation it releases it."""
    await gw.admission.slots.acquire()
    try:
        reason = protocol.why_not_split(body)
        if reason is not None:
            gw.stats["pass_through"] += 1
            return await gw.serial(body, Outcome(fallback_reason=reason))
        decomposition, outcome = await gw.decompose(body["messages"][-1]["content"])
        if outcome.fallback_reason:
            gw.stats[f"fallback: {outcome.fallback_reason.split(':')[0]}"] += 1
        if not outcome.split:
            return await gw.serial(body, outcome)
        return await gw.split(body, decomposition.record, outcome)
    except BaseException:
        gw.admission.slots.release()
        raise
