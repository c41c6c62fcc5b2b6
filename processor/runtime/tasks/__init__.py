"""A task: one sub-topology over one input partition. `task.py` holds its lifecycle and walks
records down its chains; decoding, event time, failure handling and the checkpointed position
are the modules beside it."""
