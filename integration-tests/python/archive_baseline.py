#!/usr/bin/env python3
"""The archive's job scripted the way a data engineer would: the baseline of bench-archive.

Consumes a topic of Confluent-framed Avro records with confluent-kafka (a fresh consumer group,
from the earliest offset), decodes each value with fastavro's schemaless_reader (the writer
schema fetched once per schema id from the registry over HTTP), collects the rows with their
Kafka lineage, and every --flush-records rows writes them with pyarrow as zstd Parquet in Hive
folders dt=YYYY-MM-DD/hr=HH of the event time (pyarrow.dataset.write_dataset).

It stops once it has read --records records, and prints one JSON line on stdout: the records,
rows written, files, bytes, the wall time (from start, and from the first record) and its own
CPU time (getrusage RUSAGE_SELF: every thread, librdkafka's included).

    python3 archive_baseline.py --bootstrap 127.0.0.1:9092 --registry http://127.0.0.1:8081 \
        --topic raw.web_events --records 1000000 --out /tmp/lake-py
"""

import argparse
import base64
import io
import json
import os
import resource
import sys
import time
import urllib.request
import uuid

import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from confluent_kafka import Consumer, KafkaError

# The Arrow types the archive writes for raw.web_events (arrow-avro's mapping), plus lineage.
WEB_EVENTS = pa.schema(
    [
        ("event_id", pa.binary(16)),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("event_type", pa.dictionary(pa.int32(), pa.string())),
        ("occurred_at", pa.timestamp("ms", tz="UTC")),
        ("page", pa.struct([("url", pa.string()), ("referrer", pa.string())])),
        ("user_agent", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("properties", pa.map_(pa.string(), pa.string())),
        ("_kafka_topic", pa.string()),
        ("_kafka_partition", pa.int32()),
        ("_kafka_offset", pa.int64()),
        ("_kafka_timestamp", pa.timestamp("ms", tz="UTC")),
        ("_schema_id", pa.int32()),
    ]
)


def fetch_schema(registry, auth, schema_id):
    request = urllib.request.Request(f"{registry}/schemas/ids/{schema_id}")
    if auth:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as r:
        return fastavro.parse_schema(json.loads(json.load(r)["schema"]))


def write(rows, out, part):
    """Writes the rows as zstd Parquet under out/dt=.../hr=.../; returns (files, bytes)."""
    table = pa.Table.from_pylist(rows, schema=WEB_EVENTS)
    table = table.append_column("dt", pc.strftime(table["occurred_at"], format="%Y-%m-%d"))
    table = table.append_column("hr", pc.strftime(table["occurred_at"], format="%H"))
    written = []
    ds.write_dataset(
        table,
        out,
        format="parquet",
        partitioning=["dt", "hr"],
        partitioning_flavor="hive",
        basename_template=f"part-{part:05d}-{{i}}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
        file_visitor=lambda f: written.append(f.path),
    )
    return len(written), sum(os.path.getsize(p) for p in written)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--registry-auth", help="USER:PASSWORD for HTTP basic authentication")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True, help="stop after this many")
    parser.add_argument("--out", required=True, help="folder the Parquet files go to")
    parser.add_argument("--group", default=f"archive-baseline-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--flush-records", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    args = parser.parse_args()

    started = time.monotonic()
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([args.topic])
    schemas = {}
    rows = []
    read = failed = files = size = written = parts = 0
    first = None
    try:
        while read < args.records:
            if time.monotonic() - started > args.timeout:
                sys.exit(f"read only {read} of {args.records} records in {args.timeout} s")
            for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        sys.exit(f"consume: {msg.error()}")
                    continue
                if first is None:
                    first = time.monotonic()
                read += 1
                value = msg.value()
                if value is None or len(value) < 5 or value[0] != 0:
                    failed += 1
                    continue
                schema_id = int.from_bytes(value[1:5], "big")
                schema = schemas.get(schema_id)
                if schema is None:
                    schema = schemas[schema_id] = fetch_schema(args.registry, args.registry_auth, schema_id)
                row = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, None)
                row["event_id"] = row["event_id"].bytes
                row["_kafka_topic"] = msg.topic()
                row["_kafka_partition"] = msg.partition()
                row["_kafka_offset"] = msg.offset()
                row["_kafka_timestamp"] = msg.timestamp()[1]
                row["_schema_id"] = schema_id
                rows.append(row)
                if len(rows) >= args.flush_records:
                    f, b = write(rows, args.out, parts)
                    files, size, written, parts = files + f, size + b, written + len(rows), parts + 1
                    rows = []
        if rows:
            f, b = write(rows, args.out, parts)
            files, size, written = files + f, size + b, written + len(rows)
    finally:
        consumer.close()
    finished = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "records": read,
                "failed": failed,
                "rows": written,
                "files": files,
                "bytes": size,
                "wall_seconds": finished - started,
                "wall_seconds_from_first_record": finished - (first or finished),
                "cpu_user_seconds": usage.ru_utime,
                "cpu_system_seconds": usage.ru_stime,
                "max_rss_kib": usage.ru_maxrss,
            }
        )
    )


if __name__ == "__main__":
    main()
