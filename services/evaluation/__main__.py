"""`python -m services.evaluation`: the evaluation API, its Kafka consumer and the online scheduler."""

from services.common.config import load
from services.common.lifecycle import run_service
from services.evaluation.app import EvaluationApp
from services.evaluation.settings import EvaluationSettings

if __name__ == "__main__":
    settings = load(EvaluationSettings)
    run_service(EvaluationApp(settings), settings.log_level)
