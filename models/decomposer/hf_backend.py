"""The decomposer's transformers backend (+ a PEFT adapter), constrained by llguidance,
and the one-prefill gate shared with training's gate evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.decomposer.base import Generation, LocalDecomposer
from models.decomposer.calibration import two_way_probability


@dataclass(kw_only=True)
class HFDecomposer(LocalDecomposer):
    """In-process transformers (+ peft). Batches are left-padded; greedy decoding."""

    def __post_init__(self) -> None:
        from models.weights import load_causal_lm

        self._setup("hf")
        # adapters add no tokens: the base's tokenizer
        self.tokenizer, self.hf_model = load_causal_lm(self.model, self.dtype)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.adapter:
            from peft import PeftModel

            self.hf_model = PeftModel.from_pretrained(self.hf_model, self.adapter)
        self.hf_model.eval()

    def decision_probs(self, prompts: list[str]) -> list[float]:
        rows = [self.decision_ids(p) for p in prompts]
        return prefill_decision_probs(self.hf_model, rows, self.tokenizer.pad_token_id, self.decision)

    def _generate(self, prompts: list[str], schema: dict[str, Any] | None = None) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        from models.decomposer.grammar import GrammarLogitsProcessor
        from models.executor.chat import end_of_turn_ids, generated_length

        batch = self.tokenizer.apply_chat_template(
            [self.messages(p) for p in prompts],
            add_generation_prompt=True,
            padding=True,
            return_tensors="pt",
            return_dict=True,
        )
        processors = LogitsProcessorList()
        if self.constrained:
            vocab = self.hf_model.get_output_embeddings().weight.shape[0]
            processors.append(GrammarLogitsProcessor(self.tokenizer, schema or self.schema, vocab))
        with torch.inference_mode():
            out = self.hf_model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                logits_processor=processors,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        stops = end_of_turn_ids(self.hf_model, self.tokenizer)
        gens = []
        for row in new.tolist():
            n = generated_length(row, stops)
            ended = n > 0 and row[n - 1] in stops
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            gens.append(Generation(text, n, ended, row[:n]))
        return gens


def prefill_decision_probs(model, rows: list[list[int]], pad_id: int, decision) -> list[float]:
    """P(true) over {true, false} after each row of token ids (chat prompt + decision
    prefix): one left-padded forward with positions that ignore the padding, the logits
    of the last position only. Shared by the hf backend and training's gate evaluation."""
    import torch

    width = max(map(len, rows))
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=1,
        ).logits[:, -1, :]
    pair = torch.log_softmax(logits.float(), -1)[:, [decision.true_id, decision.false_id]]
    return [two_way_probability(float(t), float(f)) for t, f in pair.cpu()]
