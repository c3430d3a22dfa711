"""Push an adapter folder to the Hugging Face Hub (the true external boundary: tests fake `HfApi`)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

# What a trained output folder holds that does not belong on the Hub.
IGNORE = ["checkpoint-*", "checkpoint-*/**", "*.pt", "*.pth", "runs/**", "training_args.bin", "*.tmp"]
REQUIRED = ("adapter_config.json", "adapter_model.safetensors")


class PushError(RuntimeError):
    pass


def push_adapter(
    adapter_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload parallel-decomposer LoRA adapter",
) -> str:
    """Create the repo if needed and upload the adapter, its tokenizer, generation config and card.
    Returns the commit URL."""
    adapter_dir = Path(adapter_dir)
    missing = [name for name in REQUIRED if not (adapter_dir / name).is_file()]
    if missing:
        raise PushError(f"{adapter_dir} is not a PEFT adapter folder (missing {', '.join(missing)})")
    if not (adapter_dir / "README.md").is_file():
        raise PushError(f"{adapter_dir} has no README.md model card; train/sft.py writes one")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(adapter_dir),
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=IGNORE,
    )
    return str(getattr(info, "commit_url", info))
