#!/usr/bin/env bash
# Gradescope's set-up step (also run by the Dockerfile): install the pinned dependencies.
# On Gradescope and in Docker, CPU wheels of the pinned torch/torchvision are enough and far smaller.
set -euo pipefail
SOURCE=${AUTOGRADER_SOURCE:-/autograder/source}
# bubblewrap: the sandbox's namespace layer, where the container allows it (default Docker does not: the
# grader then says so and uses the separate-user layer).
apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-pip bubblewrap > /dev/null
# Ubuntu 24.04's pip refuses system-wide installs unless told; older pips ignore the variable.
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir \
    --extra-index-url https://download.pytorch.org/whl/cpu -r "$SOURCE/requirements.txt"
