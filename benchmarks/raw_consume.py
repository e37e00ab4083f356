"""A bare kafka-python consume, the reference of benchmarks/ingest_throughput.py.

Run by that benchmark in a process of its own that imports kafka-python alone, as a
consumer without cdp would run: in the benchmark's own process, which has imported
cdp, DuckDB, pyarrow and pydantic, each full garbage collection walks all of their
objects, and the reference read ~10-25% slower than a bare process (it is what cdp's
consumer avoids with gc.freeze()). Prints the records per second, from assignment
of the partitions to the last record polled.

    python benchmarks/raw_consume.py BOOTSTRAP TOPIC[,TOPIC...] PARTITIONS EXPECTED MAX_POLL_RECORDS
"""

from __future__ import annotations

import sys
import time

from kafka import KafkaConsumer, TopicPartition


def raw_consume(
    bootstrap_servers: str, topics: list[str], partitions: int, expected: int, max_poll: int
) -> float:
    """Records per second of a consumer with ingest's fetch settings and CRC checks on."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        check_crcs=True,
        max_poll_records=max_poll,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    assigned = [TopicPartition(topic, p) for topic in topics for p in range(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    seen = 0
    started = time.perf_counter()
    while seen < expected:
        for batch in consumer.poll(timeout_ms=1000).values():
            seen += len(batch)
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen / elapsed


if __name__ == "__main__":
    bootstrap, topics, partitions, expected, max_poll = sys.argv[1:6]
    rate = raw_consume(bootstrap, topics.split(","), int(partitions), int(expected), int(max_poll))
    print(f"{rate:.1f}")
