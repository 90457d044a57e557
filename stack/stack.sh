#!/usr/bin/env bash
# The local stack without Docker: Apache Kafka (KRaft, jars from Maven
# Central) and Redis (Debian's redis-server), both on 127.0.0.1.
#
#   stack/stack.sh up      start what is not running yet (idempotent)
#   stack/stack.sh down    stop only what `up` started
#   stack/stack.sh status  what runs where
#
# Everything lives in .stack/ beside this folder: jars, data, pids, logs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
state="$root/.stack"
logs="$state/logs"
kafka_port=${STREAMTAGS_KAFKA_PORT:-9092}
controller_port=${STREAMTAGS_KAFKA_CONTROLLER_PORT:-9093}
sasl_port=${STREAMTAGS_KAFKA_SASL_PORT:-9094}
# A SCRAM user on the SASL listener (tests and docs use it; local only).
sasl_user=${STREAMTAGS_STACK_SASL_USER:-streamtags}
sasl_password=${STREAMTAGS_STACK_SASL_PASSWORD:-streamtags-local-secret}
redis_port=${STREAMTAGS_REDIS_PORT:-6379}
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
jars="$state/kafka/libs-$kafka_version"

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

redis_cli() { command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p "$redis_port" "$@"; }

kafka_answers() {
  # A metadata request through the project's own client proves the broker serves.
  local py="$root/.venv/bin/python"
  [ -x "$py" ] || py=python3
  "$py" - "$kafka_port" <<'PY' >/dev/null 2>&1
import asyncio, sys
from aiokafka.admin import AIOKafkaAdminClient
async def main() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{sys.argv[1]}", request_timeout_ms=3000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()
asyncio.run(main())
PY
}

fetch_kafka() {
  [ -f "$jars/.complete" ] && return 0
  command -v java >/dev/null || die "Java 17 is missing: install a JDK (e.g. apt-get install openjdk-17-jre-headless) and run again."
  command -v mvn >/dev/null || die "Maven is missing: install it (e.g. apt-get install maven) and run again."
  say "fetching Apache Kafka $kafka_version jars from Maven Central (once)"
  mkdir -p "$jars" "$logs"
  if ! mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$jars" -DincludeScope=runtime >"$logs/maven.log" 2>&1; then
    tail -20 "$logs/maven.log" >&2
    die "Maven could not fetch the Kafka broker; see $logs/maven.log."
  fi
  touch "$jars/.complete"
}

add_scram_user() {
  # Idempotent: setting the same SCRAM credentials again changes nothing.
  local mech
  for mech in SCRAM-SHA-256 SCRAM-SHA-512; do
    java -Xmx256m "-Dkafka.logs.dir=$logs" -Dlog4j2.configurationFile="$here/log4j2.properties" \
      -cp "$jars/*" \
      kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$kafka_port" --alter \
      --add-config "$mech=[password=$sasl_password]" --entity-type users --entity-name "$sasl_user" \
      >>"$logs/kafka-scram.log" 2>&1 || die "creating the SCRAM user failed; see $logs/kafka-scram.log."
  done
}

