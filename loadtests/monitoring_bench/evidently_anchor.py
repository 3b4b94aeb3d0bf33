"""Runs in Evidently's own venv: the same drift statistics on the same window data.

    <evidently venv>/bin/python evidently_anchor.py windows.npz repeats

Prints one JSON line: seconds per run (median) and the statistic values.
Per numeric column: PSI, KS (p-value), Wasserstein (normed), Jensen-Shannon;
per categorical column: PSI, Jensen-Shannon, chi-squared (p-value).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import ValueDrift

NUMERIC_METHODS = ("psi", "ks", "wasserstein", "jensenshannon")
CATEGORICAL_METHODS = ("psi", "jensenshannon", "chisquare")


def main() -> None:
    data = np.load(sys.argv[1], allow_pickle=False)
    repeats = int(sys.argv[2])
    numeric = [k[len("ref_") :] for k in data.files if k.startswith("ref_") and data[k].dtype.kind == "f"]
    categorical = [k[len("ref_") :] for k in data.files if k.startswith("ref_") and data[k].dtype.kind in "US"]
    reference = pd.DataFrame({c: data[f"ref_{c}"] for c in numeric + categorical})
    current = pd.DataFrame({c: data[f"cur_{c}"] for c in numeric + categorical})
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    metrics = [ValueDrift(column=c, method=m) for c in numeric for m in NUMERIC_METHODS]
    metrics += [ValueDrift(column=c, method=m) for c in categorical for m in CATEGORICAL_METHODS]
    names = [f"{c}.{m}" for c in numeric for m in NUMERIC_METHODS]
    names += [f"{c}.{m}" for c in categorical for m in CATEGORICAL_METHODS]
    timings, values = [], {}
    for _ in range(repeats):
        started = time.perf_counter()
        snapshot = Report(metrics).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        result = snapshot.dict()
        timings.append(time.perf_counter() - started)
        values = {name: m["value"] for name, m in zip(names, result["metrics"], strict=True)}
    print(json.dumps({"seconds": statistics.median(timings), "values": values, "statistics": len(names)}))


if __name__ == "__main__":
    main()
