"""`python -m services.retrieval`: the retrieval service (gRPC 50054, metrics 9104, sync consumer)."""

import asyncio
import logging

from services.common.config import load
from services.common.lifecycle import configure_logging, run_service
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings


def use_uvloop() -> bool:
    """uvloop where installed: each Query wakes the loop several times (gRPC, PostgreSQL), and
    uvloop's wake-ups cost a fraction of asyncio's (measured in loadtests/retrieval_bench)."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def main() -> None:
    settings = load(RetrievalSettings)
    configure_logging(settings.log_level)
    uvloop = settings.retrieval_uvloop and use_uvloop()
    logging.getLogger(__name__).info("event loop: %s", "uvloop" if uvloop else "asyncio")
    run_service(RetrievalApp(settings), settings.log_level)


if __name__ == "__main__":
    main()
