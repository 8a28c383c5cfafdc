#!/usr/bin/env bash
# kinesis-posthog: one entry point for people, ECS and CI.
#
#   ./run.sh                          embedded local default: emulators, demo stream,
#                                     capture stand-in, one worker (Ctrl+C stops it all)
#   ./run.sh local [--records N] [--until-delivered]
#                                     the same with options: `python -m local demo`
#                                     (local/ is repository tooling, not installed)
#   ./run.sh properties/app.properties   one worker in the foreground, endpoints from the file
#   ./run.sh test [pytest args]       the whole test suite (what CI runs)
#   ./run.sh bench [--runs N] [--e2e] throughput of a shard process, and with --e2e of a
#                                     whole worker (`./run.sh bench --help`)
#   ./run.sh check|preview PROPS ...  validate settings / show the event a record becomes
#   ./run.sh redrive PROPS --from SOURCE [--to TARGET]
#                                     map dead letters again, deliver those that now map
#   ./run.sh setup                    only install what is missing (idempotent)
#
# Set-up is idempotent: a venv in .venv with this package and its pinned KCL jars
# (downloaded from Maven Central by amazon-kclpy's build), kinesis-mock from npm in
# .local/, and Java 17 from Debian's packages if no java is on PATH.
#
# RUN_SH_SETUP=production (set by the Dockerfile, for its build and at run time) keeps
# set-up to what a worker runs: Java and the venv with the package and its KCL jars; no
# dev tools, Node.js or kinesis-mock, so `test` and `local` are refused. Unset (or
# `full`), set-up installs everything, as CI needs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
LOCAL="$ROOT/.local"
KINESIS_LOCAL_VERSION="0.6.2"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export KINESIS_LOCAL_DIR="$LOCAL/node_modules/kinesis-local"
# Not KINESIS_POSTHOG_*: that prefix is reserved for settings overrides.
SETUP_PROFILE="${RUN_SH_SETUP:-full}"

say() { printf 'run.sh: %s\n' "$*" >&2; }

case "$SETUP_PROFILE" in
  full|production) ;;
  # 64: ExitStatus.USAGE in consumer/exits.py.
  *) say "RUN_SH_SETUP must be full or production, not '$SETUP_PROFILE'"; exit 64 ;;
esac

need_full_setup() {
  if [ "$SETUP_PROFILE" != full ]; then
    say "'$1' needs the dev tools and emulators, which RUN_SH_SETUP=$SETUP_PROFILE leaves out"
    exit 64
  fi
}

find_python() {
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  say "Python 3.11+ is required"; return 1
}

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing $* from Debian's packages"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  else
    say "please install: $*"; return 1
  fi
}

stamp_is() {  # stamp_is FILE HASH: FILE records an install from these sources
  [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}

install_package() {  # install_package SPEC: pip install -e, then say which build it made
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q -e "$1" >&2
  # pip shows no build output: say whether the hot path was compiled (consumer/hot_path.py).
  say "$("$VENV/bin/python" "$ROOT/consumer/hot_path.py" --describe)"
}

setup() {
  command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
  if [ "$SETUP_PROFILE" = full ]; then
    command -v node >/dev/null 2>&1 || apt_install nodejs npm
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$(find_python)" -m venv "$VENV"
  fi
  local full_stamp="$VENV/.installed" production_stamp="$VENV/.installed-production" want
  # What the install is made from (pyproject.toml, setup.py and the sources compiled in
  # place, consumer/hot_path.py): when any of it changes, install again, so compiled
  # modules never run older code than their source.
  want="$("$(find_python)" "$ROOT/consumer/hot_path.py" --stamp)"
  # Compiled files that no longer match their source (a pip install by hand, a checkout
  # of other sources): install again, whatever the stamp says.
  if ! "$(find_python)" "$ROOT/consumer/hot_path.py" --current; then
    rm -f "$full_stamp" "$production_stamp"
  fi
  if [ "$SETUP_PROFILE" = full ]; then
    if ! stamp_is "$full_stamp" "$want"; then
      say "installing the package, its KCL jars and the dev tools (first run: ~1-2 min)"
      install_package "$ROOT[dev]"
      echo "$want" > "$full_stamp"
    fi
  # A full install holds everything production needs.
  elif ! stamp_is "$full_stamp" "$want" && ! stamp_is "$production_stamp" "$want"; then
    say "installing the package and its KCL jars (production: no dev tools)"
    install_package "$ROOT"
    echo "$want" > "$production_stamp"
  fi
  if [ "$SETUP_PROFILE" = full ] && [ ! -f "$KINESIS_LOCAL_DIR/main.js" ]; then
    say "installing kinesis-mock (npm kinesis-local@$KINESIS_LOCAL_VERSION) into $LOCAL"
    mkdir -p "$LOCAL"
    npm install --prefix "$LOCAL" --no-audit --no-fund --silent "kinesis-local@$KINESIS_LOCAL_VERSION" >&2
  fi
}

command="${1:-local}"
case "$command" in
  setup)
    setup ;;
  test)
    shift; need_full_setup test; setup
    cd "$ROOT" && exec "$VENV/bin/python" -m pytest "$@" ;;
  bench)
    shift; need_full_setup bench; setup
    # scripts/ is repository tooling, not installed with the package: run it from here.
    cd "$ROOT" && exec "$VENV/bin/python" -m scripts.bench "$@" ;;
  local)
    [ $# -gt 0 ] && shift; need_full_setup local; setup
    # local/ is repository tooling, not installed with the package: run it from here.
    cd "$ROOT" && exec "$VENV/bin/python" -m local demo "$@" ;;
  check|preview|redrive|health)
    shift; setup
    exec "$VENV/bin/python" -m consumer "$command" "$@" ;;
  -h|--help|help)
    # The header comment, whatever its length: from line 2 to the first non-comment line.
    sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    if [ ! -f "$command" ]; then
      # 64: ExitStatus.USAGE in consumer/exits.py.
      say "no such properties file: $command (try ./run.sh --help)"; exit 64
    fi
    setup
    # `consumer run` validates the settings, then execs java: signals reach the daemon.
    exec "$VENV/bin/python" -m consumer run "$command" ;;
esac
