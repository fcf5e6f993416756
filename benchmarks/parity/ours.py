"""Project side of the reward parity check; runs in the project's environment (see run_parity.sh).

Reads what official.py wrote under WORK (images, prompts, weights in the official file formats under
WORK/weights/<repo>/, official.json), scores the same pairs through the project's rewards, loaded
exactly as in a benchmark run but from the explicit weights folder WORK/weights, and prints the
largest absolute difference per reward. Exit status 1 when one exceeds the tolerance (1e-4).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.registry import REWARDS

TOLERANCE = 1e-4


def main() -> int:
    work = Path(sys.argv[1])
    torch.set_num_threads(2)
    official = json.loads((work / "official.json").read_text())
    failed = False
    print(f"{'reward':<12} {'pairs':>5} {'official range':>22} {'max |delta|':>12}  verdict  version")
    for rid in ("hpsv21", "imagereward"):
        pairs = official[rid]["pairs"]
        start = time.perf_counter()
        reward = REWARDS.get(rid)(work / "weights", "cpu").load()
        ours = reward.score([Image.open(work / "images" / n) for n, _ in pairs], [p for _, p in pairs])
        theirs = np.array(official[rid]["scores"])
        delta = float(np.abs(ours - theirs).max())
        ok = delta <= TOLERANCE
        failed |= not ok
        print(f"{rid:<12} {len(pairs):>5} {f'[{theirs.min():.5f}, {theirs.max():.5f}]':>22} {delta:>12.2e}  "
              f"{'ok' if ok else 'FAIL':<7}  {reward.version}   ({time.perf_counter() - start:.0f} s)")
        for (name, prompt), a, b in zip(pairs, theirs, ours):
            print(f"    {name:<18} {prompt[:40]!r:<44} official {a:+.6f}  ours {b:+.6f}")
    import open_clip
    import transformers

    print(f"official side: {official['versions']}")
    print(f"project side: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"open_clip {open_clip.__version__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
