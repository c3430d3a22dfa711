"""Pushing an adapter: tested at the true boundary with a fake `HfApi` that returns
the shapes the real client returns (RepoUrl, CommitInfo)."""

from __future__ import annotations

from fnmatch import fnmatch

import pytest
from huggingface_hub import CommitInfo, RepoUrl

from scripts import push_adapter as push_cli
from train import hub
from train.hub import PushError, push_adapter


class FakeHfApi:
    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, repo_type=None, private=False, exist_ok=False):
        FakeHfApi.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, repo_id, folder_path, repo_type=None, commit_message=None, ignore_patterns=None):
        FakeHfApi.calls.append(("upload_folder", repo_id, folder_path, ignore_patterns))
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/abc123",
            commit_message=commit_message,
            commit_description="",
            oid="abc123",
        )


@pytest.fixture
def adapter_dir(tmp_path):
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "checkpoint-10").mkdir()
    return tmp_path


@pytest.fixture(autouse=True)
def fake_hub(monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)


def test_push_creates_repo_and_uploads_without_checkpoints(adapter_dir):
    url = push_adapter(adapter_dir, "me/decomposer", private=True)
    assert url == "https://huggingface.co/me/decomposer/commit/abc123"
    assert FakeHfApi.calls[0] == ("create_repo", "me/decomposer", "model", True, True)
    kind, repo, folder, ignore = FakeHfApi.calls[1]
    assert (kind, repo, folder) == ("upload_folder", "me/decomposer", str(adapter_dir))
    # checkpoints, optimizer states and training arguments stay local
    assert {"checkpoint-*", "checkpoint-*/**", "*.pt", "training_args.bin"} <= set(ignore)
    assert not any(fnmatch(name, pattern) for name in ("adapter_model.safetensors", "README.md") for pattern in ignore)


def test_push_refuses_a_folder_that_is_not_an_adapter(tmp_path):
    with pytest.raises(PushError, match="adapter_model.safetensors"):
        push_adapter(tmp_path, "me/x")
    assert FakeHfApi.calls == []


def test_push_cli(adapter_dir, capsys):
    assert push_cli.main(["--adapter", str(adapter_dir), "--repo-id", "me/decomposer"]) == 0
    assert capsys.readouterr().out.strip().endswith("/commit/abc123")
    assert push_cli.main(["--adapter", str(adapter_dir / "checkpoint-10"), "--repo-id", "me/x"]) == 2
