"""The masked-attention parallel executor ("parallel prompting").

N sub-prompts that share a prefix (the decomposition's context and template head)
run inside ONE sequence: the shared prefix is prefilled once, each branch's own tail
is packed after it, and every decode step appends one token per live branch in a
single forward pass. A 4D attention mask lets each entry see the shared prefix and
the earlier entries of its own branch only; position ids of every branch continue
from the end of the prefix as if it were alone. Greedy outputs therefore equal
running each sub-prompt alone (up to floating-point ties).

Several independent prompts (each with its own branches) can share a batch: each
becomes one row of the batch, padded with masked entries (`group_size` sets how
many prompts go in one forward pass).

The KV cache is a transformers `DynamicCache`; entries of finished branches stay in
it but are masked out, so finished branches cost no compute in later steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

PREFIX = -1  # owner id of shared-prefix entries
PAD = -2  # owner id of padding entries (never attended to)


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seeds: list[int] | None = None  # one per branch (per group, flattened in order); default 0, 1, 2...
    eos_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()


@dataclass
class BranchResult:
    token_ids: list[int]
    text: str | None = None
    finish_reason: str = "length"  # eos | stop | length


@dataclass
class ExecutionStats:
    prefix_tokens: list[int] = field(default_factory=list)
    tail_tokens: list[int] = field(default_factory=list)
    decode_steps: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


def common_prefix_length(seqs: list[list[int]]) -> int:
    """Longest common token prefix, leaving every sequence at least one own token
    (its first token's logits start the branch)."""
    if not seqs:
        return 0
    limit = min(len(s) for s in seqs) - 1
    n = 0
    while n < limit and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return max(n, 0)


class _Row:
    """Layout of one batch row: who owns each KV entry, and its position id."""

    def __init__(self) -> None:
        self.owners: list[int] = []
        self.positions: list[int] = []


def _mask(q_owner: torch.Tensor, k_owner: torch.Tensor, q_index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive float mask (B, 1, Q, K): 0 where allowed, dtype-min elsewhere.

    Allowed: key is shared prefix or owned by the query's branch, not padding, and not
    later than the query. Padding queries see only themselves (avoids all-masked rows)."""
    k_index = torch.arange(k_owner.shape[1], device=k_owner.device)
    qo, ko = q_owner[:, :, None], k_owner[:, None, :]
    allowed = ((ko == PREFIX) | (ko == qo)) & (ko != PAD) & (k_index[None, None, :] <= q_index[None, :, None])
    pad_q = (qo == PAD) & (k_index[None, None, :] == q_index[None, :, None])
    allowed = torch.where(qo == PAD, pad_q, allowed)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=k_owner.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


class ParallelExecutor:
    def __init__(self, model, tokenizer=None):
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.stats = ExecutionStats()

    @torch.inference_mode()
    def _forward(
        self,
        rows: list[_Row],
        new_ids: list[list[int]],
        new_owners: list[list[int]],
        new_positions: list[list[int]],
        cache,
        keep: list[int] | int = 0,
    ):
        """Append one block of entries to every row (padded to equal length) and run the model.

        `keep`: which new entries need logits (0 = all; a list of indices; 1 = only the last),
        so the prefill does not pay the vocabulary projection for every prompt token."""
        width = max(len(x) for x in new_ids)
        pad_id = 0
        ids, owners, positions = [], [], []
        for r, (row_ids, row_owners, row_pos) in enumerate(zip(new_ids, new_owners, new_positions, strict=True)):
            fill = width - len(row_ids)
            ids.append(row_ids + [pad_id] * fill)
            owners.append(row_owners + [PAD] * fill)
            positions.append(row_pos + [0] * fill)
            rows[r].owners.extend(owners[-1])
            rows[r].positions.extend(positions[-1])
        k_owner = torch.tensor([row.owners for row in rows], device=self.device)
        q_owner = torch.tensor(owners, device=self.device)
        start = k_owner.shape[1] - width
        q_index = torch.arange(start, start + width, device=self.device)
        mask = _mask(q_owner, k_owner, q_index, self.dtype)
        out = self.model(
            input_ids=torch.tensor(ids, device=self.device),
            position_ids=torch.tensor(positions, device=self.device),
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=torch.tensor(keep, device=self.device) if isinstance(keep, list) else keep,
        )
        return out.logits, out.past_key_values

    def _pick(self, logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> int:
        if cfg.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
        if cfg.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < cfg.top_p
            sorted_p = sorted_p * keep
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
        return int(torch.multinomial((probs / probs.sum()).cpu(), 1, generator=generator))

    def run(self, prompts: list[list[int]], cfg: SamplingConfig | None = None) -> list[BranchResult]:
        """All branches of one prompt (token-id lists of the sub-prompts) in one sequence."""
        return self.run_groups([prompts], cfg)[0]

    def run_groups(
        self, groups: list[list[list[int]]], cfg: SamplingConfig | None = None, group_size: int | None = None
    ) -> list[list[BranchResult]]:
        """Several independent prompts, each with its branches; `group_size` prompts per forward pass."""
        cfg = cfg or SamplingConfig()
        size = group_size or len(groups)
        results: list[list[BranchResult]] = []
        seed_offset = 0
        for start in range(0, len(groups), size):
            chunk = groups[start : start + size]
            results.extend(self._run_rows(chunk, cfg, seed_offset))
            seed_offset += sum(len(g) for g in chunk)
        return results

    def _run_rows(
        self, groups: list[list[list[int]]], cfg: SamplingConfig, seed_offset: int
    ) -> list[list[BranchResult]]:
        from transformers import DynamicCache

        if any(not g for g in groups) or any(not p for g in groups for p in g):
            raise ValueError("every group needs at least one non-empty prompt")
        rows = [_Row() for _ in groups]
        cache = DynamicCache()
        t0 = time.perf_counter()

        # prefill the shared prefixes, then every branch's own tail, one forward each
        prefix_len = [common_prefix_length(g) for g in groups]
        self.stats.prefix_tokens.extend(prefix_len)
        logits, cache = (
            self._forward(
                rows,
                [g[0][:p] for g, p in zip(groups, prefix_len, strict=True)],
                [[PREFIX] * p for p in prefix_len],
                [list(range(p)) for p in prefix_len],
                cache,
                keep=1,  # prefix logits are never used
            )
            if max(prefix_len) > 0
            else (None, cache)
        )
        tail_ids, tail_owners, tail_pos, last_entry = [], [], [], []
        for g, p in zip(groups, prefix_len, strict=True):
            ids, owners, pos, ends = [], [], [], []
            for b, prompt in enumerate(g):
                tail = prompt[p:]
                ids += tail
                owners += [b] * len(tail)
                pos += list(range(p, len(prompt)))
                ends.append(len(ids) - 1)
            tail_ids.append(ids)
            tail_owners.append(owners)
            tail_pos.append(pos)
            last_entry.append(ends)
            self.stats.tail_tokens.append(len(ids))
        needed = sorted({e for ends in last_entry for e in ends})
        logits, cache = self._forward(rows, tail_ids, tail_owners, tail_pos, cache, keep=needed)
        column = {e: j for j, e in enumerate(needed)}
        last_entry = [[column[e] for e in ends] for ends in last_entry]
        self.stats.prefill_seconds += time.perf_counter() - t0

        # decode: one new entry per live branch per step
        t1 = time.perf_counter()
        out = [[BranchResult([]) for _ in g] for g in groups]
        next_pos = [[len(prompt) for prompt in g] for g in groups]
        step_logits = [[logits[r, e] for e in ends] for r, ends in enumerate(last_entry)]
        live = [[True] * len(g) for g in groups]
        generators = []
        flat = seed_offset
        for g in groups:
            gens = []
            for _ in g:
                seed = cfg.seeds[flat] if cfg.seeds is not None else flat
                gens.append(torch.Generator(device="cpu").manual_seed(seed) if cfg.temperature > 0 else None)
                flat += 1
            generators.append(gens)
        while True:
            new_ids, new_owners, new_pos, slots = [], [], [], []
            for r, g in enumerate(groups):
                ids, owners, pos, row_slots = [], [], [], []
                for b in range(len(g)):
                    if not live[r][b]:
                        continue
                    token = self._pick(step_logits[r][b], cfg, generators[r][b])
                    res = out[r][b]
                    res.token_ids.append(token)
                    self.stats.generated_tokens += 1
                    if token in cfg.eos_token_ids:
                        res.finish_reason, live[r][b] = "eos", False
                    elif cfg.stop_strings and self.tokenizer is not None and self._hit_stop(res, cfg):
                        res.finish_reason, live[r][b] = "stop", False
                    elif len(res.token_ids) >= cfg.max_new_tokens:
                        res.finish_reason, live[r][b] = "length", False
                    if live[r][b]:
                        ids.append(token)
                        owners.append(b)
                        pos.append(next_pos[r][b])
                        next_pos[r][b] += 1
                        row_slots.append(b)
                new_ids.append(ids)
                new_owners.append(owners)
                new_pos.append(pos)
                slots.append(row_slots)
            if not any(new_ids):
                break
            logits, cache = self._forward(rows, new_ids, new_owners, new_pos, cache)
            self.stats.decode_steps += 1
            for r, row_slots in enumerate(slots):
                for j, b in enumerate(row_slots):
                    step_logits[r][b] = logits[r, j]
        self.stats.decode_seconds += time.perf_counter() - t1
        if self.tokenizer is not None:
            for group in out:
                for res in group:
                    res.text = self.tokenizer.decode(res.token_ids, skip_special_tokens=True)
                    if res.finish_reason == "stop":
                        res.text = self._trim_stop(res.text, cfg)
        return out

    def _hit_stop(self, res: BranchResult, cfg: SamplingConfig) -> bool:
        tail = self.tokenizer.decode(res.token_ids[-16:], skip_special_tokens=True)
        return any(s in tail for s in cfg.stop_strings)

    @staticmethod
    def _trim_stop(text: str, cfg: SamplingConfig) -> str:
        cut = min((text.find(s) for s in cfg.stop_strings if s in text), default=-1)
        return text[:cut] if cut >= 0 else text
