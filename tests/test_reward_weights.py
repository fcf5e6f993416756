"""metrics.core.weights: where reward (and suite) files are found offline, and their fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_cache import isolated, snapshot
from metrics.core import weights as w

SRC = w.Source("owner/model", ("config.json", "weights.bin"))


@pytest.fixture(autouse=True)
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    return isolated(tmp_path, monkeypatch, w.WEIGHTS_ENV, "local")


def put(folder: Path, *names: str, content: bytes = b"x") -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def test_the_local_root_comes_before_the_hugging_face_cache(roots: dict[str, Path]):
    snap = put(snapshot(roots["cache"], "owner/model"), "config.json", "weights.bin")
    assert w.find(SRC) == snap
    local = put(roots["root"] / "owner/model", "config.json", "weights.bin")
    assert w.find(SRC) == local


def test_the_cache_snapshot_is_the_one_refs_main_names(roots: dict[str, Path]):
    put(snapshot(roots["cache"], "owner/model", commit="old"), "config.json", "weights.bin")
    new = snapshot(roots["cache"], "owner/model", commit="new")
    assert w.find(SRC) is None  # refs/main now points at a snapshot without the files
    put(new, "config.json", "weights.bin")
    assert w.find(SRC) == new


def test_files_of_one_source_are_never_mixed_across_places(roots: dict[str, Path]):
    put(roots["root"] / "owner/model", "config.json")
    put(snapshot(roots["cache"], "owner/model"), "weights.bin")
    assert w.find(SRC) is None
    # the most complete place decides what is reported missing
    assert w.missing(SRC) == ["owner/model/weights.bin"]


def test_an_explicit_folder_excludes_every_other_place(tmp_path: Path, roots: dict[str, Path]):
    put(roots["root"] / "owner/model", "config.json", "weights.bin")
    assert w.find(SRC, tmp_path / "mine") is None
    assert w.missing(SRC, tmp_path / "mine") == ["owner/model/config.json", "owner/model/weights.bin"]
    assert w.find(SRC, roots["root"]) == roots["root"] / "owner/model"


def test_aliases_and_dataset_globs(roots: dict[str, Path]):
    bert = w.Source("google-bert/bert-base-uncased", ("vocab.txt",), aliases=("bert-base-uncased",))
    snap = put(snapshot(roots["cache"], "bert-base-uncased"), "vocab.txt")
    assert w.find(bert) == snap
    data = w.Source("someone/prompts", ("data/test_unique-*.parquet",), repo_type="dataset")
    assert w.find(data) is None
    snap = put(snapshot(roots["cache"], "someone/prompts", kind="dataset"),
               "data/test_unique-00000-of-00001-f00.parquet")
    assert w.find(data) == snap


def test_fetch_commands():
    root = Path("/r")
    assert SRC.fetch_command(root) == "hf download owner/model config.json weights.bin"
    assert (SRC.fetch_command(root, local=True)
            == "hf download owner/model config.json weights.bin --local-dir '/r/owner/model'")
    data = w.Source("someone/prompts", ("data/test-*.parquet",), repo_type="dataset")
    assert data.fetch_command(root) == "hf download someone/prompts --repo-type dataset --include 'data/test-*.parquet'"
    web = w.Source("someone/site", ("a.pth",), urls=("https://example.org/a.pth",))
    assert web.fetch_command(root) == "curl -L --create-dirs -o '/r/someone/site/a.pth' 'https://example.org/a.pth'"
    assert "hf download" in w.fetch_hint([SRC]) and w.WEIGHTS_ENV in w.fetch_hint([SRC])


def test_fingerprint_follows_content_not_names(tmp_path: Path):
    a, b, c = put(tmp_path, "a", "b", content=b"same") / "a", tmp_path / "b", put(tmp_path, "c", content=b"other") / "c"
    assert w.fingerprint([a]) == w.fingerprint([b]) != w.fingerprint([c])
    assert w.fingerprint([a, c]) != w.fingerprint([c, a])
    big = bytearray(3 * w.HEAD)
    (tmp_path / "big").write_bytes(bytes(big))
    before = w.fingerprint([tmp_path / "big"])
    big[-1] = 1  # large files: size, first and last MiB
    (tmp_path / "big").write_bytes(bytes(big))
    assert w.fingerprint([tmp_path / "big"]) != before
