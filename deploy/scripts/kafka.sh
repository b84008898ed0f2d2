#!/usr/bin/env bash
# Apache Kafka in KRaft mode on loopback: either the single development broker (broker+controller in one
# JVM) on 127.0.0.1:9092, or one node of a three-node cluster next to it (each node broker+controller, its
# own ports and data directory), on which topics are replicated three times.
#
# Kafka has no Debian package and there is no container engine here, so the broker
# runs from its Maven Central jars. The jars are cached outside the checkout so that
# repeated CI runs on the same machine do not fetch them again.
#
# Usage: kafka.sh [--nodes N --node I] start|launch|wait|stop|kill|pause|resume|status|pid|logs
#   Without --nodes (or with --nodes 1) the command is about the single broker. With --nodes N (N >= 3),
#   it is about node I (1..N) of the N-node cluster: node I listens on base+2(I-1) and its controller on
#   base+2(I-1)+1 (base: EPRO_KAFKA_CLUSTER_BASE_PORT).
#   start   launch, then wait until the node answers metadata (a cluster node needs a quorum of its
#           controllers up to answer: services.sh up --brokers N launches every node, then waits)
#   launch  start the JVM without waiting
#   wait    wait until the node answers metadata
#   stop    SIGTERM (controlled shutdown), SIGKILL after 30 s
#   kill    SIGKILL, as a crash would
#   pause / resume   SIGSTOP / SIGCONT: a hung broker and its recovery
#   pid     print the node's pid (exit 3 when it is not running)
#
# Environment:
#   EPRO_STATE_DIR       state root (default: <repo>/.run); the single broker uses <state>/kafka, cluster
#                        node I <state>/kafka-cluster/node-I
#   EPRO_CACHE_DIR       jar cache root (default: ~/.cache/epro)
#   EPRO_KAFKA_VERSION   Kafka version (default 4.1.2; 4.0.0 is refused because it
#                        dropped the JoinGroup versions kafka-go consumer groups use)
#   EPRO_KAFKA_READY_TIMEOUT  seconds to wait for the broker (default 90)
#   EPRO_KAFKA_CLUSTER_BASE_PORT  first port of the cluster (default 19092: brokers 19092, 19094, 19096,
#                        controllers 19093, 19095, 19097)
#   EPRO_KAFKA_CLUSTER_HEAP  -Xmx of each cluster node (default 384m)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
STATE_ROOT="${EPRO_STATE_DIR:-$REPO_ROOT/.run}"

NODES=1
NODE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES="${2:-}"; shift 2 ;;
    --node) NODE="${2:-}"; shift 2 ;;
    *) break ;;
  esac
done
[[ "$NODES" =~ ^[0-9]+$ && "$NODE" =~ ^[0-9]+$ ]] || { echo "[kafka] ERROR: --nodes and --node take numbers" >&2; exit 2; }

HOST=127.0.0.1
CLUSTER_BASE_PORT="${EPRO_KAFKA_CLUSTER_BASE_PORT:-19092}"
if [ "$NODES" -le 1 ]; then
  NAME=kafka
  STATE="$STATE_ROOT/kafka"
  PORT=9092
  CONTROLLER_PORT=9093
  HEAP_OPTS="-Xms512m -Xmx1g"
else
  [ "$NODES" -ge 3 ] || { echo "[kafka] ERROR: a cluster has at least 3 nodes (min.insync.replicas=2 needs one to spare)" >&2; exit 2; }
  [ "$NODE" -ge 1 ] && [ "$NODE" -le "$NODES" ] || { echo "[kafka] ERROR: --node must be 1..$NODES" >&2; exit 2; }
  NAME="kafka-node-$NODE"
  CLUSTER_STATE="$STATE_ROOT/kafka-cluster"
  STATE="$CLUSTER_STATE/node-$NODE"
  PORT=$((CLUSTER_BASE_PORT + 2 * (NODE - 1)))
  CONTROLLER_PORT=$((PORT + 1))
  HEAP_OPTS="-Xms128m -Xmx${EPRO_KAFKA_CLUSTER_HEAP:-384m}"
