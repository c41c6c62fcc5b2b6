"""Train the model topologies/fraud_detection.yaml scores transactions with.

    .venv/bin/python scripts/train_fraud_model.py [--out PATH] [--transactions N] [--seed S]

Generates labelled transactions with the example's seeded generator, fits a scaled logistic
regression on 75 % of them, prints ROC AUC and average precision on the held-out 25 % and
saves the model with joblib to topologies/models/fraud_model.joblib ($PROCESSOR_FRAUD_MODEL or
--out elsewhere). Deterministic: the same arguments give the same model. The work is in
processor.examples.fraud_model.train_fraud_model, which `processor demo --example fraud` calls
in-process when the file is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from processor.examples.fraud_model import default_model_path, train_fraud_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None,
                   help=f"model file (default: {default_model_path()})")
    p.add_argument("--transactions", type=int, default=40_000, help="generated sample size")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    m = train_fraud_model(args.out, n_transactions=args.transactions, seed=args.seed)
    print(f"trained on {m['train_rows']} transactions ({m['fraud_share']:.1%} fraud) in "
          f"{m['seconds']:.1f} s; held-out {m['test_rows']}: ROC AUC {m['roc_auc']:.4f}, "
          f"average precision {m['average_precision']:.4f}")
    print(f"saved {m['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
