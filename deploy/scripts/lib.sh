# Functions the service scripts share. Sourced after the script has defined log, die, STATE and PIDFILE
# (services.sh needs only log). HOST is the address port_open probes.

# apt is only reached for what is actually missing, so warm runs never touch it. Arguments are
# command:package pairs.
ensure_pkgs() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd="${pair%%:*}"; pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing ${missing[*]} via apt"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts would start system-wide daemons on the default ports, which
  # would then block the private instances started here; a policy-rc.d that
  # answers 101 tells them not to.
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [ ! -e "$policy" ] && [ -z "$sudo" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
  fi
  local apt="$sudo apt-get -o DPkg::Lock::Timeout=600" rc=0
  if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
    $apt update -q || rc=$?
  fi
  if [ "$rc" -eq 0 ] && ! $apt install -y -q --no-install-recommends "${missing[@]}"; then
    # A stale package index is the usual cause; refresh once and retry.
    rc=0
    $apt update -q && $apt install -y -q --no-install-recommends "${missing[@]}" || rc=$?
  fi
  [ -z "$added_policy" ] || rm -f "$policy"
  [ "$rc" -eq 0 ] || { echo "apt-get could not install ${missing[*]}" >&2; return "$rc"; }
}

# Serialises start and stop on one state dir: two callers (a developer's shell
# and a test runner, say) starting at once would otherwise race on the PID file
# and the port.
# The daemon must not inherit the lock's descriptor (9>&- where it is
# launched), or the lock would live as long as the daemon.
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w 600 9 || die "timed out waiting for $STATE/.lock"
}

read_pid() { [ -s "$PIDFILE" ] && cat "$PIDFILE" || true; }

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
