"""Worked examples beyond the revenue demo: deterministic generators and exact oracles.

`reconciliation` (topologies/reconciliation.yaml) and `fraud` (topologies/fraud_detection.yaml)
each produce seeded input records `(key, value, partition or None)` — the shape
`processor.runtime.generator.produce_json` takes — together with their ground truth, and an
`expected(...)` oracle giving the output the topology must produce. `fraud_model` trains and
loads the scikit-learn model the fraud topology scores with; `demos` holds the live views of
`processor demo --example ...`. Heavy imports (numpy, scikit-learn) happen inside functions, so
importing this package costs nothing for the other demos.
"""