fi
DATA_DIR="$STATE/data"
PIDFILE="$STATE/kafka.pid"
PROPS="$STATE/server.properties"
LOG4J_CONF="$STATE/log4j2.properties"
BROKER_LOG="$STATE/broker.log"
CONSOLE_LOG="$STATE/console.log"

KAFKA_VERSION="${EPRO_KAFKA_VERSION:-4.1.2}"
LOG4J_VERSION="2.24.3"
SLF4J_VERSION="1.7.36"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
CACHE_ROOT="${EPRO_CACHE_DIR:-$HOME/.cache/epro}"
LIB_DIR="$CACHE_ROOT/kafka-$KAFKA_VERSION/lib"

READY_TIMEOUT="${EPRO_KAFKA_READY_TIMEOUT:-90}"
STOP_TIMEOUT=30

log() { printf '[%s] %s\n' "$NAME" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

case "$KAFKA_VERSION" in
  4.0.0) die "Kafka 4.0.0 is not supported: it removed JoinGroup versions that kafka-go consumer groups need; use 4.1.x" ;;
  4.*) ;;
  *) die "EPRO_KAFKA_VERSION must be a 4.x release (got $KAFKA_VERSION)" ;;
esac

is_running() {
  local pid; pid="$(read_pid)"
  [ -n "$pid" ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against PID reuse after a reboot or a crash.
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *kafka.Kafka* ]]
}

metadata_ok() {
  timeout 15 kcat -b "$HOST:$PORT" -L -m 5 >/dev/null 2>&1
}

fetch_jars() {
  if [ -f "$LIB_DIR/.complete" ]; then
    return 0
  fi
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIB_DIR"
  local work; work="$(mktemp -d)"
  cat >"$work/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>epro.intake</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- Kafka declares no logging backend; without one the broker logs nothing.
         Kafka 4.x is on SLF4J 1.7, hence the 1.x binding rather than log4j-slf4j2-impl. -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>org.slf4j</groupId>
        <artifactId>slf4j-api</artifactId>
        <version>$SLF4J_VERSION</version>
      </dependency>
    </dependencies>
  </dependencyManagement>
</project>
EOF
  if ! (cd "$work" && mvn -q -B -Dstyle.color=never "$DEP_PLUGIN:copy-dependencies" \
        -DoutputDirectory="$work/lib" -DincludeScope=runtime) >"$work/mvn.log" 2>&1 </dev/null; then
    tail -n 40 "$work/mvn.log" >&2
    rm -rf "$work"
    die "mvn could not fetch Kafka $KAFKA_VERSION"
  fi
  ls "$work/lib"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 || { rm -rf "$work"; die "kafka_2.13 jar missing after fetch"; }
  # Atomic swap, so an interrupted fetch never leaves a half-filled cache that looks complete.
  mkdir -p "$(dirname "$LIB_DIR")"
  rm -rf "$LIB_DIR"
  mv "$work/lib" "$LIB_DIR"
  touch "$LIB_DIR/.complete"
  rm -rf "$work"
}

# quorum_voters lists every controller of the node's cluster: id@host:port.
quorum_voters() {
  if [ "$NODES" -le 1 ]; then
    echo "1@$HOST:$CONTROLLER_PORT"
    return
  fi
  local i voters=""
  for i in $(seq 1 "$NODES"); do
    voters="$voters${voters:+,}$i@$HOST:$((CLUSTER_BASE_PORT + 2 * (i - 1) + 1))"
  done
  echo "$voters"
}

# replication_config is what differs between the single broker and the cluster: how many copies a topic
# has and how many must hold a write before it is acknowledged.
replication_config() {
  if [ "$NODES" -le 1 ]; then
    cat <<EOF
# One node: no topic can have more than one replica. acks=all then means "the one copy is written": a lost
# disk loses acknowledged reports. The cluster (services.sh up --brokers 3) is what production looks like.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
    return
  fi
  cat <<EOF
# The production settings: three copies, a write acknowledged (acks=all) only once two of them hold it, and
# never a leader elected from a replica that may have missed acknowledged writes.
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
EOF
}

