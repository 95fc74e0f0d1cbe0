"""An outside Confluent client for the interop tests: confluent-kafka's SchemaRegistryClient,
AvroSerializer and AvroDeserializer against Tributary's registry and a real broker.

  interop.py produce --bootstrap B --registry R [--registry-auth U:P] --topic T --count N   # AvroSerializer, auto-register
  interop.py produce ... --records web_events [--rate R]   # the catalog's raw.web_events schema, R/s at most
  interop.py consume --bootstrap B --registry R --topic T --count N   # AvroDeserializer; JSON lines out
"""

import argparse
import json
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

SCHEMA = json.dumps({
    "type": "record",
    "name": "Order",
    "namespace": "interop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "email", "type": ["null", "string"], "default": None},
        {"name": "total", "type": "double"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]}},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
})


def record(i):
    return {
        "id": i,
        "customer": f"customer-{i % 13}",
        "email": None if i % 3 == 0 else f"c{i}@shop.test",
        "total": i * 1.25,
        "status": ["NEW", "PAID", "SHIPPED"][i % 3],
        "placed_at": 1_700_000_000_000 + i,
        "tags": [f"t{j}" for j in range(i % 4)],
    }


# The repository's catalog schema for raw.web_events (the archive's fault tests).
WEB_EVENTS_SCHEMA = (Path(__file__).resolve().parents[2] / "schemas" / "raw.web_events-value.avsc").read_text()
# 2025-11-24T16:00:00Z, events 100 ms apart: a run spans hours, so files are cut at hours too.
WEB_EVENTS_BASE_MS = 1_764_000_000_000


def web_event(i):
    """Event i: keyed by its user, a purchase every tenth."""
    purchase = i % 10 == 0
    return {
        "event_id": f"0b6f2d3c-7f1e-4d8a-9a53-{i:012x}",
        "user_id": f"user-{i % 101}",
        "event_type": "purchase" if purchase else "page_view",
        "occurred_at": WEB_EVENTS_BASE_MS + i * 100,
        "page": {"url": f"https://shop.test/p/{i}"},
        "amount": Decimal(i % 10_000 + 1).scaleb(-2) if purchase else None,
        "properties": {"ab": f"v{i % 3}"} if i % 4 == 0 else {},
    }


def registry_client(args):
    """The registry, with HTTP basic credentials as Confluent's clients send them."""
    conf = {"url": args.registry}
    if args.registry_auth:
        conf["basic.auth.user.info"] = args.registry_auth
    return SchemaRegistryClient(conf)


def produce(args):
    registry = registry_client(args)
    schema, make, key = (
        (WEB_EVENTS_SCHEMA, web_event, lambda r, i: r["user_id"])
        if args.records == "web_events"
        else (SCHEMA, record, lambda r, i: str(i))
    )
    serializer = AvroSerializer(registry, schema, lambda r, ctx: r)
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True})
    ctx = SerializationContext(args.topic, MessageField.VALUE)
    started = time.monotonic()
    for i in range(args.count):
        if args.rate and i % 500 == 0:
            # At most --rate records per second: ahead of schedule, wait.
            ahead = i / args.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        value = make(i)
        while True:
            try:
                producer.produce(args.topic, key=key(value, i).encode(), value=serializer(value, ctx))
                break
            except BufferError:
                # The local queue is full: wait for acknowledgements, then go on.
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(30) != 0:
        sys.exit("not every record was acknowledged")


def plain(value):
    """JSON-friendly values: datetimes as epoch milliseconds."""
    if hasattr(value, "timestamp"):
        return int(round(value.timestamp() * 1000))
    return value


def consume(args):
    registry = registry_client(args)
    deserializer = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"interop-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([args.topic])
    seen = 0
    deadline = time.time() + args.timeout
    while seen < args.count and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            sys.exit(f"consume error: {message.error()}")
        value = deserializer(message.value(), SerializationContext(message.topic(), MessageField.VALUE))
        print(json.dumps({k: plain(v) for k, v in value.items()}, sort_keys=True))
        seen += 1
    consumer.close()
    if seen < args.count:
        sys.exit(f"consumed {seen} of {args.count} records")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["produce", "consume"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--registry-auth", help="USER:PASSWORD for HTTP basic authentication")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--records", choices=["orders", "web_events"], default="orders")
    parser.add_argument("--rate", type=float, default=0, help="records per second at most (0: no limit)")
    args = parser.parse_args()
    produce(args) if args.command == "produce" else consume(args)


if __name__ == "__main__":
    main()
