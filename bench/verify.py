"""``bench verify``: every file of a results folder checked against the sha256 recorded when it was written.

- images: each row of the store's ``images`` table, its file against ``images.sha256``;
- checkpoints: each trained artifact folder under ``checkpoints/`` against its ``manifest.json``;
- cache: each encoded-data entry under ``cache/`` against its ``.sha256`` sidecar;
- tiny worlds: each folder under ``models/`` and each shipped world, with the tiny world's own check
  (its manifest).

Temporary files and folders (``*.tmp``, a world's ``*.building``) are what a running or killed
process is writing: not results, not checked. What is damaged is repaired by the next ``bench run``
that uses it (images drawn again, checkpoints trained again, cache entries computed again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench import integrity

SINGULAR = {"images": "image", "checkpoints": "checkpoint", "cache entries": "cache entry",
            "tiny worlds": "tiny world"}


@dataclass
class Verified:
    results: Path
    checked: dict[str, int] = field(default_factory=dict)  # kind -> how many were checked
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (path, what is wrong)

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {kind if n != 1 else SINGULAR[kind]}" for kind, n in self.checked.items())
        verdict = f"{len(self.damaged)} damaged" if self.damaged else "nothing damaged"
        return f"checked {kinds} in {self.results}: {verdict}"


def _finished(folder: Path) -> list[Path]:
    """The folders and files under ``folder`` that are not being (or were never finished being) written."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.endswith((".tmp", ".building", ".lock")))


def check(db: Path) -> Verified:
    """Check the results folder of the store ``db`` (which must exist)."""
    from bench.store import Store, StoreError
    from bench.tiny import prepare

    db = Path(db).absolute()
    out = Verified(db.parent)
    try:
        store = Store(db, read_only=True)
        out.checked["images"] = store.counts()["images"]
        bad = store.damaged_images()
        out.damaged += [(str(store.root / path), f"{problem} (image {image_id} of run {run_id})")
                        for path, problem, image_id, run_id in zip(bad["path"], bad["problem"], bad["image_id"],
                                                                   bad["run_id"])]
    except StoreError as e:  # the store file itself cannot be read
        out.checked["images"] = 0
        out.damaged.append((str(db), f"the store cannot be read: {e}"))

    artifacts = [p for p in _finished(out.results / "checkpoints") if p.is_dir()]
    out.checked["checkpoints"] = len(artifacts)
    for folder in artifacts:
        out.damaged += [(str(path), why) for path, why in integrity.manifest_problems(folder)]

    entries = [p for p in _finished(out.results / "cache") if p.suffix == ".safetensors"]
    out.checked["cache entries"] = len(entries)
    for entry in entries:
        why = integrity.sidecar_problem(entry)
        if why is not None:
            out.damaged.append((str(entry), why))

    # The worlds built here, and the shipped ones every tiny run reads.
    worlds = [p for p in _finished(out.results / "models") if p.is_dir()] + _finished(prepare.SHIPPED)
    out.checked["tiny worlds"] = len(worlds)
    for world in worlds:
        why = prepare.verify(world)
        if why is not None:
            out.damaged.append((str(world), why))
    return out
