"""Reads a Kafka topic from its beginning to its end as the old scripts' consumers did: kafka-python 2.0.2
with no compression library, each value decoded with json.loads(value.decode("utf-8")).

Prints one JSON line per message: partition, offset, key, value and headers. On any error (an unreadable
batch, a value that is not UTF-8 JSON), prints the error's class and message to stderr and exits 1.

The broker's version is given and the partitions assigned, so the client never asks for the metadata of
every topic on the (shared, busy) test broker.

usage: read_topic.py BROKERS TOPIC PARTITIONS
"""

import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition

# Longest the whole read may take.
TIMEOUT_SECONDS = 60


# The newest broker version kafka-python 2.0.2 knows.
API_VERSION = (2, 5, 0)


def read(brokers, topic, partitions):
    consumer = KafkaConsumer(
        bootstrap_servers=brokers, api_version=API_VERSION, enable_auto_commit=False
    )
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        remaining = {tp for tp in assigned if consumer.position(tp) < end[tp]}
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end within {TIMEOUT_SECONDS} s")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    emit(record)
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()


def emit(record):
    line = {
        "partition": record.partition,
        "offset": record.offset,
        "key": None if record.key is None else record.key.decode("utf-8"),
        "value": json.loads(record.value.decode("utf-8")),
        "headers": {key: value.decode("utf-8") for key, value in record.headers},
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    try:
        read(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    except Exception as error:  # the caller reads the class and message
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
