#!/usr/bin/env bash
# Developer entry point: creates .venv (Python >= 3.12) in the repo root when missing, then
#   bash scripts/dev.sh solve [ARGS]   runs `beckmann solve` (default: the built-in example into
#                                      runs/example, then `beckmann plot runs/example`)
#   bash scripts/dev.sh test [ARGS]    runs the whole suite serially, then under mpirun -n 2
#   bash scripts/dev.sh setup          only creates/updates .venv
#   bash scripts/dev.sh run CMD...     runs CMD with .venv/bin first on PATH
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"

find_python() {
    local cands=() c
    [ -n "${PYTHON:-}" ] && cands+=("$PYTHON")
    cands+=(python3.14 python3.13 python3.12 python3 python)
    # pyenv keeps interpreters that only resolve where a .python-version selects them
    for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 \
             /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
        [ -x "$c" ] && cands+=("$c")
    done
    for c in "${cands[@]}"; do
        if command -v "$c" >/dev/null 2>&1 &&
           "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

setup() {
    local stamp="$venv/.beckmann-installed" want
    want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
    if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$venv/bin/python" ]; then
        local py
        if ! py="$(find_python)"; then
            echo "beckmann needs Python >= 3.12 (DOLFINx wheels require it) and none was found." >&2
            echo "Install one (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12." >&2
            exit 1
        fi
        echo "creating .venv with $py ($("$py" --version 2>&1))" >&2
        "$py" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e ".[dev]"
    # byte-code of the editable package, as pip writes it for an ordinary install: a process
    # started with PYTHONDONTWRITEBYTECODE set would otherwise compile it at every start
    "$venv/bin/python" -m compileall -q -j 0 beckmann > /dev/null
    echo "$want" > "$stamp"
}

cmd="${1:-solve}"
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup ;;
    solve)
        setup
        if [ $# -eq 0 ]; then
            # the built-in example, then its pictures (runs/example/figures/*.png)
            "$venv/bin/beckmann" solve --out runs/example --overwrite
            exec "$venv/bin/beckmann" plot runs/example
        fi
        exec "$venv/bin/beckmann" solve "$@"
        ;;
    test)
        setup
        export PATH="$venv/bin:$PATH" OMP_NUM_THREADS=1
        "$venv/bin/python" -m pytest -q "$@" tests
        timeout 2400 "$venv/bin/mpirun" -n 2 "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" tests
        ;;
    run)
        setup
        export PATH="$venv/bin:$PATH"
        exec "$@"
        ;;
    *) echo "usage: bash scripts/dev.sh [setup|solve|test|run] [ARGS]" >&2; exit 2 ;;
esac
