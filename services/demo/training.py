"""Act one: train a small PyTorch scorer, tracked with the stock `mlflow` client, and register it.

The client talks to the registry's MLflow REST API exactly as it would to an
MLflow server: the run's params, per-epoch metrics, the training set (which
becomes lineage) and the exported TorchScript model all land in Tessera.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.demo.console import say

FEATURES = 4
SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, FEATURES]}],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}],
}
EPOCHS = 8


@dataclass
class TrainedModel:
    run_id: str
    model_name: str
    version: int
    accuracy: float
    # Training features and the model's scores on them: the drift monitor's reference.
    train_features: np.ndarray
    train_scores: np.ndarray


def training_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A churn-like toy task: the label depends on three of the four features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + rng.normal(scale=0.3, size=rows) > 0).astype(np.float32)
    return x, y


def _export(model, folder: Path) -> None:
    import torch

    class Scorer(torch.nn.Module):
        """The probability of the positive class, named `score` as the signature says."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(features))

    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Scorer(model.eval())).save(str(folder / "model.pt"))
    (folder / "signature.json").write_text(json.dumps(SIGNATURE))


def train_and_register(mlflow_url: str, token: str, model_name: str, experiment: str, data_dir: Path) -> TrainedModel:
    """Runs in a worker thread: mlflow's client is synchronous."""
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_url
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    # The demo prints its own line per step; the UI links would point at a UI Tessera does not serve.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import mlflow
    import pandas
    import torch
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    torch.manual_seed(0)
    x, y = training_data(4000, seed=1)
    split = 3200
    lr, hidden, batch = 0.01, 16, 128
    net = torch.nn.Sequential(torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(x[:split]), torch.from_numpy(y[:split]).unsqueeze(1)
    xv, yv = torch.from_numpy(x[split:]), torch.from_numpy(y[split:]).unsqueeze(1)

    mlflow.set_tracking_uri(mlflow_url)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="scorer") as run:
        say("train", f"MLflow run {run.info.run_id} in experiment {experiment!r} at {mlflow_url}")
        mlflow.log_params({"lr": lr, "hidden": hidden, "epochs": EPOCHS, "batch": batch, "rows": split})
        frame = pandas.DataFrame(x[:split], columns=[f"f{i}" for i in range(FEATURES)]).assign(label=y[:split])
        data_dir.mkdir(parents=True, exist_ok=True)
        frame.to_csv(data_dir / "churn_train.csv", index=False)
        with warnings.catch_warnings():
            # mlflow finds two equal resolvers for a local path and says so; either is right.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=str(data_dir / "churn_train.csv"), name="churn")
        mlflow.log_input(dataset, context="training")
        for epoch in range(EPOCHS):
            net.train()
            order = torch.randperm(split)
            total = 0.0
            for i in range(0, split, batch):
                idx = order[i : i + batch]
                optimizer.zero_grad()
                loss = loss_fn(net(xt[idx]), yt[idx])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            net.eval()
            with torch.no_grad():
                accuracy = ((net(xv) > 0).float() == yv).float().mean().item()
            mlflow.log_metrics({"train_loss": total / split, "val_accuracy": accuracy}, step=epoch)
            say("train", f"epoch {epoch + 1}/{EPOCHS}: loss {total / split:.4f}, val accuracy {accuracy:.3f}")
        with tempfile.TemporaryDirectory() as tmp:
            _export(net, Path(tmp) / "model")
            mlflow.log_artifacts(str(Path(tmp) / "model"), artifact_path="model")
        say("train", "exported TorchScript model.pt + signature.json as the run's artifacts under model/")

    client = MlflowClient()
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    say(
        "train",
        f"tracked: {len(history)} val_accuracy points, params {sorted(client.get_run(run.info.run_id).data.params)}",
    )
    try:
        client.create_registered_model(model_name, description="Tessera demo: churn scorer (TorchScript)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # The client polls until the registry has copied the files and the version is READY.
    version = client.create_model_version(model_name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(model_name, "champion", version.version)
    with torch.no_grad():
        train_scores = torch.sigmoid(net(xt)).squeeze(1).numpy()
    return TrainedModel(run.info.run_id, model_name, int(version.version), accuracy, x[:split], train_scores)
