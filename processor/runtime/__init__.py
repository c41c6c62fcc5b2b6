"""Everything that talks to Kafka. The worker and its parts live here (worker.py: the loop;
task_manager.py: rebalances and restores; telemetry.py; global_state.py; config.py), over four
subpackages: `tasks/` (one sub-topology on one partition: decode, chains, event time, failures,
position), `kafka/` (clients, topics, producing and collecting outputs, dead letters, serdes
per topic, repartition purging, drain checks), `durability/` (checkpoint, restore, table
following) and `serving/` (the HTTP endpoint, queryable state, the worker directory)."""
