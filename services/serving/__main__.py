"""`python -m services.serving`: the serving service (gRPC 50053 with OIP, metrics 9103, Kafka requests)."""

from services.common.config import load
from services.common.lifecycle import run_service
from services.serving.app import ServingApp
from services.serving.settings import ServingSettings


def main() -> None:
    settings = load(ServingSettings)
    run_service(ServingApp(settings), settings.log_level)


if __name__ == "__main__":
    main()
