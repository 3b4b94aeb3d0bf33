"""`python -m services.registry`: the registry service (gRPC 50051, MLflow REST 5000, metrics 9101)."""

from services.common.config import load
from services.common.lifecycle import run_service
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings


def main() -> None:
    settings = load(RegistrySettings)
    run_service(RegistryApp(settings), settings.log_level)


if __name__ == "__main__":
    main()
