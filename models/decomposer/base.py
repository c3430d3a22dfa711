"""The decomposer interface: prompt in, schema record out. Four backends implement it
(found by name in `models.decomposer.BACKENDS`; this module imports none of them):

- ``hf`` (`hf_backend`): in-process transformers (+ a PEFT adapter); constrained by
  `grammar.GrammarLogitsProcessor`.
- ``vllm`` (`vllm_backend`): in-process vLLM (`LLM`, `LoRARequest`); structured outputs, guidance backend.
- ``openai`` (`openai_backend`): an OpenAI-compatible server (`python -m models.serving.server`); `response_format`
  json_schema, which vLLM serves with the same guidance backend.
- ``rules`` (`rule_backend`): no model; the regex baseline.

All three send the same system prompt and chat template as training (the output format
the adapter was trained on, `data_prep.formatting.adapter_format`) and decode greedily.
With `constrained=True` (the default) every output parses and follows the JSON Schema.
What the schema cannot express (context and items found in the prompt) is checked after
decoding; an output that fails it, or one cut by the token budget, falls back to
"run the prompt serially" with the reason recorded. Bad prompts raise `PromptError`.

The decision gate (`gate=True`, the default for model backends): one prefill of the chat
prompt plus the output's opening `{"parallelizable":` gives the probability of `true`
(`p_parallel`). Below `threshold` the prompt is serial and nothing is decoded; above it
the decomposition is decoded under the parallel-only grammar. The threshold is the one
calibrated on the validation split for a target precision and stored with the adapter
(`decomposer_calibration.json`, written by `python -m eval.decomposer.calibrate`), else 0.5.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from data_prep.formatting import (
    DECISION_PREFIX,
    FORMAT_FILE,
    adapter_format,
    decision_tokens,
    parse_completion,
    prompt_messages,
)
from data_prep.langid import detect_record_language
from data_prep.schema import Record, errors, output_json_schema, parse_record
from models.decomposer.calibration import DEFAULT_THRESHOLD, read_calibration
from models.weights.registry import DEFAULT_DECOMPOSER


class PromptError(ValueError):
    """A prompt the decomposer cannot take (empty, binary, not UTF-8, too long)."""


class DecomposerError(RuntimeError):
    """A backend that cannot start (missing adapter, server down, vLLM missing)."""


@dataclass
class Generation:
    text: str
    tokens: int  # generated tokens, end-of-turn included
    complete: bool  # False when cut by max_new_tokens
    token_ids: list[int] = field(default_factory=list)  # where the backend returns them (hf, vllm)


@dataclass
class Decomposition:
    record: Record  # always valid; serial when the model's output could not be used
    raw: str  # the model's text
    valid_json: bool
    fallback_reason: str | None  # None when the model's decomposition is used as is
    generated_tokens: int
    seconds: float  # this prompt's share of the wall time of the batch it was decoded in
    token_ids: list[int] = field(default_factory=list)
    p_parallel: float | None = None  # the gate's P("parallelizable": true); None without a gate

    def to_json(self) -> dict[str, Any]:
        return {
            **self.record.model_dump(),
            "decomposer": {
                "p_parallel": None if self.p_parallel is None else round(self.p_parallel, 5),
                "fallback_reason": self.fallback_reason,
                "valid_json": self.valid_json,
                "generated_tokens": self.generated_tokens,
                "seconds": round(self.seconds, 4),
                "raw": self.raw,
            },
        }


def check_prompt(prompt: object, where: str = "prompt") -> str:
    """The prompt, or PromptError naming what is wrong with it."""
    if isinstance(prompt, bytes):
        try:
            prompt = prompt.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PromptError(f"{where} is not valid UTF-8 ({err.reason} at byte {err.start})") from None
    if not isinstance(prompt, str):
        raise PromptError(f"{where} must be a string, not {type(prompt).__name__}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise PromptError(
            f"{where} is not valid UTF-8 (it holds lone surrogates, e.g. from undecodable bytes)"
        ) from None
    if not prompt.strip():
        raise PromptError(f"{where} is empty")
    control = [c for c in prompt if ord(c) < 32 and c not in "\n\r\t"]
    if "\x00" in prompt or len(control) > max(2, len(prompt) // 100):
        raise PromptError(f"{where} looks binary ({len(control)} control characters); expected text")
    return prompt


def serial_record(prompt: str, rid: str, language: str | None = None) -> Record:
    """A record that says: run this prompt as it is. Its language is the instruction's (the data pipeline's rule)."""
    language = language or detect_record_language({"prompt": prompt})
    return Record(id=rid, source="decomposer", language=language, prompt=prompt, parallelizable=False)


def to_record(
    raw: str, *, prompt: str, rid: str, complete: bool = True, language: str | None = None
) -> tuple[Record, bool, str | None]:
    """(record, parsed as JSON, fallback reason) for one model output."""
    try:
        fields = parse_completion(raw, prompt)
    except ValueError as err:
        fields, parse_error = {}, str(err)
    else:
        parse_error = None
    # the same rule as the data pipeline: the language of the instruction (the template's own words if any)
    language = language or detect_record_language({"prompt": prompt, **fields})
    serial = serial_record(prompt, rid, language)
    if parse_error is not None:
        if not complete:
            parse_error = f"output cut at the token budget before it was complete ({parse_error})"
        return serial, False, parse_error
    rec, violations = parse_record(
        {"id": rid, "source": "decomposer", "language": language, "prompt": prompt, **fields}
    )
    errs = errors(violations)
    if rec is None or errs:
        return serial, True, "; ".join(map(str, errs))
    return rec, True, None


@dataclass(kw_only=True)
class Decomposer:
    """Shared logic; a backend implements `_generate` (and `prompt_tokens` if it can)."""

    backend: str = field(init=False, default="")
    fmt: str = "anchor-v1"
    constrained: bool = True
    max_new_tokens: int = 512
    max_prompt_tokens: int | None = None  # None: not checked here (the server checks)
    schema: dict[str, Any] = field(default_factory=output_json_schema)
    gate: bool = False  # model backends: True (see the module docstring)
    threshold: float | None = None  # None: the adapter's calibrated threshold, else DEFAULT_THRESHOLD

    def _generate(self, prompts: list[str], schema: dict[str, Any] | None = None) -> list[Generation]:
        """Greedy decoding of each prompt under `schema` (default `self.schema`)."""
        raise NotImplementedError

    def decision_probs(self, prompts: list[str]) -> list[float]:
        """P("parallelizable": true) for each prompt, from one prefill (the gate)."""
        raise NotImplementedError(f"the {self.backend} backend has no decision gate")

    def prompt_tokens(self, prompt: str) -> int | None:
        return None

    def check(self, prompts: list[object], ids: list[str]) -> list[str]:
        out = []
        for prompt, rid in zip(prompts, ids, strict=True):
            text = check_prompt(prompt, f"prompt {rid!r}")
            n = self.prompt_tokens(text) if self.max_prompt_tokens else None
            if n is not None and n > self.max_prompt_tokens:
                raise PromptError(
                    f"prompt {rid!r} is too long: {n} tokens with the system prompt, "
                    f"the limit is {self.max_prompt_tokens} (max_model_len - max_new_tokens)"
                )
            out.append(text)
        return out

    def messages(self, prompt: str) -> list[dict[str, str]]:
        return prompt_messages(prompt, self.fmt)

    def decompose(
        self, prompts: list[object], ids: list[str] | None = None, batch_size: int = 8
    ) -> list[Decomposition]:
        """One Decomposition per prompt, in order. Raises PromptError before decoding anything."""
        ids = ids or [f"prompt-{i}" for i in range(len(prompts))]
        texts = self.check(prompts, ids)
        results: list[Decomposition] = []
        for start in range(0, len(texts), batch_size):
            chunk, chunk_ids = texts[start : start + batch_size], ids[start : start + batch_size]
            if self.gate:
                results.extend(self._gated(chunk, chunk_ids))
                continue
            began = time.perf_counter()
            gens = self._generate(chunk)
            share = (time.perf_counter() - began) / len(chunk)
            for prompt, rid, gen in zip(chunk, chunk_ids, gens, strict=True):
                rec, valid_json, reason = to_record(gen.text, prompt=prompt, rid=rid, complete=gen.complete)
                results.append(Decomposition(rec, gen.text, valid_json, reason, gen.tokens, share, gen.token_ids))
        return results

    def _gated(self, prompts: list[str], ids: list[str]) -> list[Decomposition]:
        """Decide with one prefill; decode only the prompts at or above the threshold.
        Each prompt's `seconds` is its share of the gate plus, for a split one, its share
        of the decoding."""
        threshold = DEFAULT_THRESHOLD if self.threshold is None else self.threshold
        began = time.perf_counter()
        probs = self.decision_probs(prompts)
        gate_share = (time.perf_counter() - began) / len(prompts)
        split = [i for i, p in enumerate(probs) if p >= threshold]
        gens: dict[int, Generation] = {}
        decode_share = 0.0
        if split:
            began = time.perf_counter()
            out = self._generate([prompts[i] for i in split], self.parallel_schema)
            decode_share = (time.perf_counter() - began) / len(split)
            gens = dict(zip(split, out, strict=True))
        results = []
        for i, (prompt, rid, p) in enumerate(zip(prompts, ids, probs, strict=True)):
            if i not in gens:  # decided serial: nothing was decoded
                rec = serial_record(prompt, rid)
                results.append(Decomposition(rec, f"{DECISION_PREFIX}false", True, None, 0, gate_share, [], p))
                continue
            gen = gens[i]
            rec, valid_json, reason = to_record(gen.text, prompt=prompt, rid=rid, complete=gen.complete)
            results.append(
                Decomposition(
                    rec, gen.text, valid_json, reason, gen.tokens, gate_share + decode_share, gen.token_ids, p
                )
            )
        return results

    @property
    def parallel_schema(self) -> dict[str, Any]:
        """The grammar once the gate said "split": the schema's parallel variants only."""
        variants = [v for v in self.schema["anyOf"] if v["properties"]["parallelizable"].get("const") is True]
        return {**self.schema, "anyOf": variants}

    def _load_trained(self, adapter: str | None, model: str) -> str | None:
        """Read what training recorded, from the adapter folder or a merged model folder:
        the output format (`self.fmt`) and the gate's threshold (unless one was given).
        Returns that folder, or None for a plain base model (the defaults)."""
        check_adapter(adapter)
        trained = adapter or merged_dir(model)
        if trained:
            try:
                self.fmt = adapter_format(trained)
            except ValueError as err:
                raise DecomposerError(str(err)) from None
        self._load_threshold(trained)
        return trained

    def _load_threshold(self, trained: str | None) -> None:
        if self.threshold is None:
            try:
                calibration = read_calibration(trained)
            except ValueError as err:
                raise DecomposerError(str(err)) from None
            self.threshold = float(calibration["threshold"]) if calibration else DEFAULT_THRESHOLD
        elif not 0.0 <= self.threshold <= 1.0:
            raise DecomposerError(f"threshold must be in [0, 1], not {self.threshold}")


