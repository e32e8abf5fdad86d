#!/usr/bin/env bash
# Install roadnet-nightly.service and its timer with everything they assume: the roadnet user,
# the environment at /opt/roadnet/venv, the data and state directories, the settings file.
# Safe to rerun: existing users, directories and /etc/roadnet/nightly.env are kept; the
# environment and the units are brought up to date.
#
#   sudo deploy/systemd/install.sh                 # then: systemctl enable --now roadnet-nightly.timer
#   deploy/systemd/install.sh --dry-run            # print what would be done, change nothing
#   deploy/systemd/install.sh --root /tmp/stage    # stage the files under a directory (packaging,
#                                                  # tests): no user, no chown, no systemctl
# Options: --python PYTHON (interpreter of the new environment, default python3),
# --source SPEC (what pip installs, default this checkout), --no-pip (create the environment
# but install nothing into it).
set -euo pipefail

usage="usage: install.sh [--root DIR] [--dry-run] [--python PYTHON] [--source SPEC] [--no-pip]"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=""
dry_run=0
python=python3
source_spec=$(cd "$here/../.." && pwd)
pip=1
while [ $# -gt 0 ]; do
  case $1 in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --root=*) root=${1#--root=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    --python) python=${2:?--python needs an interpreter}; shift 2 ;;
    --source) source_spec=${2:?--source needs a path or requirement}; shift 2 ;;
    --no-pip) pip=0; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "install.sh: unknown option $1 ($usage)" >&2; exit 2 ;;
  esac
done
if [ -n "$root" ]; then
  root=$(realpath -m "$root")
fi

user=roadnet
venv=/opt/roadnet/venv
data=/srv/roadnet
state=/var/lib/roadnet
conf=/etc/roadnet
units=/etc/systemd/system

run() {
  # Print the command; run it unless --dry-run.
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [ "$dry_run" -eq 0 ]; then
    "$@"
  fi
}

owner=()
if [ -z "$root" ]; then
  if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (or --dry-run, or --root DIR to stage the files)" >&2
    exit 2
  fi
  if ! getent group "$user" > /dev/null; then
    run groupadd --system "$user"
  fi
  if ! id -u "$user" > /dev/null 2>&1; then
    run useradd --system --gid "$user" --home-dir "$state" --no-create-home \
      --shell /usr/sbin/nologin --comment "roadnet nightly" "$user"
  fi
  owner=(-o "$user" -g "$user")
else
  echo "install.sh: staging into $root (no user, no ownership, no systemctl)"
fi

# Directories: the environment's parent, data (inbox, outbox), state (the user's home), config.
run install -d -m 0755 "$root/opt/roadnet" "$root$units"
run install -d -m 0750 "${owner[@]}" "$root$data" "$root$data/inbox" "$root$data/outbox" \
  "$root$state"
run install -d -m 0750 "$root$conf"

# The environment: created once, then roadnet (re)installed into it.
if [ ! -x "$root$venv/bin/python" ]; then
  if [ "$pip" -eq 1 ]; then
    run "$python" -m venv "$root$venv"
  else
    run "$python" -m venv --without-pip "$root$venv"
  fi
fi
if [ "$pip" -eq 1 ]; then
  run "$root$venv/bin/python" -m pip install --quiet --upgrade "$source_spec"
fi

# Settings: installed once, never overwritten (they hold the operator's inbox and secrets).
if [ -e "$root$conf/nightly.env" ]; then
  echo "install.sh: keeping $root$conf/nightly.env"
else
  group=()
  [ -z "$root" ] && group=(-g "$user")
  run install -m 0640 "${group[@]}" "$here/nightly.env" "$root$conf/nightly.env"
fi

# Units: always the ones of this checkout.
for unit in roadnet-nightly.service roadnet-nightly.timer; do
  if cmp -s "$here/$unit" "$root$units/$unit"; then
    echo "install.sh: $root$units/$unit is up to date"
  else
    run install -m 0644 "$here/$unit" "$root$units/$unit"
  fi
done

if [ -z "$root" ]; then
  run systemctl daemon-reload
  echo "install.sh: done; edit $conf/nightly.env, then: systemctl enable --now roadnet-nightly.timer"
fi
