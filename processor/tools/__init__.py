"""Tools beside the engine, used by the command line, the tests and the benchmarks: the brokers
the project starts (Tansu, Apache Kafka), the sample-event generator, the demo, the dead-letter
tool and the worker-subprocess harness.

They sit above `runtime/` (cli -> tools -> runtime): the engine never imports them, so nothing
a worker runs depends on dev, test or demo code.
"""
