#!/usr/bin/env bash
# setup.sh: installs what this project needs, then gets out of the way. Safe to run again.
#
#   bash setup.sh && python train.py        # the main job
#   bash setup.sh && python -m pytest       # the tests
#
# Python packages: torch is pinned (the release the project is tested with) and installed first,
# then requirements.txt, so that nothing there pulls another torch. On Linux, PyPI's torch 2.13.0
# is the CUDA 13 build: it pulls the nvidia-* CUDA libraries (several GB), which a GPU machine
# needs. Without a GPU, install the CPU build first and this script keeps it:
#   pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu System toolchains (the compilers and interpreters the
# reward runs, clang for LLVM IR, bubblewrap for the sandbox) are installed with apt-get when we
# are root (or have sudo); otherwise we print exactly what is missing and go on: the languages
# whose toolchain is missing are then skipped by name at run time.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import torch, numpy, tiktoken, transformers, pytest, matplotlib, pyarrow" 2>/dev/null \
   || { [ "$(uname -s)" = Linux ] && ! "$PYTHON" -c "import triton" 2>/dev/null; }; then
    echo "setup: installing Python packages"
    "$PYTHON" -m pip install -q torch==2.13.0
    "$PYTHON" -m pip install -q -r requirements.txt
fi

# command -> Debian package that provides it
declare -A PACKAGE=(
    [g++]=g++ [javac]=default-jdk-headless [node]=nodejs [php]=php-cli [rustc]=rustc
    [go]=golang-go [lua5.4]=lua5.4 [clang]=clang [bwrap]=bubblewrap
    [tsc]=node-typescript [mcs]=mono-mcs [mono]=mono-runtime [bc]=bc
)
# file -> Debian package: what the public benchmarks' harnesses have (benchmarks.py)
declare -A HARNESS=(
    [/usr/share/lua/5.4/luaunit.lua]=lua-unit [/usr/share/java/javatuples.jar]=libjavatuples-java
    [/usr/share/gocode/src/github.com/stretchr/testify]=golang-github-stretchr-testify-dev
    [/usr/include/boost/version.hpp]=libboost-dev [/usr/include/openssl/md5.h]=libssl-dev
    [/usr/lib/python3/dist-packages/numpy]=python3-numpy
)
missing=()
for cmd in "${!PACKAGE[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${PACKAGE[$cmd]}")
done
for file in "${!HARNESS[@]}"; do
    [ -e "$file" ] || missing+=("${HARNESS[$file]}")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && SUDO=sudo
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
        echo "setup: installing toolchains: ${missing[*]}"
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "setup: WARNING: missing toolchains, install them as root with:"
        echo "    apt-get install ${missing[*]}"
        echo "setup: going on without them (their languages are skipped, by name, at run time)"
    fi
fi
echo "setup: ready"