write_config() {
  mkdir -p "$DATA_DIR"
  cat >"$PROPS" <<EOF
process.roles=broker,controller
node.id=$NODE
controller.quorum.voters=$(quorum_voters)
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR

# Topics are created explicitly, as in production.
auto.create.topics.enable=false
num.partitions=1

$(replication_config)

# Without this every consumer-group join waits 3 s.
group.initial.rebalance.delay.ms=0

log.retention.hours=24
log.segment.bytes=67108864
EOF
  cat >"$LOG4J_CONF" <<EOF
status = warn
name = epro-kafka

appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $BROKER_LOG
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n

rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE

# Per-request and state-change chatter drowns the useful lines.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.network.name = kafka.network.RequestChannel\$
logger.network.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
}

# cluster_id is a fresh id for the single broker; the nodes of a cluster share one, kept beside their
# directories, so that a node formatted later (its data directory removed) still joins the others.
cluster_id() {
  # Any 16 random bytes in base64url form is a valid cluster id.
  new_id() { head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | cut -c1-22; }
  if [ "$NODES" -le 1 ]; then
    new_id
    return
  fi
  mkdir -p "$CLUSTER_STATE"
  # Serialised: two nodes formatted at once must not each write an id.
  (
    flock -w 60 8 || die "timed out waiting for $CLUSTER_STATE/.id.lock"
    [ -s "$CLUSTER_STATE/cluster.id" ] || new_id >"$CLUSTER_STATE/cluster.id"
  ) 8>"$CLUSTER_STATE/.id.lock"
  cat "$CLUSTER_STATE/cluster.id"
}

format_storage() {
  if [ -f "$DATA_DIR/meta.properties" ]; then
    return 0
  fi
  local cluster_id
  cluster_id="$(cluster_id)"
  log "formatting storage in $DATA_DIR (cluster id $cluster_id)"
  java -Dlog4j2.configurationFile="$LOG4J_CONF" -cp "$LIB_DIR/*" kafka.tools.StorageTool \
    format -t "$cluster_id" -c "$PROPS" --ignore-formatted >>"$CONSOLE_LOG" 2>&1 \
    || { tail -n 40 "$CONSOLE_LOG" >&2; die "storage format failed"; }
}

print_logs() {
  log "---- last lines of $BROKER_LOG ----"
  tail -n 60 "$BROKER_LOG" >&2 2>/dev/null || true
  log "---- last lines of $CONSOLE_LOG ----"
  tail -n 30 "$CONSOLE_LOG" >&2 2>/dev/null || true
}

start() {
  launch
  wait_ready
}

