"""Kafka I/O: the worker loop, tasks, restore, checkpoints, topics and the embedded broker."""
