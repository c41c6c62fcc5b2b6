"""Train, save, load and apply the fraud model of topologies/fraud_detection.yaml.

One place for the model's file format and scoring rule, shared by scripts/train_fraud_model.py
(the CLI), `processor demo --example fraud` (trains in-process when the file is missing), the
topology's scoring step (topologies/fraud_scoring.py) and the oracle (fraud.expected).

The file is a joblib dict `{"model", "feature_names", "metrics"}`: loading checks the feature
names against `fraud.FEATURE_NAMES`, so a model trained before the features changed fails
loudly instead of scoring garbage. The model is a scaled logistic regression: the generator
draws each fraud signal independently given the label, so the log-odds are close to additive
in the features and a linear model does as well as boosted trees (held-out ROC AUC ~0.97 for
both, measured) while training in under a second and scoring a record in ~0.3 ms instead of
~1.5 ms — the scoring step runs once per record in the worker's single thread.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from processor.examples import fraud

ENV_VAR = "PROCESSOR_FRAUD_MODEL"
TRAIN_SCRIPT = "scripts/train_fraud_model.py"
REPO_MODEL = Path(__file__).resolve().parents[2] / "topologies" / "models" / "fraud_model.joblib"


class ModelNotFoundError(FileNotFoundError):
    """The model file is missing: it is built by scripts/train_fraud_model.py, not shipped."""


def default_model_path() -> Path:
    """$PROCESSOR_FRAUD_MODEL, else topologies/models/fraud_model.joblib in this checkout."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else REPO_MODEL


def training_data(n_transactions: int, seed: int) -> tuple[Any, Any]:
    """Features and labels of a generated sample, enriched as the topology's join does."""
    import numpy as np

    sample = fraud.generate(n_transactions, n_customers=max(200, n_transactions // 40), seed=seed)
    enriched = fraud.enrich(sample.transactions, sample.customers)
    x = np.array([fraud.features(v) for _, v in enriched], dtype=np.float64)
    y = np.array([sample.labels[v["txn_id"]] for _, v in enriched], dtype=np.int8)
    return x, y


def train_fraud_model(out: str | Path | None = None, *, n_transactions: int = 40_000,
                      seed: int = 7, test_size: float = 0.25) -> dict[str, Any]:
    """Generate labelled data, fit on a stratified split, measure on the held-out part, save.
    Returns the metrics (also stored in the file). Same arguments, same model: every random
    choice is seeded."""
    from joblib import dump
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.monotonic()
    path = Path(out) if out is not None else default_model_path()
    x, y = training_data(n_transactions, seed)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    model.fit(x_train, y_train)
    p = model.predict_proba(x_test)[:, 1]
    metrics = {
        "roc_auc": round(float(roc_auc_score(y_test, p)), 4),
        "average_precision": round(float(average_precision_score(y_test, p)), 4),
        "train_rows": len(y_train), "test_rows": len(y_test),
        "fraud_share": round(float(y.mean()), 4),
        "seconds": round(time.monotonic() - started, 2), "path": str(path),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    dump({"model": model, "feature_names": list(fraud.FEATURE_NAMES), "metrics": metrics}, path)
    return metrics


def load_model(path: str | Path | None = None) -> Any:
    """The fitted classifier in `path` (default: default_model_path())."""
    from joblib import load

    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise ModelNotFoundError(
            f"fraud model not found at {path}: create it with `python {TRAIN_SCRIPT}` (from the "
            f"repository root, --out PATH for another place) or point {ENV_VAR} at a model file")
    bundle = load(path)
    if not isinstance(bundle, dict) or bundle.get("feature_names") != list(fraud.FEATURE_NAMES):
        raise ValueError(f"fraud model {path} was trained on other features than "
                         f"processor.examples.fraud.features computes: retrain with {TRAIN_SCRIPT}")
    return bundle["model"]


def score_value(model: Any, value: dict[str, Any]) -> float:
    """Fraud probability of one enriched transaction, rounded to 4 places (the `score` field)."""
    import numpy as np

    row = np.array([fraud.features(value)], dtype=np.float64)
    return round(float(model.predict_proba(row)[0, 1]), 4)
