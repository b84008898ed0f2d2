#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, broker+controller in one JVM) on 127.0.0.1:9092.
#
# Kafka has no Debian package and there is no container engine here, so the broker
# runs from its Maven Central jars. The jars are cached outside the checkout so that
# repeated CI runs on the same machine do not fetch them again.
#
# Usage: kafka.sh start|stop|status|logs
#
# Environment:
#   EPRO_STATE_DIR       state root (default: <repo>/.run); Kafka uses <state>/kafka
#   EPRO_CACHE_DIR       jar cache root (default: ~/.cache/epro)
#   EPRO_KAFKA_VERSION   Kafka version (default 4.1.2; 4.0.0 is refused because it
#                        dropped the JoinGroup versions kafka-go consumer groups use)
#   EPRO_KAFKA_READY_TIMEOUT  seconds to wait for the broker (default 90)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
STATE_ROOT="${EPRO_STATE_DIR:-$REPO_ROOT/.run}"
STATE="$STATE_ROOT/kafka"
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

HOST=127.0.0.1
PORT=9092
CONTROLLER_PORT=9093
READY_TIMEOUT="${EPRO_KAFKA_READY_TIMEOUT:-90}"
STOP_TIMEOUT=30

log() { printf '[kafka] %s\n' "$*" >&2; }
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

write_config() {
  mkdir -p "$DATA_DIR"
  cat >"$PROPS" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR

# Topics are created explicitly, as in production.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1

# One node: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1

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

format_storage() {
  if [ -f "$DATA_DIR/meta.properties" ]; then
    return 0
  fi
  local cluster_id
  # Any 16 random bytes in base64url form is a valid cluster id.
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | cut -c1-22)"
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
  mkdir -p "$STATE"
  if is_running; then
    if metadata_ok; then
      log "already running (pid $(read_pid))"
      return 0
    fi
    log "process $(read_pid) exists but is not answering yet; waiting for it"
    wait_ready
    return 0
  fi
  rm -f "$PIDFILE"
  ensure_pkgs java:openjdk-17-jre-headless mvn:maven kcat:kcat

  if port_open "$PORT" || port_open "$CONTROLLER_PORT"; then
    # Another checkout (or a developer) may already serve the port; reuse a healthy
    # broker instead of failing, but never claim it as ours.
    if metadata_ok; then
      log "WARNING: $HOST:$PORT is served by a process not started from $STATE; using it as is"
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
    java -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_CONF" \
    -cp "$LIB_DIR/*" kafka.Kafka "$PROPS" \
    >>"$CONSOLE_LOG" 2>&1 </dev/null 9>&- &
  local i
  for i in $(seq 1 50); do [ -s "$PIDFILE" ] && break; sleep 0.1; done
  wait_ready
}

wait_ready() {
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
    if metadata_ok; then
      echo "kafka: running (pid $(read_pid)) on $HOST:$PORT"
    else
      echo "kafka: process running (pid $(read_pid)) but metadata not answering"
    fi
    return 0
  fi
  echo "kafka: not running"
  return 3
}

case "${1:-}" in
  start) take_lock; start ;;
  stop) take_lock; stop ;;
  status) status ;;
  logs) print_logs ;;
  *) echo "usage: $0 start|stop|status|logs" >&2; exit 2 ;;
esac
