"""The answer model, run serially (the prompt as is) or in parallel (a decomposition's
sub-prompts), on two engines, and the reassembly of parallel answers into one.

- ``executor``: transformers. Serial = `generate`; parallel = the masked-attention
  executor (`models.executor`), all sub-prompts inside one sequence.
- ``vllm``: in-process vLLM. Serial = one request; parallel = the sub-prompts as one
  batch (prefix caching on, so a shared context is prefilled once).

Both use the same system prompt and chat template for serial and parallel runs. Data
items decode greedily; the n copies of a repeated generation are identical prompts, so
they are sampled (temperature/top-p, one seed per copy) to give n different outputs.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from data_prep.list_markers import LIST_MARKER
from data_prep.schema import Record, render_subprompts
from models.pipeline.config import AnswerConfig

ENGINES = ("executor", "vllm")


@dataclass
class Run:
    texts: list[str]
    tokens: list[int]  # generated tokens per output
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"texts": self.texts, "tokens": self.tokens, "seconds": round(self.seconds, 4)}


class Answerer:
    engine = ""

    def __init__(self, cfg: AnswerConfig):
        self.cfg = cfg

    def messages(self, prompt: str) -> list[dict[str, str]]:
        from models.executor import chat_messages

        return chat_messages(prompt, self.cfg.system_prompt)

    def serial(self, prompt: str) -> Run:
        raise NotImplementedError

    def parallel(self, prompts: list[str], sample: bool) -> Run:
        raise NotImplementedError

    def run_record(self, rec: Record) -> Run:
        """The parallel run of a parallelizable record's sub-prompts."""
        return self.parallel(render_subprompts(rec), sample=rec.n is not None)


class ExecutorAnswerer(Answerer):
    engine = "executor"

    def __init__(self, cfg: AnswerConfig):
        super().__init__(cfg)
        from models.executor import ParallelExecutor, end_of_turn_ids
        from models.weights import load_causal_lm

        self.tokenizer, self.model = load_causal_lm(cfg.model, cfg.dtype)
        self.executor = ParallelExecutor(self.model, self.tokenizer)
        self.eos = end_of_turn_ids(self.model, self.tokenizer)

    def _ids(self, prompts: list[str]) -> list[list[int]]:
        from models.executor import chat_token_ids

        return chat_token_ids(self.tokenizer, prompts, self.cfg.system_prompt)

    def serial(self, prompt: str) -> Run:
        import torch

        from models.executor import generated_length

        ids = torch.tensor(self._ids([prompt]))
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.cfg.serial_max_new_tokens,
                do_sample=False,
                eos_token_id=list(self.eos),
                pad_token_id=self.eos[0],
            )
        seconds = time.perf_counter() - start
        new = out[0, ids.shape[1] :].tolist()
        n = generated_length(new, self.eos)
        return Run([self.tokenizer.decode(new[:n], skip_special_tokens=True)], [n], seconds)

    def parallel(self, prompts: list[str], sample: bool) -> Run:
        from models.executor import SamplingConfig

        cfg = SamplingConfig(
            max_new_tokens=self.cfg.branch_max_new_tokens,
            temperature=self.cfg.temperature if sample else 0.0,
            top_p=self.cfg.top_p,
            seeds=[self.cfg.seed + i for i in range(len(prompts))],
            eos_token_ids=self.eos,
        )
        start = time.perf_counter()
        results = self.executor.run(self._ids(prompts), cfg)
        seconds = time.perf_counter() - start
        return Run([r.text or "" for r in results], [len(r.token_ids) for r in results], seconds)


class VLLMAnswerer(Answerer):
    engine = "vllm"

    def __init__(self, cfg: AnswerConfig):
        super().__init__(cfg)
        from models.serving.vllm_env import engine_kwargs, load_llm

        kwargs = engine_kwargs(None, cfg.dtype, cfg.max_model_len, cfg.seed)
        self.llm = load_llm(cfg.model, kv_cache_gib=cfg.kv_cache_gib, enable_prefix_caching=True, **kwargs)

    def _chat(self, prompts: list[str], params: list) -> Run:
        start = time.perf_counter()
        outs = self.llm.chat([self.messages(p) for p in prompts], params, use_tqdm=False)
        seconds = time.perf_counter() - start
        return Run([o.outputs[0].text for o in outs], [len(o.outputs[0].token_ids) for o in outs], seconds)

    def serial(self, prompt: str) -> Run:
        from vllm import SamplingParams

        return self._chat([prompt], [SamplingParams(temperature=0.0, max_tokens=self.cfg.serial_max_new_tokens)])

    def parallel(self, prompts: list[str], sample: bool) -> Run:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                temperature=self.cfg.temperature if sample else 0.0,
                top_p=self.cfg.top_p if sample else 1.0,
                seed=self.cfg.seed + i,
                max_tokens=self.cfg.branch_max_new_tokens,
            )
            for i in range(len(prompts))
        ]
        return self._chat(prompts, params)


def load_answerer(engine: str, cfg: AnswerConfig) -> Answerer:
    """The answer model on an engine: the masked-attention `executor` or `vllm`."""
    if engine == "executor":
        return ExecutorAnswerer(cfg)
    if engine == "vllm":
        return VLLMAnswerer(cfg)
    raise ValueError(f"unknown answer engine {engine!r}; choose one of {', '.join(ENGINES)}")


_LINE_MARKER = re.compile(rf"(?m)^[ \t]*{LIST_MARKER}[ \t]*")


def item_markers(rec: Record, count: int) -> list[str]:
    """The marker of each of `count` answers: the one the user gave that item ("3)", "-",
    "（2）"), or "1.", "2.", ... where the prompt had none."""
    markers: list[str] = []
    if rec.data is not None:
        for item in rec.data:
            at = rec.prompt.find(item)
            line_start = rec.prompt.rfind("\n", 0, at) + 1 if at >= 0 else -1
            m = _LINE_MARKER.match(rec.prompt, line_start) if at >= 0 else None
            markers.append(m.group("marker") if m and m.end() == at else "")
    if len(markers) != count or not all(markers):
        markers = [f"{i}." for i in range(1, count + 1)]
    return markers


def answer_part(index: int, marker: str, answer: str) -> str:
    """One item's share of the reassembled answer (what a stream sends for it)."""
    separator = "\n\n" if index else ""
    return f"{separator}{marker} {answer.strip()}"


def reassemble(rec: Record, answers: list[str]) -> str:
    """One answer in the user's order: each item's answer after its marker."""
    markers = item_markers(rec, len(answers))
    return "".join(answer_part(i, m, a) for i, (m, a) in enumerate(zip(markers, answers, strict=True)))
