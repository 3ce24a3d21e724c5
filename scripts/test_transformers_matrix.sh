#!/usr/bin/env bash
# CI's transformers matrix: the tests marked transformers_matrix (engine, methods, adapter, and the testbed's first
# 40 ScienceQA answers through the lmms-eval CLI) on the oldest supported transformers, the newest 4.x, a middle 5.x
# and the newest 5.x. Prints one result line per version and exits non-zero if any version fails.
#
# Each version runs in an overlay environment under .venv-matrix/ (created once, then reused): a venv whose .pth
# file appends the development environment's site-packages (torch, lmms-eval, ...), with only transformers and the
# packages that version needs at other versions installed into it, so they shadow the base ones. A version equal
# to the base environment's runs there directly. Each overlay also checks that installing this project keeps its
# transformers (`pip install --dry-run -e .[eval]` would install no other).
#
#   bash scripts/test_transformers_matrix.sh                 # all versions
#   bash scripts/test_transformers_matrix.sh 4.51.3 5.12.1   # some of them
set -uo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE_VENV:-.venv}
MATRIX=.venv-matrix
# What pip resolves for `transformers==X lmms-eval==0.7.3` next to the base environment, pinned so that CI installs
# the same every time. Keep the versions in step with TESTED_VERSIONS of himap_lmms/compat.py.
declare -A PINS=(
  [4.48.0]="transformers==4.48.0 tokenizers==0.21.4 huggingface_hub==0.36.2 datasets==5.0.1 fsspec==2026.6.0 sentence-transformers==5.7.0"
  [4.51.3]="transformers==4.51.3 tokenizers==0.21.4 huggingface_hub==0.36.2 datasets==5.0.1 fsspec==2026.6.0 sentence-transformers==5.7.0"
  [4.57.6]="transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 datasets==5.0.1 fsspec==2026.6.0 sentence-transformers==5.7.0"
  [5.12.1]="transformers==5.12.1 tokenizers==0.22.2 huggingface_hub==1.33.0"
  [5.24.0]="transformers==5.24.0 tokenizers==0.23.3 huggingface_hub==2.4.0"
)
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(4.48.0 4.57.6 5.12.1 5.24.0)
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

base_python="$BASE/bin/python"
[ -x "$base_python" ] || { echo "no base environment at $BASE (run scripts/setup_venv.sh first)" >&2; exit 2; }
base_version=$("$base_python" -c "import transformers; print(transformers.__version__)")
site_packages=$("$base_python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

# Echoes the python of VERSION's environment, creating its overlay when missing; fails on an unknown version.
environment() {
  local version=$1 overlay="$MATRIX/transformers-$1"
  if [ "$version" = "$base_version" ]; then echo "$base_python"; return; fi
  [ -n "${PINS[$version]:-}" ] || { echo "transformers $version has no pins in $0" >&2; return 1; }
  if [ ! -f "$overlay/.installed" ]; then
    rm -rf "$overlay"
    # No pip or setuptools of its own: the base environment's (seen through the .pth file) install into it.
    "$base_python" -m venv --without-pip "$overlay" || return 1
    local overlay_site
    overlay_site=$("$overlay/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "$(cd "$site_packages" && pwd)" > "$overlay_site/base-environment.pth"
    # shellcheck disable=SC2086  # the pins are words
    "$overlay/bin/python" -m pip install -q --no-deps ${PINS[$version]} >&2 || return 1
    # The tests call the lmms-eval command next to their python.
    printf '#!%s\nimport sys\nfrom lmms_eval.cli.dispatch import main\nsys.exit(main())\n' \
      "$(cd "$overlay/bin" && pwd)/python" > "$overlay/bin/lmms-eval"
    chmod +x "$overlay/bin/lmms-eval"
    touch "$overlay/.installed"
  fi
  echo "$overlay/bin/python"
}

# Fails when installing this project with its eval extra would move the environment's transformers.
keeps_transformers() {
  local python=$1 moved
  moved=$("$python" -m pip install -q --dry-run --no-index --no-build-isolation --report - -e ".[eval]" 2>/dev/null |
    "$python" -c "import json, sys; print(' '.join(i['metadata']['version'] for i in json.load(sys.stdin)['install'] if i['metadata']['name'] == 'transformers'))") ||
    { echo "pip could not resolve .[eval] here"; return 1; }
  [ -z "$moved" ] || { echo "pip install -e .[eval] would install transformers $moved"; return 1; }
}

# The result line of one version: setup, the install check, then the tests.
run_version() {
  local version=$1 started=$SECONDS log="$MATRIX/transformers-$1.log" python problem status summary
  python=$(environment "$version") || { echo "FAILED (could not set up its environment)"; return 1; }
  problem=$(keeps_transformers "$python") || { echo "FAILED ($problem)"; return 1; }
  "$python" -m pytest -q -p no:cacheprovider -m transformers_matrix tests > "$log" 2>&1
  status=$?
  summary=$(grep -E '[0-9]+ (passed|failed).* in ' "$log" | tail -1 | tr -d '=' | xargs)
  if [ $status -ne 0 ]; then
    echo "FAILED (${summary:-pytest exited $status}; see $log)"
    return 1
  fi
  echo "ok ($summary; $((SECONDS - started)) s with setup)"
}

mkdir -p "$MATRIX"
results=() failed=0
for version in "${VERSIONS[@]}"; do
  line=$(run_version "$version") || failed=1
  results+=("transformers $version: $line")
  echo "${results[-1]}"
done
echo "== transformers matrix"
printf '%s\n' "${results[@]}"
exit $failed
