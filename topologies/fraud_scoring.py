"""Scoring step of fraud_detection.yaml: `map: {python: "fraud_scoring:score"}`.

The model is loaded once per worker process, lazily on the first record: loading at import
would make `processor validate` (which imports this module) fail without a trained model,
and loading per record would cost milliseconds each. The worker runs steps in one thread; the
lock only keeps a second thread, should one ever score, from loading the file twice.

The file is `models/fraud_model.joblib` next to this module, or $PROCESSOR_FRAUD_MODEL;
scripts/train_fraud_model.py creates it. Without it every record fails with an error naming
that script (and goes to the dead-letter topic: `processor dlq replay` after training).
Features and the probability come from processor.examples.fraud_model, the same code the
training and the test oracle use.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from processor.examples.fraud_model import ENV_VAR, load_model, score_value

MODEL_PATH = Path(__file__).resolve().parent / "models" / "fraud_model.joblib"

_model: Any = None
_lock = threading.Lock()
loads = 0  # how many times this process read the model file (tests check it is once)


def model_path() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else MODEL_PATH


def model() -> Any:
    """The process-wide model, loaded on first use."""
    global _model, loads
    if _model is None:
        with _lock:
            if _model is None:
                loaded = load_model(model_path())
                loads += 1
                _model = loaded
    return _model


def reset() -> None:
    """Forget the loaded model (tests; or to pick up a retrained file)."""
    global _model
    with _lock:
        _model = None


def score(key: Any, value: dict[str, Any]) -> dict[str, Any]:
    """The enriched transaction plus `score`: the fraud probability, rounded to 4 places."""
    return {**value, "score": score_value(model(), value)}
