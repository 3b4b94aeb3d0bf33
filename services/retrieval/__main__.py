"""`python -m services.retrieval`: the retrieval service (gRPC 50054, metrics 9104, sync consumer)."""

from services.common.config import load
from services.common.lifecycle import run_service
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings


def main() -> None:
    settings = load(RetrievalSettings)
    run_service(RetrievalApp(settings), settings.log_level)


if __name__ == "__main__":
    main()
