"""`processor batch`: one run of a topology over bounded inputs (files, topic ranges), to the end.

The same graph, tasks, operators and RocksDB stores as a worker; no consumer group, no
changelogs, no checkpoints: a one-shot run that fails starts over. engine.py drives it,
bus.py carries the repartition topics in memory, inputs.py reads the sources, outputs.py
writes the sinks (files atomically, topics in one transaction).
"""
