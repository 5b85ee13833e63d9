#!/usr/bin/env bash
# One-shot topic creation for docker-compose.yml (service `kafka-init`, apache/kafka image).
# Topic names, partitions and replication come from the same PORTRAIT_... variables the worker
# reads, so the two cannot disagree. profile-updates.v1 is compacted: Kafka keeps the latest
# profile (and an erasure's tombstone) per user key. Safe to run again (--if-not-exists).
set -euo pipefail

bootstrap="${PORTRAIT_KAFKA__BOOTSTRAP_SERVERS:?}"
partitions="${PORTRAIT_TOPICS__PARTITIONS:?}"
replication="${PORTRAIT_TOPICS__REPLICATION_FACTOR:?}"
kafka_topics="${KAFKA_TOPICS_SH:-/opt/kafka/bin/kafka-topics.sh}"  # overridable for tests

create() {  # create TOPIC [--config KEY=VALUE ...]
  local topic="$1"
  shift
  "$kafka_topics" --bootstrap-server "$bootstrap" --create --if-not-exists --topic "$topic" \
    --partitions "$partitions" --replication-factor "$replication" "$@"
}

create "${PORTRAIT_TOPICS__COMMENTS:?}"
create "${PORTRAIT_TOPICS__BEHAVIOR:?}"
create "${PORTRAIT_TOPICS__PROFILE_UPDATES:?}" --config cleanup.policy=compact
create "${PORTRAIT_TOPICS__DEAD_LETTER:?}" --config retention.ms=1209600000  # 14 days
create "${PORTRAIT_TOPICS__ERASURE:?}"
if [ "${PORTRAIT_TOPICS__WRONG_PARTITION:?}" = reroute ]; then  # the worker's repartition topics
  for source in "$PORTRAIT_TOPICS__COMMENTS" "$PORTRAIT_TOPICS__BEHAVIOR"; do
    create "${PORTRAIT_APP_ID:?}-$source-repartition" --config retention.ms=604800000  # 7 days
  done
fi

"$kafka_topics" --bootstrap-server "$bootstrap" --describe --topic "${PORTRAIT_TOPICS__PROFILE_UPDATES}"
