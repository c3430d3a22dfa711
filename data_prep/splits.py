"""Reading a split of schema records (`outputs/data/<name>/<split>.jsonl`) with errors that
name the file and line."""

from __future__ import annotations

from pathlib import Path

from data_prep.config import ConfigError
from data_prep.schema import Record


def load_split(path: str | Path) -> list[Record]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"split not found: {path} (build it with `python -m data_prep.build`)")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(Record.model_validate_json(line))
            except ValueError as err:
                raise ConfigError(f"{path}:{lineno}: not a schema record ({str(err).splitlines()[0]})") from None
    if not out:
        raise ConfigError(f"split {path} is empty")
    return out
