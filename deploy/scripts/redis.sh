#!/usr/bin/env bash
# Redis (Debian's redis-server) on 127.0.0.1:6379, daemonized, without persistence:
# it only holds the dedupe fast path, which the database backs.
#
# Usage: redis.sh start|stop|status|logs
#
# Environment:
#   EPRO_STATE_DIR   state root (default: <repo>/.run); Redis uses <state>/redis
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
STATE_ROOT="${EPRO_STATE_DIR:-$REPO_ROOT/.run}"
STATE="$STATE_ROOT/redis"
PIDFILE="$STATE/redis.pid"
LOGFILE="$STATE/redis.log"

HOST=127.0.0.1
PORT=6379
READY_TIMEOUT=30
STOP_TIMEOUT=30

log() { printf '[redis] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

is_running() {
  local pid cmdline; pid="$(read_pid)"
  [ -n "$pid" ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *redis-server* ]]
}

ping_ok() { [ "$(timeout 5 redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null)" = "PONG" ]; }

print_logs() {
  log "---- last lines of $LOGFILE ----"
  tail -n 40 "$LOGFILE" >&2 2>/dev/null || true
}

start() {
  mkdir -p "$STATE"
  if is_running && ping_ok; then
    log "already running (pid $(read_pid))"
    return 0
  fi
  if ! is_running; then
    ensure_pkgs redis-server:redis-server redis-cli:redis-tools
    if port_open "$PORT"; then
      if ping_ok; then
        log "WARNING: $HOST:$PORT is served by a process not started from $STATE; using it as is"
        return 0
      fi
      die "port $PORT is in use by something that does not answer PING"
    fi
    rm -f "$PIDFILE"
    log "starting redis-server on $HOST:$PORT (log: $LOGFILE)"
    redis-server --bind "$HOST" --port "$PORT" --protected-mode yes \
      --daemonize yes --pidfile "$PIDFILE" --logfile "$LOGFILE" --dir "$STATE" \
      --save '' --appendonly no 9>&- \
      || { print_logs; die "redis-server failed to start"; }
  fi
  local deadline=$((SECONDS + READY_TIMEOUT))
  until ping_ok; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      print_logs
      die "redis not answering PING after ${READY_TIMEOUT}s"
    fi
    sleep 0.2
  done
  # The daemon writes its pidfile just after it forks; wait for it so stop works.
  local i
  for i in $(seq 1 50); do is_running && break; sleep 0.1; done
  is_running || { print_logs; die "redis answers but left no pidfile at $PIDFILE"; }
  log "ready (pid $(read_pid))"
}

stop() {
  if ! is_running; then
    log "not running"
    return 0
  fi
  local pid; pid="$(read_pid)"
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
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
      echo "redis: running (pid $(read_pid)) on $HOST:$PORT"
    else
      echo "redis: process running (pid $(read_pid)) but not answering PING"
    fi
    return 0
  fi
  echo "redis: not running"
  return 3
}

case "${1:-}" in
  start) take_lock; start ;;
  stop) take_lock; stop ;;
  status) status ;;
  logs) print_logs ;;
  *) echo "usage: $0 start|stop|status|logs" >&2; exit 2 ;;
esac
