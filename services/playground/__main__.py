"""`python -m services.playground`: the playground web page (HTTP 8080, metrics 9107)."""

from services.common.config import load
from services.common.lifecycle import run_service
from services.playground.app import PlaygroundApp
from services.playground.settings import PlaygroundSettings


def main() -> None:
    settings = load(PlaygroundSettings)
    run_service(PlaygroundApp(settings), settings.log_level)


if __name__ == "__main__":
    main()
