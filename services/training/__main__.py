"""`python -m services.training`: the training API (workers: `python -m services.training.worker`)."""

from services.common.config import load
from services.common.lifecycle import run_service
from services.training.app import TrainingApp
from services.training.settings import TrainingSettings

if __name__ == "__main__":
    settings = load(TrainingSettings)
    run_service(TrainingApp(settings), settings.log_level)
