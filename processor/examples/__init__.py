"""Worked examples: deterministic input generators and exact oracles, nothing that runs Kafka.

`revenue` (topologies/revenue_per_user.yaml: the demo, the tests, the benchmarks),
`reconciliation` (topologies/reconciliation.yaml) and `fraud` (topologies/fraud_detection.yaml)
produce seeded input records (reconciliation and fraud: `(key, value, partition or None)`, the
shape `processor.tools.generator.produce_json` takes) together with their ground truth, and an
oracle giving the output the topology must produce. `fraud_model` trains and loads the
scikit-learn model the fraud topology scores with. What puts these on a broker (the demo and
its live views) lives in processor/tools. Heavy imports (numpy, scikit-learn) happen inside
functions, so importing this package costs nothing for the other demos.
"""
