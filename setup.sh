#!/usr/bin/env bash
# Gradescope's set-up step, and the Dockerfile's: install Python, bubblewrap and the pinned dependencies.
# Works on Ubuntu 22.04 (Gradescope's default base, Python 3.10), Ubuntu 24.04 and Debian 12.
# TORCH_INDEX: where torch comes from; by default PyTorch's CPU wheels (Gradescope has no GPU unless the
# course asks for one), empty for PyPI's CUDA build.
set -euo pipefail
SOURCE=${AUTOGRADER_SOURCE:-/autograder/source}
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
# bubblewrap: the sandbox's namespace layer, where the container allows it (default Docker does not: the
# grader then says so and uses the separate-user layer). passwd: useradd, for that layer's users.
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-pip bubblewrap passwd ca-certificates > /dev/null
# Certificate authorities put in /usr/local/share/ca-certificates (the Dockerfile's build-ca/) join the
# system bundle, which pip is told to use: Debian's and Ubuntu's pip otherwise trusts its own copy only.
update-ca-certificates > /dev/null 2>&1 || true
export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# Ubuntu 24.04's and Debian 12's pip refuse system-wide installs unless told; older pips ignore it.
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -r "$SOURCE/requirements.txt"
python3 -c 'import torch, torchvision, numpy; print("setup.sh: torch", torch.__version__, "CUDA build" if torch.version.cuda else "CPU build")'
# The users student code runs as and is killed from (grader/sandbox/users.py), made here so that grading
# needs no writable /etc; and what student code must never read (the reference data, the config, the
# grader: all of this folder) closed here, once: grading never changes modes, and refuses to start when it
# finds them open.
for user in grader-student grader-killer; do
    id -u "$user" > /dev/null 2>&1 || useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$user"
done
chmod 700 "$SOURCE"
