#!/usr/bin/env bash
# Real backing services for tests and local runs: Kafka, MariaDB, Redis.
#
# Usage:
#   services.sh up [--brokers N]     start Kafka, MariaDB and Redis (installing what is missing); idempotent.
#                                    Kafka is the single broker on 127.0.0.1:9092, or with --brokers 3 a
#                                    three-node KRaft cluster on 127.0.0.1:19092,19094,19096 (topics
#                                    replicated 3 times, min.insync.replicas=2). The two can run side by side.
#   services.sh down [--brokers N]   stop them (with --brokers N, the cluster rather than the single broker)
#   services.sh status [--brokers N] show each one
#   services.sh env                  print the exports that point the tests at them:
#                                      eval "$(deploy/scripts/services.sh env)"
#                                    EPRO_TEST_KAFKA_CLUSTER_BROKERS is among them while the cluster is up.
#   services.sh cluster up|down|status
#                                    the three-node cluster alone, leaving MariaDB and Redis as they are
#   services.sh node I start|stop|kill|pause|resume|status|pid
#                                    one node of the cluster (see kafka.sh): the fault tests' handle on it
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HOST=127.0.0.1
CLUSTER_NODES=3
CLUSTER_BASE_PORT="${EPRO_KAFKA_CLUSTER_BASE_PORT:-19092}"

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

# One apt transaction for everything missing is much faster on a fresh machine than
# three separate ones from the per-service scripts (which still check on their own).
preinstall() {
  ensure_pkgs java:openjdk-17-jre-headless mvn:maven kcat:kcat \
    mariadbd:mariadb-server mariadb:mariadb-client \
    redis-server:redis-server redis-cli:redis-tools
}

node() { "$SCRIPT_DIR/kafka.sh" --nodes "$CLUSTER_NODES" --node "$@"; }

cluster_brokers() {
  local i list=""
  for i in $(seq 1 "$CLUSTER_NODES"); do
    list="$list${list:+,}$HOST:$((CLUSTER_BASE_PORT + 2 * (i - 1)))"
  done
  echo "$list"
}

# cluster_up launches every node before waiting for any: a node answers only once a quorum of controllers
# is up. It then waits until metadata lists every broker, so that a topic created next gets all its replicas.
cluster_up() {
  local i
  for i in $(seq 1 "$CLUSTER_NODES"); do node "$i" launch; done
  for i in $(seq 1 "$CLUSTER_NODES"); do node "$i" wait; done
  local deadline=$((SECONDS + 60)) md n
  while :; do
    md="$(timeout 15 kcat -b "$(cluster_brokers)" -L -m 5 2>/dev/null || true)"
    n="$(grep -Ec '^ +broker [0-9]+ at ' <<<"$md" || true)"
    [ "$n" -ge "$CLUSTER_NODES" ] && break
    [ "$SECONDS" -lt "$deadline" ] || die "metadata lists $n of $CLUSTER_NODES brokers after 60s"
    sleep 1
  done
  log "cluster ready: $(cluster_brokers)"
}

# Stops every node at once, even if one fails to stop, then reports failure. One after the other, the last
# node's controlled shutdown waits for a controller quorum that is gone, until kafka.sh kills it after 30 s.
cluster_down() {
  local i rc=0 pids=()
  for i in $(seq 1 "$CLUSTER_NODES"); do node "$i" stop & pids+=("$!"); done
  for i in "${pids[@]}"; do wait "$i" || rc=1; done
  return "$rc"
}

cluster_status() {
  local i rc=0
  for i in $(seq 1 "$CLUSTER_NODES"); do node "$i" status || rc=$?; done
  return "$rc"
}

# cluster_running: every node of the cluster answers on its port.
cluster_running() {
  local i
  for i in $(seq 1 "$CLUSTER_NODES"); do
    port_open "$((CLUSTER_BASE_PORT + 2 * (i - 1)))" || return 1
  done
}

# brokers_arg reads --brokers N: 1 is the single broker, 3 the cluster.
brokers_arg() {
  case "${1:-}" in
    "") echo 1 ;;
    --brokers)
      case "${2:-}" in
        1|"$CLUSTER_NODES") echo "$2" ;;
        *) die "--brokers takes 1 or $CLUSTER_NODES" ;;
      esac ;;
    *) die "unknown argument $1" ;;
  esac
}

kafka_cmd() {
  if [ "$1" = 1 ]; then
    "$SCRIPT_DIR/kafka.sh" "$2"
    return
  fi
  case "$2" in
    start) cluster_up ;;
    stop) cluster_down ;;
    status) cluster_status ;;
  esac
}

up() {
  local t0=$SECONDS brokers
  brokers="$(brokers_arg "$@")"
  preinstall
  kafka_cmd "$brokers" start
  "$SCRIPT_DIR/mariadb.sh" start
  "$SCRIPT_DIR/redis.sh" start
  log "all services up in $((SECONDS - t0))s"
}

# Stops every service even if one of them fails to stop, then reports failure.
down() {
  local rc=0 brokers
  brokers="$(brokers_arg "$@")"
  "$SCRIPT_DIR/redis.sh" stop || rc=1
  "$SCRIPT_DIR/mariadb.sh" stop || rc=1
  kafka_cmd "$brokers" stop || rc=1
  return "$rc"
}

status() {
  local rc=0 brokers
  brokers="$(brokers_arg "$@")"
  kafka_cmd "$brokers" status || rc=$?
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
  if cluster_running; then
    echo "export EPRO_TEST_KAFKA_CLUSTER_BROKERS=$(cluster_brokers)"
  fi
}

cmd="${1:-}"
[ $# -eq 0 ] || shift
case "$cmd" in
  up) up "$@" ;;
  down) down "$@" ;;
  status) status "$@" ;;
  env) env_exports ;;
  cluster)
    case "${1:-}" in
      up) cluster_up ;;
      down) cluster_down ;;
      status) cluster_status ;;
      *) die "usage: $0 cluster up|down|status" ;;
    esac ;;
  node)
    [ $# -eq 2 ] || die "usage: $0 node I start|stop|kill|pause|resume|status|pid"
    case "$2" in
      start|stop|kill|pause|resume|status|pid) node "$1" "$2" ;;
      *) die "node: unknown command $2" ;;
    esac ;;
  *) echo "usage: $0 up|down|status [--brokers 1|$CLUSTER_NODES] | env | cluster up|down|status | node I start|stop|kill|pause|resume|status|pid" >&2; exit 2 ;;
esac