# launch starts the JVM and returns without waiting for it to answer: a cluster node cannot answer before a
# quorum of controllers is up, so the nodes are launched together and waited for afterwards.
launch() {
  mkdir -p "$STATE"
  if is_running; then
    log "already running (pid $(read_pid))"
    return 0
  fi
  rm -f "$PIDFILE"
  ensure_pkgs java:openjdk-17-jre-headless mvn:maven kcat:kcat

  if port_open "$PORT" || port_open "$CONTROLLER_PORT"; then
    # Another checkout (or a developer) may already serve the port; reuse a healthy
    # broker instead of failing, but never claim it as ours.
    if metadata_ok; then
      log "WARNING: $HOST:$PORT is served by a process not started from $STATE; using it as is"
      FOREIGN=1
      return 0
    fi
    die "port $PORT or $CONTROLLER_PORT is in use by something that does not answer Kafka metadata"
  fi

  fetch_jars
  write_config
  format_storage

  log "starting Kafka $KAFKA_VERSION on $HOST:$PORT (log: $BROKER_LOG)"
  # setsid detaches the broker from the caller's process group so a Ctrl-C on the
  # caller does not kill it mid-write; the inner shell records the PID that java
  # inherits through exec.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PIDFILE" \
    java $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_CONF" \
    -cp "$LIB_DIR/*" kafka.Kafka "$PROPS" \
    >>"$CONSOLE_LOG" 2>&1 </dev/null 9>&- &
  local i
  for i in $(seq 1 50); do [ -s "$PIDFILE" ] && break; sleep 0.1; done
}

wait_ready() {
  [ -z "${FOREIGN:-}" ] || return 0
  local deadline=$((SECONDS + READY_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! is_running; then
      print_logs
      rm -f "$PIDFILE"
      die "broker exited during startup"
    fi
    if metadata_ok; then
      warm_group_coordinator
      log "ready (pid $(read_pid))"
      return 0
    fi
    sleep 1
  done
  print_logs
  die "broker not ready after ${READY_TIMEOUT}s"
}

# The first consumer group ever seen makes the broker create __consumer_offsets,
# which stalls that group's join for about 5 s. Doing it here keeps that delay out
# of whichever test happens to join first.
warm_group_coordinator() {
  offsets_ready() {
    local md
    md="$(timeout 15 kcat -b "$HOST:$PORT" -L -t __consumer_offsets -m 5 2>/dev/null || true)"
    [[ "$md" == *"partition 0, leader "[0-9]* ]]
  }
  offsets_ready && return 0
  # Joining a group on a topic that does not exist is enough to trigger the
  # creation; kcat then exits with an error about the topic, which is expected.
  timeout 20 kcat -b "$HOST:$PORT" -G epro_warmup -e epro_warmup_no_such_topic >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 30))
  until offsets_ready; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "WARNING: __consumer_offsets not ready yet; the first group join will be slow"
      return 0
    fi
    sleep 0.5
  done
}

stop() {
  if ! is_running; then
    rm -f "$PIDFILE"
    log "not running"
    return 0
  fi
  local pid; pid="$(read_pid)"
  log "stopping pid $pid (SIGTERM, controlled shutdown)"
  kill -TERM "$pid" 2>/dev/null || true
  # A paused broker only sees the SIGTERM once it runs again.
  kill -CONT "$pid" 2>/dev/null || true
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

# crash kills the node with SIGKILL: no controlled shutdown, no flush, as a power cut or the OOM killer would.
crash() {
  if ! is_running; then
    rm -f "$PIDFILE"
    log "not running"
    return 0
  fi
  local pid; pid="$(read_pid)"
  log "killing pid $pid (SIGKILL)"
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$PIDFILE"
}

# signal_node sends SIGSTOP or SIGCONT: the JVM stays, its sockets stay open, and it answers nothing.
signal_node() {
  is_running || die "not running"
  local pid; pid="$(read_pid)"
  kill "-$1" "$pid"
  log "sent SIG$1 to pid $pid"
}

status() {
  if is_running; then
    local state
    state="$(awk '{print $3}' "/proc/$(read_pid)/stat" 2>/dev/null || true)"
    if [ "$state" = T ]; then
      echo "$NAME: paused (pid $(read_pid)) on $HOST:$PORT"
    elif metadata_ok; then
      echo "$NAME: running (pid $(read_pid)) on $HOST:$PORT"
    else
      echo "$NAME: process running (pid $(read_pid)) but metadata not answering"
    fi
    return 0
  fi
  echo "$NAME: not running"
  return 3
}

case "${1:-}" in
  start) take_lock; start ;;
  launch) take_lock; launch ;;
  wait) wait_ready ;;
  stop) take_lock; stop ;;
  kill) take_lock; crash ;;
  pause) signal_node STOP ;;
  resume) signal_node CONT ;;
  status) status ;;
  pid) is_running || exit 3; read_pid ;;
  logs) print_logs ;;
  *) echo "usage: $0 [--nodes N --node I] start|launch|wait|stop|kill|pause|resume|status|pid|logs" >&2; exit 2 ;;
esac
