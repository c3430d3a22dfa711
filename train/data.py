"""Training data: the data pipeline's DatasetDict, built on demand, filtered by length.

Examples longer than `max_length` are dropped, not truncated: a truncated example
would teach the model to stop mid-JSON without its end-of-turn token."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import datasets

logger = logging.getLogger(__name__)
SFT_COLUMNS = ("prompt", "completion")


class TrainDataError(ValueError):
    pass


def load_sft_dataset(dataset_path: str, data_config: str | None) -> datasets.DatasetDict:
    path = Path(dataset_path)
    if not path.exists():
        if not data_config:
            raise TrainDataError(f"dataset_path {path} does not exist and no data_config is given to build it")
        from data_prep.config import load_data_config
        from data_prep.pipeline import build, write_outputs

        cfg = load_data_config(data_config)
        if Path(cfg.output_dir) / "sft" != path:
            raise TrainDataError(f"data_config {data_config} writes {cfg.output_dir}/sft, not dataset_path {path}")
        logger.info("building the data set from %s", data_config)
        write_outputs(build(cfg), cfg, cfg.output_dir)
    try:
        dsd = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise TrainDataError(f"{path} is not a saved DatasetDict ({err})") from None
    if not isinstance(dsd, datasets.DatasetDict):
        raise TrainDataError(f"{path} holds a single Dataset; expected a DatasetDict with train/validation splits")
    return dsd


def balance_negatives(ds: datasets.Dataset, positive_fraction: float | None, seed: int) -> datasets.Dataset:
    """Repeat negatives (a seeded draw without replacement first, then again) until the
    positives are at most `positive_fraction` of the split; shuffled. None: as is."""
    if positive_fraction is None:
        return ds
    if not 0.0 < positive_fraction < 1.0:
        raise TrainDataError(f"balance_positive_fraction must be in (0, 1), not {positive_fraction}")
    if "parallelizable" not in ds.column_names:
        raise TrainDataError("balancing needs the `parallelizable` column; rebuild the data set with data_prep.build")
    flags = ds["parallelizable"]
    pos = [i for i, f in enumerate(flags) if f]
    neg = [i for i, f in enumerate(flags) if not f]
    want_neg = round(len(pos) * (1 - positive_fraction) / positive_fraction)
    if not neg or want_neg <= len(neg):
        return ds
    rng = random.Random(seed)
    extra: list[int] = []
    while len(neg) + len(extra) < want_neg:
        draw = neg[:]
        rng.shuffle(draw)
        extra.extend(draw[: want_neg - len(neg) - len(extra)])
    order = pos + neg + extra
    rng.shuffle(order)
    logger.info("balanced: %d positives, %d negatives (%d repeated)", len(pos), len(neg) + len(extra), len(extra))
    return ds.select(order)


def parse_source_caps(text: str | None) -> dict[str, int]:
    caps: dict[str, int] = {}
    for part in filter(None, (text or "").split(",")):
        name, sep, value = part.strip().partition("=")
        if not sep or not name or not value.isdigit():
            raise TrainDataError(f"train_source_caps: expected SOURCE=N[,SOURCE=N...], got {part!r}")
        caps[name] = int(value)
    return caps


def cap_sources(ds: datasets.Dataset, caps: dict[str, int], seed: int) -> datasets.Dataset:
    """At most caps[source] examples of each capped source (a seeded draw); order kept."""
    if not caps:
        return ds
    if "source" not in ds.column_names:
        raise TrainDataError("train_source_caps needs the `source` column; rebuild the data set with data_prep.build")
    unknown = set(caps) - set(ds["source"])
    if unknown:
        raise TrainDataError(f"train_source_caps names sources not in the split: {sorted(unknown)}")
    rng = random.Random(seed)
    by_source: dict[str, list[int]] = {}
    for i, src in enumerate(ds["source"]):
        by_source.setdefault(src, []).append(i)
    keep: list[int] = []
    for src, idx in by_source.items():
        keep += sorted(rng.sample(idx, caps[src])) if src in caps and caps[src] < len(idx) else idx
    logger.info("source caps %s: %d of %d examples kept", caps, len(keep), len(ds))
    return ds.select(sorted(keep))


def select_split(
    dsd: datasets.DatasetDict,
    split: str,
    limit: int | None,
    positive_fraction: float | None = None,
    seed: int = 42,
    source_caps: dict[str, int] | None = None,
) -> datasets.Dataset:
    if split not in dsd:
        raise TrainDataError(f"split {split!r} not in the data set (has {list(dsd)})")
    ds = dsd[split]
    missing = set(SFT_COLUMNS) - set(ds.column_names)
    if missing:
        raise TrainDataError(f"split {split!r} lacks the columns {sorted(missing)}; rebuild it with data_prep.build")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    ds = cap_sources(ds, source_caps or {}, seed)
    ds = balance_negatives(ds, positive_fraction, seed)
    return ds.select_columns(list(SFT_COLUMNS))


def conversation_length(tokenizer, example: dict) -> int:
    ids = tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=True, return_dict=False)
    return len(ids)


def drop_long(ds: datasets.Dataset, tokenizer, max_length: int | None, split: str) -> datasets.Dataset:
    if max_length is None:
        return ds
    lengths = [conversation_length(tokenizer, ex) for ex in ds]
    keep = [i for i, n in enumerate(lengths) if n <= max_length]
    if len(keep) < len(ds):
        logger.warning(
            "%s: dropped %d of %d examples longer than max_length=%d tokens",
            split,
            len(ds) - len(keep),
            len(ds),
            max_length,
        )
    return ds.select(keep)
