"""The base tiny Llama against the one training fine-tunes on the made-up capitals: the evaluation
detects the fine-tuned one as better, with its interval, and the demo's function promotes its alias."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.training.v1 import training_pb2 as tpb

from services.common.auth import bearer
from services.evaluation.demo import evaluate_and_promote
from services.fixtures import capitals
from tests.integration.evaluation.stack import ALICE, REPO, Stack
from tests.integration.training.stack import Workers

pytestmark = pytest.mark.integration


async def test_the_fine_tuned_llama_is_detected_better_and_promoted(stack: Stack, unique: str) -> None:
    worker_env = {
        **os.environ,
        **stack.training_env,
        "PYTHONPATH": f"{REPO}:{REPO / 'protos' / 'gen' / 'python'}",
        "TESSERA_METRICS_PORT": "0",
    }
    # A training worker process, as the training tests start one.
    workers = Workers(worker_env, stack.work)
    workers.start()
    try:
        train, train_version = await stack.dataset(f"capitals_train_{unique}", capitals.chat_rows())
        target = f"{stack.catalog}.{stack.schema}.tuned_{unique}"
        job = await stack.training.SubmitJob(
            tpb.SubmitJobRequest(
                spec=tpb.JobSpec(
                    base_model=stack.llm_model,
                    base_version=1,
                    train_dataset=tpb.DatasetRef(dataset=train, version=train_version),
                    task=tpb.TASK_CHAT,
                    method=tpb.METHOD_FULL,
                    steps=30,
                    learning_rate=1e-3,
                    lr_schedule="constant",
                    batch_size=8,
                    sequence_length=64,
                    seed=7,
                    register_to=target,
                    alias="candidate",
                )
            ),
            metadata=bearer(ALICE),
        )
        async with asyncio.timeout(1800):
            while True:
                done = await stack.training.GetJob(tpb.GetJobRequest(job_id=job.job_id), metadata=bearer(ALICE))
                if done.state in (tpb.JOB_STATE_SUCCEEDED, tpb.JOB_STATE_FAILED, tpb.JOB_STATE_CANCELLED):
                    break
                await asyncio.sleep(2)
        assert done.state == tpb.JOB_STATE_SUCCEEDED, done.error_message
    finally:
        workers.stop_all()
    tuned_endpoint = await stack.endpoint(f"tuned-{unique}", target, done.model_version)

    outcome = await evaluate_and_promote(
        stack.channel,
        stack.training_channel,
        stack.registry_channel,
        ALICE,
        dataset=f"{stack.catalog}.{stack.schema}.capitals_eval_{unique}",
        rows=capitals.evaluation_rows(),
        baseline_endpoint=stack.llm_endpoint,
        candidate_endpoint=tuned_endpoint,
        model=target,
        alias="champion",
        say=logging.getLogger(__name__).info,
    )

    assert outcome.baseline.state == outcome.candidate.state == pb.RUN_STATE_SUCCEEDED
    exact = outcome.deciding
    assert exact.metric == "exact_match" and exact.test == "mcnemar_mid_p"
    assert exact.difference.estimate >= 0.75 and exact.difference.low > 0 and exact.significant
    assert exact.candidate_only >= 6 and exact.baseline_only == 0
    assert outcome.winner == "candidate" and outcome.promoted == f"{target}/{done.model_version}"
    champion = await stack.registry.GetModelVersionByAlias(
        rpb.GetModelVersionByAliasRequest(model_name=target, alias="champion"), metadata=bearer(ALICE)
    )
    assert champion.version == done.model_version
