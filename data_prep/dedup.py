"""Exact and near-duplicate removal over prompts.

Exact: prompts equal after case-folding and white-space folding.
Near: MinHash LSH (datasketch) over character shingles, which works for languages
written without spaces as well. The first record of a group (in source order) is
kept, so list the most trusted source first in the data config.
"""

from __future__ import annotations

import hashlib

from datasketch import MinHash, MinHashLSH


def normalize_prompt(text: str) -> str:
    return " ".join(text.casefold().split())


def shingles(text: str, k: int) -> set[str]:
    text = normalize_prompt(text)
    if len(text) <= k:
        return {text}
    return {text[i : i + k] for i in range(len(text) - k + 1)}


def minhash(text: str, *, num_perm: int, k: int) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=1)
    m.update_batch([s.encode("utf-8") for s in shingles(text, k)])
    return m


def jaccard(a: str, b: str, k: int = 5) -> float:
    sa, sb = shingles(a, k), shingles(b, k)
    return len(sa & sb) / max(1, len(sa | sb))


def find_duplicates(
    prompts: list[str], *, near_threshold: float = 0.85, num_perm: int = 128, shingle: int = 5
) -> dict[int, tuple[str, int]]:
    """Index of each duplicate -> ("exact" | "near", index of the record it duplicates)."""
    dropped: dict[int, tuple[str, int]] = {}
    seen: dict[str, int] = {}
    for i, prompt in enumerate(prompts):
        key = hashlib.sha1(normalize_prompt(prompt).encode("utf-8")).hexdigest()
        if key in seen:
            dropped[i] = ("exact", seen[key])
        else:
            seen[key] = i
    if near_threshold >= 1.0:
        return dropped
    lsh = MinHashLSH(threshold=near_threshold, num_perm=num_perm)
    for i, prompt in enumerate(prompts):
        if i in dropped:
            continue
        m = minhash(prompt, num_perm=num_perm, k=shingle)
        # LSH gives candidates; confirm with the true Jaccard so the threshold means what it says.
        candidates = (int(j) for j in lsh.query(m))
        matches = [j for j in candidates if jaccard(prompt, prompts[j], shingle) >= near_threshold]
        if matches:
            dropped[i] = ("near", min(matches))
        else:
            lsh.insert(str(i), m)
    return dropped