kafka_up() {
  if pid_alive "$state/kafka.pid" && port_open "$kafka_port"; then
    say "kafka already running (pid $(cat "$state/kafka.pid")) on 127.0.0.1:$kafka_port"; return 0
  fi
  if port_open "$kafka_port"; then
    if kafka_answers; then say "kafka: using the broker already answering on 127.0.0.1:$kafka_port (not started by us)"; return 0; fi
    die "port $kafka_port is taken by something that is not a Kafka broker; free it or set STREAMTAGS_KAFKA_PORT."
  fi
  port_open "$controller_port" && die "port $controller_port (Kafka controller) is taken; free it or set STREAMTAGS_KAFKA_CONTROLLER_PORT."
  port_open "$sasl_port" && die "port $sasl_port (Kafka SASL listener) is taken; free it or set STREAMTAGS_KAFKA_SASL_PORT."
  fetch_kafka
  local data="$state/kafka/data"
  mkdir -p "$data" "$logs"
  sed -e "s:@DATA@:$data:" -e "s:@PORT@:$kafka_port:" -e "s:@CONTROLLER_PORT@:$controller_port:" \
    -e "s:@SASL_PORT@:$sasl_port:" \
    "$here/server.properties.in" >"$state/kafka/server.properties"
  local java_opts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
    "-Dkafka.logs.dir=$logs" "-Dlog4j2.configurationFile=$here/log4j2.properties")
  if [ ! -f "$data/meta.properties" ]; then
    java "${java_opts[@]}" -cp "$jars/*" kafka.tools.StorageTool format \
      -t "$(java -cp "$jars/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
      -c "$state/kafka/server.properties" >"$logs/kafka-format.log" 2>&1 \
      || { cat "$logs/kafka-format.log" >&2; die "formatting Kafka storage failed."; }
  fi
  nohup java "${java_opts[@]}" -cp "$jars/*" kafka.Kafka "$state/kafka/server.properties" \
    >"$logs/kafka.out" 2>&1 &
  echo $! >"$state/kafka.pid"
  say "kafka starting (pid $!), waiting for it to answer metadata requests"
  for _ in $(seq 1 120); do
    if port_open "$kafka_port" && kafka_answers; then
      say "kafka up on 127.0.0.1:$kafka_port (SASL/SCRAM on $sasl_port)"; add_scram_user; return 0
    fi
    pid_alive "$state/kafka.pid" || { tail -20 "$logs/kafka.out" >&2; die "kafka exited during start; see $logs/."; }
    sleep 0.5
  done
  die "kafka did not answer within 60 s; see $logs/."
}

redis_up() {
  if redis_cli ping 2>/dev/null | grep -q PONG; then
    if pid_alive "$state/redis.pid"; then say "redis already running (pid $(cat "$state/redis.pid")) on 127.0.0.1:$redis_port"
    else say "redis: using the server already answering on 127.0.0.1:$redis_port (not started by us)"; fi
    return 0
  fi
  port_open "$redis_port" && die "port $redis_port is taken by something that is not Redis; free it or set STREAMTAGS_REDIS_PORT."
  if ! command -v redis-server >/dev/null; then
    say "installing redis-server from Debian's packages"
    command -v apt-get >/dev/null || die "redis-server is missing and there is no apt-get; install Redis 7 and run again."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) \
      >"$logs/apt.log" 2>&1 || die "installing redis-server failed; see $logs/apt.log."
  fi
  mkdir -p "$state/redis" "$logs"
  redis-server --bind 127.0.0.1 --port "$redis_port" --daemonize yes \
    --pidfile "$state/redis.pid" --dir "$state/redis" --logfile "$logs/redis.log" \
    --save "" --appendonly yes --appendfsync everysec >/dev/null
  for _ in $(seq 1 50); do
    redis_cli ping 2>/dev/null | grep -q PONG && { say "redis up on 127.0.0.1:$redis_port"; return 0; }
    sleep 0.1
  done
  die "redis did not answer within 5 s; see $logs/redis.log."
}

stop_pid() {
  local name=$1 file=$2
  if pid_alive "$file"; then
    local pid; pid=$(cat "$file")
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "$name stopped"
  else
    say "$name was not started by this stack"
  fi
  rm -f "$file"
}

status() {
  if port_open "$kafka_port"; then
    if pid_alive "$state/kafka.pid"; then say "kafka: running, pid $(cat "$state/kafka.pid"), 127.0.0.1:$kafka_port, logs $logs/kafka.log"
    else say "kafka: something answers on 127.0.0.1:$kafka_port (not started by this stack)"; fi
  else say "kafka: not running"; fi
  if redis_cli ping 2>/dev/null | grep -q PONG; then
    if pid_alive "$state/redis.pid"; then say "redis: running, pid $(cat "$state/redis.pid"), 127.0.0.1:$redis_port, logs $logs/redis.log"
    else say "redis: something answers on 127.0.0.1:$redis_port (not started by this stack)"; fi
  else say "redis: not running"; fi
}

mkdir -p "$logs"
case "${1:-}" in
  up) redis_up; kafka_up ;;
  down) stop_pid kafka "$state/kafka.pid"; stop_pid redis "$state/redis.pid" ;;
  status) status ;;
  *) echo "usage: stack/stack.sh up|down|status" >&2; exit 2 ;;
esac
