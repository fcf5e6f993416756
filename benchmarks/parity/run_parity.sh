#!/usr/bin/env bash
# Parity of the project's HPS v2.1 and ImageReward scorers with the official packages.
#
# Not part of the test suite: it builds the full-size official architectures (ViT-H-14, 986M
# parameters; BLIP ViT-L/16 + BERT-base, 447M) with random weights on the CPU, needs about 10 GB of
# memory, 6 GB of disk under $PARITY_WORK (freed at the end) and about 10 minutes on 2 cores.
#
#   . .venv/bin/activate && bash benchmarks/parity/run_parity.sh
#
# 1. A separate venv ($PARITY_VENV) gets hpsv2x 1.2.0 and image-reward 1.5 with --no-deps plus
#    their runtime needs (requirements-*.txt); it is created once and reused.
# 2. official.py (in that venv) writes random weights in the official file formats, images and
#    prompts, and scores them with the official code (monkeypatched there only: see its docstring).
# 3. ours.py (in the project's environment, the `python` on PATH) scores the same files with
#    metrics/hpsv21.py and metrics/imagereward.py and prints max |delta| per reward (goal <= 1e-4).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PARITY_VENV:-/tmp/diffusion-pref-bench-parity/venv}"
WORK="${PARITY_WORK:-/tmp/diffusion-pref-bench-parity/work}"
PROJECT_PY="${PROJECT_PYTHON:-python}"

"$PROJECT_PY" -c "import metrics.imagereward" 2>/dev/null || {
    echo "activate the project's environment first (python cannot import metrics)" >&2; exit 2; }

installed() {  # the four --no-deps packages are all there
    "$VENV/bin/python" -c "from importlib.metadata import version as v; [v(p) for p in
        ('image-reward', 'hpsv2x', 'fairscale', 'clip-anytorch')]" 2>/dev/null
}
if [ ! -x "$VENV/bin/python" ] || ! installed; then
    echo "== creating the parity venv $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$HERE/requirements-official.txt"
    "$VENV/bin/pip" install -q --no-deps -r "$HERE/requirements-official-nodeps.txt"
fi

rm -rf "$WORK" && mkdir -p "$WORK"
export HF_HUB_OFFLINE=1  # neither side may reach the hub
echo "== official packages"
"$VENV/bin/python" "$HERE/official.py" "$WORK"
echo "== this project"
status=0
"$PROJECT_PY" "$HERE/ours.py" "$WORK" || status=$?
[ -n "${PARITY_KEEP:-}" ] || rm -rf "$WORK/weights"  # about 6 GB of random weights; PARITY_KEEP=1 keeps them
exit $status
