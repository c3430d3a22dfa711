"""The decomposer in-process with transformers (+ a PEFT adapter): prompt in, schema
record out. Same system prompt, chat template and output format as training.

An output that does not parse or breaks a schema rule never raises: the prompt is
returned as a serial (not parallelizable) record with the reason recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from data_prep.formatting import parse_completion, prompt_messages
from data_prep.langid import detect_record_language
from data_prep.schema import Record, errors, parse_record


@dataclass
class Decomposition:
    record: Record  # always valid; serial when the model's output could not be used
    raw: str  # the model's text
    valid_json: bool
    fallback_reason: str | None  # None when the model's decomposition is used as is
    generated_tokens: int
    seconds: float  # wall time of the batch this prompt was decoded in, shared equally


def to_record(raw: str, *, prompt: str, rid: str, language: str | None = None) -> tuple[Record, bool, str | None]:
    """(record, parsed as JSON, fallback reason) for one model output."""
    try:
        fields = parse_completion(raw)
    except ValueError as err:
        fields, parse_error = {}, str(err)
    else:
        parse_error = None
    # the same rule as the data pipeline: the language of the instruction (the template's own words if any)
    language = language or detect_record_language({"prompt": prompt, **fields})
    serial = Record(id=rid, source="decomposer", language=language, prompt=prompt, parallelizable=False)
    if parse_error is not None:
        return serial, False, parse_error
    rec, violations = parse_record(
        {"id": rid, "source": "decomposer", "language": language, "prompt": prompt, **fields}
    )
    errs = errors(violations)
    if rec is None or errs:
        return serial, True, "; ".join(map(str, errs))
    return rec, True, None


class HFDecomposer:
    def __init__(self, model: str, adapter: str | None = None, *, dtype: str = "float32", max_new_tokens: int = 512):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from models.registry import resolve_model

        path = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)  # adapters add no tokens: the base's tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter)
        self.model.eval()
        self.max_new_tokens = max_new_tokens

    def generate(self, prompts: list[str]) -> tuple[list[str], list[int], float]:
        import torch

        batch = self.tokenizer.apply_chat_template(
            [prompt_messages(p) for p in prompts],
            add_generation_prompt=True,
            padding=True,
            return_tensors="pt",
            return_dict=True,
        )
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                **batch, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
            )
        seconds = time.perf_counter() - start
        new = out[:, batch["input_ids"].shape[1] :]
        eos = self.tokenizer.eos_token_id
        texts, counts = [], []
        for row in new.tolist():
            ended = [i for i, t in enumerate(row) if t in (eos, self.tokenizer.pad_token_id)]
            n = ended[0] + 1 if ended else len(row)
            counts.append(n)
            texts.append(self.tokenizer.decode(row[:n], skip_special_tokens=True))
        return texts, counts, seconds

    def decompose(self, prompts: list[str], ids: list[str] | None = None, batch_size: int = 8) -> list[Decomposition]:
        ids = ids or [f"prompt-{i}" for i in range(len(prompts))]
        results: list[Decomposition] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            texts, counts, seconds = self.generate(chunk)
            for prompt, rid, text, n in zip(chunk, ids[start : start + batch_size], texts, counts, strict=True):
                rec, valid_json, reason = to_record(text, prompt=prompt, rid=rid)
                results.append(Decomposition(rec, text, valid_json, reason, n, seconds / len(chunk)))
        return results
