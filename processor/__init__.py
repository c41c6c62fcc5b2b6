"""Kafka-native stateful stream processor: YAML topologies over Kafka partitions with RocksDB state."""

__version__ = "0.1.0"
