# Shared by scripts/test, scripts/bench and scripts/soak: the Python tool venv, free ports,
# waiting for a server, and stopping every started process on exit (also on failure).
# Source it after `cd` to the repository root; it sets $root, $venv, $work and $pids.

root=$(pwd)
venv="${TEST_VENV:-$root/.venv}"
work=$(mktemp -d "${TMPDIR:-/tmp}/controltower.XXXXXX")
pids=()
# Shell commands cleanup runs after stopping $pids (e.g. removing a network interface).
exit_commands=()

# Each step also says how long the run has taken and how much disk is left (a CI machine once
# ran out of it half-way).
step() {
  local free
  free=$(df -h --output=avail . 2>/dev/null | tail -n 1 | tr -d ' ')
  printf '\n==> %s   (%dm%02ds in, disk free: %s)\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)) "${free:-?}"
}

cleanup() {
  local status=$?
  # A failed run on the real control plane: the last words of its parts, before they go.
  if [ "$status" != 0 ] && [ -d "$work/controlplane" ]; then
    for log in "$work"/controlplane/{out.log,testbed.log,kube-controller-manager.log}; do
      [ -s "$log" ] && { echo "--- last lines of $log"; tail -n 15 "$log"; } >&2
    done
  fi
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for command in "${exit_commands[@]}"; do
    eval "$command" || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
  exit "$status"
}
# Interrupted or terminated (a cancelled CI job), the run fails with the signal's status;
# cleanup then runs on the way out. (A trap running cleanup for INT/TERM itself would exit with
# the status of the last command, often 0.)
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

# start_moto: moto (scripts/moto-server.py: ELBv2 with target-health states) in the background
# on a free port; sets $moto_endpoint.
start_moto() {
  local port
  port=$(free_port)
  "$venv/bin/python" scripts/moto-server.py -H 127.0.0.1 -p "$port" >"$work/moto-$port.log" 2>&1 &
  pids+=($!)
  wait_for_port moto "$port" "${pids[-1]}" "$work/moto-$port.log"
  moto_endpoint="http://127.0.0.1:$port"
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

# wait_for_line NAME FILE PATTERN PID SECONDS: waits until FILE has a line matching PATTERN.
wait_for_line() {
  local deadline=$((SECONDS + $5))
  while [ $SECONDS -lt $deadline ]; do
    grep -q -- "$3" "$2" 2>/dev/null && return 0
    if ! kill -0 "$4" 2>/dev/null; then
      echo "$1 exited before it was ready; its log:" >&2
      tail -n 40 "$2" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "$1 was not ready within $5 s; its log:" >&2
  tail -n 40 "$2" >&2
  return 1
}

# build_control_plane_async: starts building the test control plane (Kubernetes from the Go
# module proxy, cached between runs) in the background; control_plane_bin waits for it and sets
# $bin to the directory of its binaries.
build_control_plane_async() {
  testbed/controlplane/build.sh >"$work/controlplane-bin" 2>"$work/controlplane-build.log" &
  control_plane_build=$!
  pids+=($control_plane_build)
}

control_plane_bin() {
  # Not in a subshell ($(…)): `wait` there fails for a build still running.
  if ! wait "$control_plane_build"; then
    echo "building the test control plane failed:" >&2
    tail -n 40 "$work/controlplane-build.log" >&2
    return 1
  fi
  bin=$(tail -n 1 "$work/controlplane-bin")
}

# start_control_plane BIN_DIR [FLAGS…]: etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler on free loopback ports; sets $control_plane (its directory: admin.kubeconfig,
# pki/, logs).
start_control_plane() {
  local bin=$1
  shift
  control_plane="$work/controlplane"
  mkdir -p "$control_plane"
  "$bin/controlplane" -bin-dir "$bin" -dir "$control_plane" "$@" >"$control_plane/out.log" 2>&1 &
  pids+=($!)
  wait_for_line "the test control plane" "$control_plane/out.log" '^ready' "${pids[-1]}" 240
}

# start_lb_standin MOTO_ENDPOINT [FLAGS…]: the testbed (target/debug/testbed) on the control
# plane started by start_control_plane, with moto at MOTO_ENDPOINT: the load-balancer stand-in
# alone (pods run on a real kubelet), or with FLAGS more (start_testbed).
start_lb_standin() {
  target/debug/testbed --kubeconfig "$control_plane/admin.kubeconfig" --pki "$control_plane/pki" \
    --moto "$@" >"$control_plane/testbed.out" 2>"$control_plane/testbed.log" &
  pids+=($!)
  wait_for_line "the testbed" "$control_plane/testbed.out" '^ready' "${pids[-1]}" 60
}

# start_testbed BIN_DIR MOTO_ENDPOINT: the same with the node agent, running kubectl images
# with BIN_DIR/kubectl.
start_testbed() {
  start_lb_standin "$2" --node testbed --kubectl "$1/kubectl"
}

# start_suites ENV… -- ARGS… -- TEST…: builds the named integration-test binaries of the
# workspace and starts them all in the background, each with the variables ENV (NAME=value)
# and the test-harness arguments ARGS, each one's output kept apart; wait_suites waits for
# them, prints each one's result (a failed one's whole output) and fails if any failed.
start_suites() {
  local env=() args=() selectors=() name bin
  while [ "$1" != "--" ]; do env+=("$1"); shift; done
  shift
  while [ "$1" != "--" ]; do args+=("$1"); shift; done
  shift
  suite_tests=("$@")
  suite_names=()
  suite_pids=()
  for name in "${suite_tests[@]}"; do selectors+=(--test "$name"); done
  local bins
  bins=$(cargo test --workspace --locked --no-run "${selectors[@]}" --message-format=json \
    | "$venv/bin/python" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
  while read -r name bin; do
    env "${env[@]}" "$bin" "${args[@]}" >"$work/suite-$name.log" 2>&1 &
    suite_names+=("$name")
    suite_pids+=($!)
    pids+=($!)
  done <<<"$bins"
  [ "${#suite_names[@]}" -eq "${#suite_tests[@]}" ] || { echo "expected test binaries ${suite_tests[*]}, built ${suite_names[*]}" >&2; return 1; }
}

wait_suites() {
  local i status=0
  for i in "${!suite_names[@]}"; do
    if wait "${suite_pids[$i]}"; then
      echo "--- ${suite_names[$i]}: $(grep '^test result' "$work/suite-${suite_names[$i]}.log" | tail -n 1)"
    else
      status=1
      echo "--- ${suite_names[$i]} FAILED; its output:"
      cat "$work/suite-${suite_names[$i]}.log"
    fi
  done
  return "$status"
}
