"""Experiments, runs and metric logging (the MLflow tracking half of the registry)."""

from __future__ import annotations

import uuid

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.paging import Page
from services.registry import search_filter
from services.registry.access import Chain, Privilege
from services.registry.context import RegistryContext, next_offset_token, now_ms, page_window
from services.registry.entities import ACTIVE, DELETED, RUN_STATUSES, Experiment, Metric, MetricColumns, Run
from services.registry.names import SchemaName
from services.registry.store import metrics as metric_store
from services.registry.store import securables, tracking

RUN_NAME_TAG = "mlflow.runName"
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
_VIEW_STAGES = {"ACTIVE_ONLY": [ACTIVE], "DELETED_ONLY": [DELETED], "ALL": [ACTIVE, DELETED]}


def _stages(view: str) -> list[str]:
    try:
        return _VIEW_STAGES[view or "ACTIVE_ONLY"]
    except KeyError:
        raise InvalidArgument(f"unknown view type {view!r}", field="view_type") from None


def _experiment_id(value: str) -> int:
    if not str(value).isdigit():
        raise InvalidArgument(f"invalid experiment id {value!r}", field="experiment_id")
    return int(value)


class TrackingService:
    def __init__(self, ctx: RegistryContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings

    # -- experiments ----------------------------------------------------------------

    async def create_experiment(
        self, principal: str, name: str, artifact_location: str = "", tags: dict | None = None, schema: str = ""
    ) -> Experiment:
        if not name or not name.strip():
            raise InvalidArgument("experiment name must not be empty", field="name")
        target = (
            SchemaName.parse(schema)
            if schema
            else SchemaName(self.settings.registry_default_catalog, self.settings.registry_default_schema)
        )
        location = self.ctx.files.uri(self.ctx.files.relative(artifact_location)) if artifact_location else None
        async with self.ctx.unit() as unit:
            chain = await securables.schema_chain(unit.conn, target.catalog, target.schema, principal)
            self.ctx.require(principal, chain, Privilege.CREATE_MODEL, f"schema {target.full!r}")
            experiment_id = await tracking.insert_experiment(
                unit.conn,
                name,
                location or self.ctx.files.uri("{id}"),
                target.catalog,
                target.schema,
                principal,
                now_ms(),
            )
            if experiment_id is None:
                raise AlreadyExists(f"experiment {name!r} already exists")
            await tracking.set_experiment_tags(unit.conn, experiment_id, tags or {})
            experiment, _ = await tracking.experiment_with_chain(unit.conn, principal, experiment_id=experiment_id)
        return experiment

    async def _experiment(self, conn, principal: str, privilege: Privilege, *, experiment_id=None, name=None):
        found = await tracking.experiment_with_chain(
            conn, principal, experiment_id=None if experiment_id is None else _experiment_id(experiment_id), name=name
        )
        what = f"experiment {experiment_id if name is None else name!r}"
        chain = self.ctx.require(principal, found[1] if found else None, privilege, what)
        return found[0], chain

    async def get_experiment(self, principal: str, experiment_id: str = "", name: str = "") -> Experiment:
        async with self.ctx.read() as conn:
            if name:
                return (await self._experiment(conn, principal, Privilege.EXECUTE, name=name))[0]
            return (await self._experiment(conn, principal, Privilege.EXECUTE, experiment_id=experiment_id))[0]

    async def search_experiments(
        self, principal: str, filter_: str = "", view: str = "", order_by=(), size: int = 0, token: str = ""
    ) -> Page:
        offset, size = page_window(token, size, 1000)
        clauses = search_filter.parse(filter_)
        async with self.ctx.read() as conn:
            found = await tracking.search_experiments(conn, principal, clauses, _stages(view), list(order_by))
        visible = [e for e, chain in found if self.ctx.can(principal, chain, Privilege.EXECUTE)]
        chunk = visible[offset : offset + size + 1]
        return Page(chunk[:size], next_offset_token(offset, size, len(chunk)))

    async def set_experiment_stage(self, principal: str, experiment_id: str, stage: str) -> Experiment:
        async with self.ctx.unit() as unit:
            experiment, _ = await self._experiment(unit.conn, principal, Privilege.MANAGE, experiment_id=experiment_id)
            await tracking.update_experiment(unit.conn, int(experiment.experiment_id), now_ms(), lifecycle_stage=stage)
            await tracking.set_runs_stage(unit.conn, int(experiment.experiment_id), stage)
            experiment.lifecycle_stage = stage
        return experiment

    async def rename_experiment(self, principal: str, experiment_id: str, new_name: str) -> None:
        if not new_name.strip():
            raise InvalidArgument("experiment name must not be empty", field="new_name")
        async with self.ctx.unit() as unit:
            experiment, _ = await self._experiment(unit.conn, principal, Privilege.MODIFY, experiment_id=experiment_id)
            taken = await tracking.experiment_with_chain(unit.conn, principal, name=new_name)
            if taken:
                raise AlreadyExists(f"experiment {new_name!r} already exists")
            await tracking.update_experiment(unit.conn, int(experiment.experiment_id), now_ms(), name=new_name)

    async def set_experiment_tag(self, principal: str, experiment_id: str, key: str, value: str | None) -> Experiment:
        if not key:
            raise InvalidArgument("tag key must not be empty", field="key")
        async with self.ctx.unit() as unit:
            experiment, _ = await self._experiment(unit.conn, principal, Privilege.MODIFY, experiment_id=experiment_id)
            if value is None:
                await tracking.delete_experiment_tag(unit.conn, int(experiment.experiment_id), key)
                experiment.tags.pop(key, None)
            else:
                await tracking.set_experiment_tags(unit.conn, int(experiment.experiment_id), {key: value})
                experiment.tags[key] = value
        return experiment

    # -- runs -----------------------------------------------------------------------

    async def _run(self, conn, principal: str, run_id: str, privilege: Privilege) -> tuple[dict, Chain]:
        if not run_id:
            raise InvalidArgument("run_id is required", field="run_id")
        found = await tracking.run_with_chain(conn, run_id, principal)
        chain = self.ctx.require(principal, found[1] if found else None, privilege, f"run {run_id!r}")
        return found[0], chain

    async def create_run(
        self,
        principal: str,
        experiment_id: str,
        run_name: str = "",
        start_time: int = 0,
        tags: dict | None = None,
        user_id: str = "",
    ) -> Run:
        tags = dict(tags or {})
        self._check_tags(tags)
        run_name = run_name or tags.get(RUN_NAME_TAG) or f"run-{uuid.uuid4().hex[:8]}"
        tags[RUN_NAME_TAG] = run_name
        run_id = uuid.uuid4().hex
        async with self.ctx.unit() as unit:
            experiment, _ = await self._experiment(unit.conn, principal, Privilege.MODIFY, experiment_id=experiment_id)
            if experiment.lifecycle_stage != ACTIVE:
                raise FailedPrecondition(f"experiment {experiment_id} is deleted; restore it to add runs")
            artifact_uri = f"{experiment.artifact_location.rstrip('/')}/{run_id}/artifacts"
            run_pk = await tracking.insert_run(
                unit.conn,
                run_id,
                int(experiment.experiment_id),
                run_name,
                user_id or principal,
                start_time or now_ms(),
                artifact_uri,
            )
            await metric_store.write_tags(unit.conn, run_pk, tags)
            row, _ = await tracking.run_with_chain(unit.conn, run_id, principal)
            return (await tracking.load_runs(unit.conn, [row]))[0]

    async def get_run(self, principal: str, run_id: str) -> Run:
        async with self.ctx.read() as conn:
            row, _ = await self._run(conn, principal, run_id, Privilege.EXECUTE)
            return (await tracking.load_runs(conn, [row]))[0]

    async def update_run(
        self, principal: str, run_id: str, status: str = "", end_time: int | None = None, run_name: str = ""
    ) -> Run:
        changes: dict[str, object] = {}
        if status:
            if status not in RUN_STATUSES:
                raise InvalidArgument(
                    f"invalid run status {status!r}; one of {', '.join(RUN_STATUSES)}", field="status"
                )
            changes["status"] = status
        if end_time:
            changes["end_time"] = end_time
        if run_name:
            changes["run_name"] = run_name
        async with self.ctx.unit() as unit:
            row, _ = await self._run(unit.conn, principal, run_id, Privilege.MODIFY)
            self._require_active(row)
            await tracking.update_run(unit.conn, row["run_pk"], **changes)
            if run_name:
                await metric_store.write_tags(unit.conn, row["run_pk"], {RUN_NAME_TAG: run_name})
            row, _ = await tracking.run_with_chain(unit.conn, run_id, principal)
            return (await tracking.load_runs(unit.conn, [row]))[0]

    async def set_run_stage(self, principal: str, run_id: str, stage: str) -> Run:
        async with self.ctx.unit() as unit:
            row, _ = await self._run(unit.conn, principal, run_id, Privilege.MODIFY)
            await tracking.update_run(unit.conn, row["run_pk"], lifecycle_stage=stage)
            row["lifecycle_stage"] = stage
            return (await tracking.load_runs(unit.conn, [row]))[0]

    async def search_runs(
        self,
        principal: str,
        experiment_ids: list[str],
        filter_: str = "",
        view: str = "",
        order_by=(),
        size: int = 0,
        token: str = "",
    ) -> Page:
        if not experiment_ids:
            raise InvalidArgument("at least one experiment id is required", field="experiment_ids")
        if len(experiment_ids) > self.settings.registry_max_search_experiments:
            raise InvalidArgument(
                f"at most {self.settings.registry_max_search_experiments} experiments per search",
                field="experiment_ids",
            )
        offset, size = page_window(token, size, 1000)
        clauses = search_filter.parse(filter_)
        stages = _stages(view)
        async with self.ctx.read() as conn:
            ids = []
            for experiment_id in experiment_ids:
                experiment, _ = await self._experiment(conn, principal, Privilege.EXECUTE, experiment_id=experiment_id)
                ids.append(int(experiment.experiment_id))
            rows = await tracking.search_runs(conn, ids, clauses, stages, list(order_by), offset, size + 1)
            runs = await tracking.load_runs(conn, rows[:size])
        return Page(runs, next_offset_token(offset, size, len(rows)))

    # -- logging --------------------------------------------------------------------

    @staticmethod
    def _require_active(row: dict) -> None:
        if row["lifecycle_stage"] != ACTIVE:
            raise FailedPrecondition(f"run {row['run_id']} is deleted; restore it first")

    def _check_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            if not key or len(key) > MAX_KEY:
                raise InvalidArgument(f"invalid tag key {key!r} (1 to {MAX_KEY} characters)", field="tags")
            if len(value) > MAX_TAG_VALUE:
                raise InvalidArgument(f"tag {key!r}: value longer than {MAX_TAG_VALUE} characters", field="tags")

    def check_batch(
        self, metrics: MetricColumns, params: list[tuple[str, str]], tags: list[tuple[str, str]]
    ) -> dict[str, str]:
        s = self.settings
        if len(metrics) > s.registry_max_batch_metrics:
            raise InvalidArgument(
                f"batch has {len(metrics)} metrics; at most {s.registry_max_batch_metrics}", field="metrics"
            )
        if len(params) > s.registry_max_batch_params:
            raise InvalidArgument(
                f"batch has {len(params)} params; at most {s.registry_max_batch_params}", field="params"
            )
        if len(tags) > s.registry_max_batch_tags:
            raise InvalidArgument(f"batch has {len(tags)} tags; at most {s.registry_max_batch_tags}", field="tags")
        # Keys repeat within a batch: check each distinct one once.
        for key in set(metrics.keys):
            if not key or len(key) > MAX_KEY:
                raise InvalidArgument(f"invalid metric key {key!r} (1 to {MAX_KEY} characters)", field="metrics")
        unique: dict[str, str] = {}
        for key, value in params:
            if not key or len(key) > MAX_KEY:
                raise InvalidArgument(f"invalid param key {key!r} (1 to {MAX_KEY} characters)", field="params")
            if len(value) > MAX_PARAM_VALUE:
                raise InvalidArgument(f"param {key!r}: value longer than {MAX_PARAM_VALUE} characters", field="params")
            if unique.setdefault(key, value) != value:
                raise InvalidArgument(f"param {key!r} given twice with different values in one batch", field="params")
        self._check_tags(dict(tags))
        return unique

    async def log_batch(
        self,
        principal: str,
        run_id: str,
        metrics: MetricColumns | list[Metric],
        params: list[tuple[str, str]] = (),
        tags: list[tuple[str, str]] = (),
    ) -> None:
        if not isinstance(metrics, MetricColumns):
            metrics = MetricColumns.of(metrics)
        unique_params = self.check_batch(metrics, list(params), list(tags))
        async with self.ctx.unit() as unit:
            row, _ = await self._run(unit.conn, principal, run_id, Privilege.MODIFY)
            self._require_active(row)
            await metric_store.write_params(unit.conn, row["run_pk"], unique_params)
            await metric_store.write_metrics(unit.conn, row["run_pk"], metrics)
            await metric_store.write_tags(unit.conn, row["run_pk"], dict(tags))

    async def delete_run_tag(self, principal: str, run_id: str, key: str) -> None:
        async with self.ctx.unit() as unit:
            row, _ = await self._run(unit.conn, principal, run_id, Privilege.MODIFY)
            self._require_active(row)
            if not await tracking.delete_run_tag(unit.conn, row["run_pk"], key):
                raise NotFound(f"run {run_id} has no tag {key!r}")

    async def metric_history(
        self, principal: str, run_id: str, key: str, size: int = 0, token: str = "", max_points: int = 0
    ) -> Page:
        if not key:
            raise InvalidArgument("metric_key is required", field="metric_key")
        if max_points < 0:
            raise InvalidArgument("max_points must not be negative", field="max_points")
        offset, size = page_window(token, size, 25_000)
        async with self.ctx.read() as conn:
            row, _ = await self._run(conn, principal, run_id, Privilege.EXECUTE)
            if max_points:
                return Page(await metric_store.metric_history_downsampled(conn, row["run_pk"], key, max_points))
            points = await metric_store.metric_history(conn, row["run_pk"], key, offset, size + 1)
        return Page(points[:size], next_offset_token(offset, size, len(points)))

    async def run_artifact_location(self, principal: str, run_id: str, privilege: Privilege) -> str:
        """The run's artifact folder, relative to the root, once the caller may read or write it."""
        async with self.ctx.read() as conn:
            row, _ = await self._run(conn, principal, run_id, privilege)
        return self.ctx.files.relative(row["artifact_uri"])
