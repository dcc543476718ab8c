# Shared by scripts/test, scripts/bench and scripts/soak: the Python tool venv, free ports,
# waiting for a server, and stopping every started process on exit (also on failure).
# Source it after `cd` to the repository root; it sets $root, $venv, $work and $pids.

root=$(pwd)
venv="${TEST_VENV:-$root/.venv}"
work=$(mktemp -d "${TMPDIR:-/tmp}/controltower.XXXXXX")
pids=()

# Each step also says how long the run has taken and how much disk is left (a CI machine once
# ran out of it half-way).
step() {
  local free
  free=$(df -h --output=avail . 2>/dev/null | tail -n 1 | tr -d ' ')
  printf '\n==> %s   (%dm%02ds in, disk free: %s)\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)) "${free:-?}"
}

cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT INT TERM

# Installs scripts/requirements-test.txt into the venv once (re-done when it changes).
ensure_venv() {
  local stamp
  stamp="$venv/.requirements-$(sha256sum scripts/requirements-test.txt | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
    touch "$stamp"
  fi
  export PATH="$venv/bin:$PATH"
  export SECANTUS_PYTHON="$venv/bin/python"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # name port pid log
  for _ in $(seq 1 300); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $2), 0.2)" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$3" 2>/dev/null; then
      echo "$1 exited before listening; its log:" >&2
      cat "$4" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$1 did not listen on port $2 within 30 s; its log:" >&2
  cat "$4" >&2
  return 1
}

# start_secantus PORT STORAGE [extra flags…]: SecantusDB in the background, pid in $pids.
start_secantus() {
  local port=$1 storage=$2
  shift 2
  "$venv/bin/python" -m secantus --host 127.0.0.1 --port "$port" --storage-path "$storage" \
    --log-level WARNING "$@" >>"$work/secantus-$port.log" 2>&1 &
  pids+=($!)
  wait_for_port SecantusDB "$port" "${pids[-1]}" "$work/secantus-$port.log"
}

# install_apt PACKAGE COMMAND: installs a Debian package when COMMAND is missing.
install_apt() {
  command -v "$2" >/dev/null && return 0
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$1" >/dev/null; }
  else
    echo "$2 is missing: sudo apt-get install $1" >&2
    return 1
  fi
}
