"""An outside Confluent client for the interop tests: confluent-kafka's SchemaRegistryClient,
AvroSerializer and AvroDeserializer against Tributary's registry and a real broker.

  interop.py produce --bootstrap B --registry R --topic T --count N   # AvroSerializer, auto-register
  interop.py consume --bootstrap B --registry R --topic T --count N   # AvroDeserializer; JSON lines out
"""

import argparse
import json
import sys
import time
import uuid

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


def produce(args):
    registry = SchemaRegistryClient({"url": args.registry})
    serializer = AvroSerializer(registry, SCHEMA, lambda r, ctx: r)
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True})
    for i in range(args.count):
        ctx = SerializationContext(args.topic, MessageField.VALUE)
        producer.produce(args.topic, key=str(i).encode(), value=serializer(record(i), ctx))
        producer.poll(0)
    if producer.flush(30) != 0:
        sys.exit("not every record was acknowledged")


def plain(value):
    """JSON-friendly values: datetimes as epoch milliseconds."""
    if hasattr(value, "timestamp"):
        return int(round(value.timestamp() * 1000))
    return value


def consume(args):
    registry = SchemaRegistryClient({"url": args.registry})
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
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    produce(args) if args.command == "produce" else consume(args)


if __name__ == "__main__":
    main()
