"""Kafka clients and records: client settings, topic creation, the producer path of every
output (collector, dead letters), serdes per topic, repartition purging and drain checks."""
