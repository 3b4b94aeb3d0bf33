"""`python -m services.monitoring`: the monitoring service (gRPC 50056, metrics 9106, payload-log consumer)."""

from services.common.config import load
from services.common.lifecycle import run_service
from services.monitoring.app import MonitoringApp
from services.monitoring.settings import MonitoringSettings


def main() -> None:
    settings = load(MonitoringSettings)
    run_service(MonitoringApp(settings), settings.log_level)


if __name__ == "__main__":
    main()
