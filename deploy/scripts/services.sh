#!/usr/bin/env bash
# Real backing services for tests and local runs: Kafka, MariaDB, Redis.
#
# Usage:
#   services.sh up       start all three (installing what is missing); idempotent
#   services.sh down     stop all three
#   services.sh status   show each one
#   services.sh env      print the exports that point the tests at them:
#                          eval "$(deploy/scripts/services.sh env)"
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[services] %s\n' "$*" >&2; }

# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

# One apt transaction for everything missing is much faster on a fresh machine than
# three separate ones from the per-service scripts (which still check on their own).
preinstall() {
  ensure_pkgs java:openjdk-17-jre-headless mvn:maven kcat:kcat \
    mariadbd:mariadb-server mariadb:mariadb-client \
    redis-server:redis-server redis-cli:redis-tools
}

up() {
  local t0=$SECONDS
  preinstall
  "$SCRIPT_DIR/kafka.sh" start
  "$SCRIPT_DIR/mariadb.sh" start
  "$SCRIPT_DIR/redis.sh" start
  log "all services up in $((SECONDS - t0))s"
}

# Stops every service even if one of them fails to stop, then reports failure.
down() {
  local rc=0
  "$SCRIPT_DIR/redis.sh" stop || rc=1
  "$SCRIPT_DIR/mariadb.sh" stop || rc=1
  "$SCRIPT_DIR/kafka.sh" stop || rc=1
  return "$rc"
}

status() {
  local rc=0
  "$SCRIPT_DIR/kafka.sh" status || rc=$?
  "$SCRIPT_DIR/mariadb.sh" status || rc=$?
  "$SCRIPT_DIR/redis.sh" status || rc=$?
  return "$rc"
}

env_exports() {
  cat <<'EOF'
export EPRO_TEST_KAFKA_BROKERS=127.0.0.1:9092
export EPRO_TEST_MYSQL_DSN='epro:epro@tcp(127.0.0.1:3306)/'
export EPRO_TEST_REDIS_ADDR=127.0.0.1:6379
EOF
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_exports ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