@dataclass(kw_only=True)
class LocalDecomposer(Decomposer):
    """A backend that loads the model in this process (hf, vllm): it knows the tokenizer,
    so overlong prompts are refused before decoding."""

    model: str = DEFAULT_DECOMPOSER
    adapter: str | None = None
    dtype: str = "float32"
    max_model_len: int = 4096
    gate: bool = True

    def _setup(self, backend: str) -> None:
        self.backend = backend
        self._load_trained(self.adapter, self.model)
        self.max_prompt_tokens = self.max_model_len - self.max_new_tokens

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.apply_chat_template(
            self.messages(prompt), add_generation_prompt=True, tokenize=True, return_dict=False
        )

    def decision_ids(self, prompt: str) -> list[int]:
        """The chat prompt followed by the output's forced opening `{"parallelizable":`."""
        return self.prompt_ids(prompt) + self.decision.prefix_ids

    @property
    def decision(self):
        if not hasattr(self, "_decision"):
            self._decision = decision_tokens(self.tokenizer)
        return self._decision

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.prompt_ids(prompt))


def merged_dir(model: str) -> str | None:
    """`model` when it is a folder holding a decomposer's format file (an adapter merged into
    its base by `python -m models.decomposer.merge`), else None (a plain base model)."""
    from pathlib import Path

    return model if (Path(model) / FORMAT_FILE).is_file() else None


def check_adapter(adapter: str | None) -> None:
    from pathlib import Path

    if adapter and not (Path(adapter) / "adapter_config.json").is_file():
        raise DecomposerError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
