"""The anchor: `mlflow.genai.evaluate` with the same target, metrics and judge as the Tessera run.

`predict_fn` asks the target endpoint through serving's OpenAI API with the openai SDK, with the
sampling the Tessera run sends (temperature 0, the same max_tokens and seed). The scorers compute the
same metrics: exact match and token F1 from services/evaluation/metrics.py, and the correctness
judge with the evaluation service's prompt template (services/evaluation/judges.py) through the same
judge endpoint, parsed the same way; a reply without a verdict is an error assessment (unmeasured),
not a 0. MLflow logs the run, its traces and assessments to a local SQLite tracking store.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from services.evaluation import metrics as m
from services.evaluation.judges import JUDGE_TEMPLATES

# What the evaluation service's judge calls use: greedy, this many tokens, the run's seed.
JUDGE_MAX_TOKENS = 256
METRICS = ("exact_match", "token_f1", "correctness")


@dataclass(frozen=True)
class RowScores:
    answer: str
    scores: dict[str, float | None]  # None: unmeasured
    judge_reply: str = ""  # the correctness judge's reply (first 2000 characters, as the service keeps it)


@dataclass(frozen=True)
class AnchorRun:
    wall_s: float
    rows: dict[str, RowScores]  # by question
    # Rows in MLflow's own result table: under load it has come back with fewer rows than were scored
    # (traces not yet written to the store when it is read), so the bench counts rows as scored.
    reported_rows: int = 0


class MlflowAnchor:
    def __init__(
        self,
        openai_url: str,
        api_key: str,
        target: str,
        judge: str,
        *,
        max_tokens: int,
        seed: int,
        tracking_dir: str,
        workers: int | None = None,
    ) -> None:
        if workers:
            os.environ["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = str(workers)
        import mlflow
        import openai

        self.mlflow = mlflow
        # The SDK's own retries stay off: a failed call should show, not be hidden in the timing.
        self.client = openai.OpenAI(base_url=f"{openai_url}/v1", api_key=api_key, max_retries=0, timeout=300)
        self.target, self.judge = target, judge
        self.max_tokens, self.seed = max_tokens, seed
        mlflow.set_tracking_uri(f"sqlite:///{tracking_dir}/mlflow.db")
        # Trace artifacts beside the store, not in ./mlruns of the working directory.
        if mlflow.get_experiment_by_name("eval-bench") is None:
            mlflow.create_experiment("eval-bench", artifact_location=f"{tracking_dir}/artifacts")
        mlflow.set_experiment("eval-bench")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.scorers = self._scorers()
        # What each row got, recorded as the scorers compute it (MLflow runs them on its worker threads).
        self._lock = threading.Lock()
        self._answers: dict[str, str] = {}
        self._scores: dict[str, dict[str, float | None]] = {}
        self.unmeasured_reasons: dict[str, str] = {}
        self._judge_replies: dict[str, str] = {}

    def _record(self, question: str, metric: str, value: float | None) -> None:
        with self._lock:
            self._scores.setdefault(question, {})[metric] = value

    def _chat(self, model: str, content: str, max_tokens: int) -> str:
        reply = self.client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": content}],
            temperature=0.0,
            max_tokens=max_tokens,
            seed=self.seed,
        )
        return reply.choices[0].message.content or ""

    def predict(self, question: str) -> str:
        answer = self._chat(self.target, question, self.max_tokens)
        with self._lock:
            self._answers[question] = answer
        return answer

    def _scorers(self) -> list:
        from mlflow.entities import Feedback
        from mlflow.genai.scorers import scorer

        template = JUDGE_TEMPLATES["correctness"]

        @scorer(name="exact_match")
        def exact_match(inputs: dict, outputs: str, expectations: dict) -> float:
            value = 1.0 if m.exact_match(outputs, [expectations["expected_response"]]) else 0.0
            self._record(inputs["question"], "exact_match", value)
            return value

        @scorer(name="token_f1")
        def token_f1(inputs: dict, outputs: str, expectations: dict) -> float:
            value = m.token_f1(outputs, [expectations["expected_response"]])
            self._record(inputs["question"], "token_f1", value)
            return value

        @scorer(name="correctness")
        def correctness(inputs: dict, outputs: str, expectations: dict) -> Feedback:
            prompt = template.render(
                question=inputs["question"], reference=expectations["expected_response"], answer=outputs
            )
            try:
                reply = self._chat(self.judge, prompt, JUDGE_MAX_TOKENS)
            except Exception as exc:  # noqa: BLE001 - a failed judge call is unmeasured, with its reason
                reason = f"the judge endpoint failed: {exc}"[:1000]
            else:
                with self._lock:
                    self._judge_replies[inputs["question"]] = reply[:2000]
                verdict = template.parse(reply)
                if verdict is not None:
                    self._record(inputs["question"], "correctness", float(verdict))
                    return Feedback(value=float(verdict), rationale=reply[:2000])
                reason = "the judge's reply has no single 'VERDICT: PASS|FAIL' line"
            self._record(inputs["question"], "correctness", None)
            with self._lock:
                self.unmeasured_reasons[inputs["question"]] = reason
            return Feedback(value=None, error=reason)

        return [exact_match, token_f1, correctness]

    def evaluate(self, rows: list[dict]) -> AnchorRun:
        data = [
            {"inputs": {"question": r["request"]}, "expectations": {"expected_response": r["expected_response"]}}
            for r in rows
        ]
        with self._lock:
            self._answers.clear()
            self._scores.clear()
            self.unmeasured_reasons.clear()
            self._judge_replies.clear()
        started = time.perf_counter()
        result = self.mlflow.genai.evaluate(data=data, predict_fn=self.predict, scorers=self.scorers)
        wall = time.perf_counter() - started
        with self._lock:
            scored = {
                question: RowScores(
                    answer,
                    {x: self._scores.get(question, {}).get(x) for x in METRICS},
                    self._judge_replies.get(question, ""),
                )
                for question, answer in self._answers.items()
            }
        return AnchorRun(wall, scored, len(result.result_df))
