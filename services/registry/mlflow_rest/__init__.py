"""MLflow's REST API over the registry core, so the stock `mlflow` client works against Tessera unchanged."""
