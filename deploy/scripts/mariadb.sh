#!/usr/bin/env bash
# MariaDB (Debian's mariadb-server, standing in for MySQL 8) on 127.0.0.1:3306 with a
# private datadir, started directly because these machines have no init system.
#
# Usage: mariadb.sh start|stop|status|logs
#
# After start: user epro/epro with all privileges on *.* (tests create their own
# databases) and an empty database `epro`.
#
# Environment:
#   EPRO_STATE_DIR   state root (default: <repo>/.run); MariaDB uses <state>/mariadb
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
STATE_ROOT="${EPRO_STATE_DIR:-$REPO_ROOT/.run}"
STATE="$STATE_ROOT/mariadb"
DATA_DIR="$STATE/data"
PIDFILE="$STATE/mariadb.pid"
SOCKET="$STATE/mysqld.sock"
CNF="$STATE/my.cnf"
ERROR_LOG="$STATE/error.log"
CONSOLE_LOG="$STATE/console.log"

HOST=127.0.0.1
PORT=3306
READY_TIMEOUT=60
STOP_TIMEOUT=60
RUN_USER="$(id -un)"

log() { printf '[mariadb] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

# Binaries live in /usr/sbin, which a non-login PATH may lack.
find_bin() {
  local name
  for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
    if [ -x "/usr/sbin/$name" ]; then echo "/usr/sbin/$name"; return 0; fi
  done
  return 1
}

is_running() {
  local pid cmdline; pid="$(read_pid)"
  [ -n "$pid" ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *"$CNF"* ]]
}

admin() { "$(find_bin mariadb-admin mysqladmin)" --no-defaults --socket="$SOCKET" -uroot "$@"; }
client() { "$(find_bin mariadb mysql)" --no-defaults --socket="$SOCKET" -uroot "$@"; }

ping_ok() { admin --connect-timeout=2 ping >/dev/null 2>&1; }

# Over TCP as epro, which is what the tests use; proves a foreign server is usable too.
tcp_epro_ok() {
  "$(find_bin mariadb mysql)" --no-defaults --protocol=tcp -h "$HOST" -P "$PORT" \
    -uepro -pepro --connect-timeout=3 -e 'SELECT 1' >/dev/null 2>&1
}

write_config() {
  mkdir -p "$DATA_DIR"
  cat >"$CNF" <<EOF
[mysqld]
user=$RUN_USER
datadir=$DATA_DIR
socket=$SOCKET
pid-file=$PIDFILE
log-error=$ERROR_LOG
port=$PORT
bind-address=$HOST
skip-name-resolve
# Durable commits, so behaviour and timings match production.
innodb_flush_log_at_trx_commit=1
character-set-server=utf8mb4
collation-server=utf8mb4_unicode_ci
innodb_buffer_pool_size=512M
innodb_log_file_size=256M
# Load tests open many pools at once.
max_connections=1000
max_allowed_packet=64M
EOF
}

print_logs() {
  log "---- last lines of $ERROR_LOG ----"
  tail -n 40 "$ERROR_LOG" >&2 2>/dev/null || true
  log "---- last lines of $CONSOLE_LOG ----"
  tail -n 20 "$CONSOLE_LOG" >&2 2>/dev/null || true
}

install_db() {
  if [ -d "$DATA_DIR/mysql" ]; then
    return 0
  fi
  log "initialising datadir $DATA_DIR"
  # Password-less root on the private socket only (the server binds to loopback), so
  # bootstrap works for any OS user, not only for root via unix_socket auth.
  "$(find_bin mariadb-install-db mysql_install_db)" --defaults-file="$CNF" \
    --auth-root-authentication-method=normal --skip-test-db \
    >>"$CONSOLE_LOG" 2>&1 || { print_logs; die "mariadb-install-db failed"; }
}

bootstrap_sql() {
  client <<'EOF'
CREATE USER IF NOT EXISTS 'epro'@'%' IDENTIFIED BY 'epro';
CREATE USER IF NOT EXISTS 'epro'@'localhost' IDENTIFIED BY 'epro';
GRANT ALL PRIVILEGES ON *.* TO 'epro'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'epro'@'localhost' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS epro CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
FLUSH PRIVILEGES;
EOF
}

start() {
  local spawned=""
  mkdir -p "$STATE"
  if is_running && ping_ok; then
    bootstrap_sql
    log "already running (pid $(read_pid))"
    return 0
  fi
  if ! is_running; then
    ensure_pkgs mariadbd:mariadb-server mariadb:mariadb-client
    if port_open "$PORT"; then
      # Another checkout may already serve the port; reuse it if the epro account works.
      if tcp_epro_ok; then
        log "WARNING: $HOST:$PORT is served by a process not started from $STATE; using it as is"
        return 0
      fi
      die "port $PORT is in use by something this script did not start (and epro/epro cannot log in)"
    fi
    rm -f "$PIDFILE" "$SOCKET"
    write_config
    install_db
    log "starting mariadbd on $HOST:$PORT (log: $ERROR_LOG)"
    # setsid keeps a Ctrl-C on the caller from reaching the server; mariadbd writes
    # the same PID to pid-file itself once it is up.
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PIDFILE" \
      "$(find_bin mariadbd mysqld)" --defaults-file="$CNF" \
      >>"$CONSOLE_LOG" 2>&1 </dev/null 9>&- &
    spawned=$!
  fi
  local deadline=$((SECONDS + READY_TIMEOUT))
  until ping_ok; do
    # The pid file is briefly empty while mariadbd rewrites it at start-up, so the process this call spawned
    # (setsid execs it in place) is the one asked first.
    if ! { [ -n "$spawned" ] && kill -0 "$spawned" 2>/dev/null; } && ! is_running; then
      print_logs
      die "mariadbd exited during startup"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      print_logs
      die "mariadbd not answering after ${READY_TIMEOUT}s"
    fi
    sleep 0.5
  done
  bootstrap_sql
  tcp_epro_ok || { print_logs; die "epro cannot log in over TCP"; }
  log "ready (pid $(read_pid))"
}

stop() {
  if ! is_running; then
    log "not running"
    return 0
  fi
  local pid; pid="$(read_pid)"
  log "stopping pid $pid"
  admin shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    log "still alive after ${STOP_TIMEOUT}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$PIDFILE"
  log "stopped"
}

status() {
  if is_running; then
    if ping_ok; then
      echo "mariadb: running (pid $(read_pid)) on $HOST:$PORT"
    else
      echo "mariadb: process running (pid $(read_pid)) but not answering ping"
    fi
    return 0
  fi
  echo "mariadb: not running"
  return 3
}

case "${1:-}" in
  start) take_lock; start ;;
  stop) take_lock; stop ;;
  status) status ;;
  logs) print_logs ;;
  *) echo "usage: $0 start|stop|status|logs" >&2; exit 2 ;;
esac
