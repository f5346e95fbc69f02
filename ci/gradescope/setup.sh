#!/usr/bin/env bash
# Gradescope autograder setup: runs once when the autograder image is built.
# Zip the kit's files together with this script and run_autograder (see docs/instructors.md):
#   the zip's root must hold setup.sh, run_autograder and the kit (pyproject.toml, grader/, reference/, ...).
set -euo pipefail
apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv
python3 -m venv /opt/grade
/opt/grade/bin/pip install --upgrade pip
# CPU wheels keep the image small; drop the index URL for a GPU image.
/opt/grade/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
/opt/grade/bin/pip install /autograder/source
