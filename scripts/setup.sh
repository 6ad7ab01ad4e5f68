#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine that has
# only the Rust toolchain (rustup), gcc and python3. Run it as root (or where
# sudo works). Idempotent and quiet: when everything is there it prints nothing
# and returns at once; otherwise it says what it installs (on stderr).
#
#   Debian packages   iproute2 (`ip netns`: the network-lab tests), tcpdump (the
#                     scanner-confinement test), chromium + chromium-driver (the
#                     dashboard's browser test), redis-server (the Redis tests),
#                     curl (the gateway tests), g++ (the llama.cpp build),
#                     systemd (`systemd-analyze verify` checks contrib/'s units),
#                     python3-venv / python3-pip
#   rustup            the rustfmt and clippy components (scripts/test.sh runs both)
#   llama.cpp         scripts/install-llama-cpp.sh: llama-server, rpc-server and a
#                     small test model, built and cached in ~/.cache/synapticllamas
#   Python venv       $SYNAPTICLLAMAS_PYENV (default ~/.cache/synapticllamas/pyenv)
#                     with the official `ollama`, `openai` and `anthropic` client
#                     libraries from PyPI, for tests that talk to this program the
#                     way those clients do (tests/cli/support.rs: `pyenv_python`)
#
# Environment: SYNAPTICLLAMAS_CACHE (cache dir), SYNAPTICLLAMAS_PYENV (venv dir).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }
die() {
    printf 'setup: error: %s\n' "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
# Run a command with its output kept aside; shown (the last lines) only if it fails.
quietly() {
    local out
    out="$(mktemp "${TMPDIR:-/tmp}/setup.XXXXXX")"
    if "$@" >"$out" 2>&1; then
        rm -f "$out"
    else
        local rc=$?
        tail -n 30 "$out" >&2
        rm -f "$out"
        return "$rc"
    fi
}

CACHE="${SYNAPTICLLAMAS_CACHE:-$HOME/.cache/synapticllamas}"
PYENV="${SYNAPTICLLAMAS_PYENV:-$CACHE/pyenv}"
# Pinned so every machine tests against the same client libraries.
PY_PACKAGES=("ollama==0.6.3" "openai==3.57.0" "anthropic==2.17.0")

# ---- 1. Debian packages -----------------------------------------------------
need=()
have ip || need+=(iproute2)
have unshare || need+=(util-linux)
have tcpdump || need+=(tcpdump)
[[ -x /usr/bin/chromium ]] || need+=(chromium)
[[ -x /usr/bin/chromedriver ]] || need+=(chromium-driver)
have redis-server || need+=(redis-server)
have curl || need+=(curl)
have c++ || need+=(g++)
have python3 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if ((${#need[@]})); then
    sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        have sudo || die "installing ${need[*]} needs root (or sudo)"
        sudo=(sudo)
    fi
    have apt-get || die "no apt-get: install ${need[*]} by hand"
    log "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    quietly "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
    quietly "${sudo[@]}" apt-get install -y -qq "${need[@]}" || die "apt-get install ${need[*]} failed"
fi
# Optional: without it the unit-file test says it skipped, so a machine where
# the package will not install still gets set up.
if ! have systemd-analyze && have apt-get; then
    sudo=()
    [[ "$(id -u)" -ne 0 ]] && have sudo && sudo=(sudo)
    log "installing Debian package: systemd (for systemd-analyze)"
    export DEBIAN_FRONTEND=noninteractive
    { quietly "${sudo[@]}" apt-get update -qq && quietly "${sudo[@]}" apt-get install -y -qq systemd; } ||
        log "could not install systemd: the contrib/ unit-file test will be skipped"
fi

# ---- 2. rustfmt and clippy ---------------------------------------------------
for c in fmt clippy; do
    if ! cargo "$c" --version >/dev/null 2>&1; then
        component=$([[ $c == fmt ]] && echo rustfmt || echo clippy)
        have rustup || die "cargo $c is missing and there is no rustup to add $component"
        log "adding the rustup component $component"
        quietly rustup component add "$component" || die "rustup component add $component failed"
    fi
done

# ---- 3. llama.cpp binaries and the test model --------------------------------
# Prints three paths on stdout (not needed here); progress only when it builds.
bash scripts/install-llama-cpp.sh >/dev/null

# ---- 4. The Python venv with the official client libraries --------------------
installed() {
    "$PYENV/bin/python" - "$@" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    if version(name) != want:
        sys.exit(1)
PY
}
if ! installed "${PY_PACKAGES[@]}"; then
    log "creating $PYENV with ${PY_PACKAGES[*]} (PyPI)"
    mkdir -p "$(dirname "$PYENV")"
    quietly python3 -m venv "$PYENV" || die "python3 -m venv $PYENV failed (apt-get install python3-venv)"
    quietly "$PYENV/bin/python" -m pip install --disable-pip-version-check "${PY_PACKAGES[@]}" ||
        die "pip install ${PY_PACKAGES[*]} failed (is PyPI reachable?)"
    installed "${PY_PACKAGES[@]}" || die "$PYENV lacks ${PY_PACKAGES[*]} after installing them"
fi
