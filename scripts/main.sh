#!/usr/bin/env bash
# The README's main job: set up, then train and test ProtoNets on Omniglot 5-way 1-shot from the
# data embedded in the package (no download, no data directory needed). Extra arguments are
# passed to `manytask run` (e.g. `--quiet`, `train.episodes=100`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/manytask run omniglot/protonet-5w1s-quick "$@"
