-- The registry's tables. Names of securables are kept as text so grants can
-- refer to any kind; renames update them in the same transaction.

CREATE TABLE catalogs (
    name        text PRIMARY KEY,
    comment     text NOT NULL DEFAULT '',
    owner       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE schemas (
    catalog_name text NOT NULL REFERENCES catalogs (name) ON DELETE CASCADE,
    name         text NOT NULL,
    comment      text NOT NULL DEFAULT '',
    owner        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (catalog_name, name)
);

CREATE TABLE grants (
    securable_type text NOT NULL,
    securable_name text NOT NULL,
    principal      text NOT NULL,
    privilege      text NOT NULL,
    granted_by     text NOT NULL,
    granted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (securable_type, securable_name, principal, privilege)
);
CREATE INDEX grants_by_principal ON grants (principal, securable_type, securable_name);

-- Experiments and runs -------------------------------------------------------

CREATE TABLE experiments (
    experiment_id     bigserial PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    artifact_location text NOT NULL,
    lifecycle_stage   text NOT NULL DEFAULT 'active',
    catalog_name      text NOT NULL,
    schema_name       text NOT NULL,
    owner             text NOT NULL,
    creation_time     bigint NOT NULL,
    last_update_time  bigint NOT NULL,
    FOREIGN KEY (catalog_name, schema_name) REFERENCES schemas (catalog_name, name) ON DELETE CASCADE
);
CREATE INDEX experiments_by_schema ON experiments (catalog_name, schema_name);

CREATE TABLE experiment_tags (
    experiment_id bigint NOT NULL REFERENCES experiments ON DELETE CASCADE,
    key           text NOT NULL,
    value         text NOT NULL,
    PRIMARY KEY (experiment_id, key)
);

CREATE TABLE runs (
    run_pk          bigserial PRIMARY KEY,
    run_id          text NOT NULL UNIQUE,
    experiment_id   bigint NOT NULL REFERENCES experiments ON DELETE CASCADE,
    run_name        text NOT NULL DEFAULT '',
    user_id         text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'RUNNING',
    start_time      bigint NOT NULL,
    end_time        bigint,
    artifact_uri    text NOT NULL,
    lifecycle_stage text NOT NULL DEFAULT 'active'
);
CREATE INDEX runs_by_experiment ON runs (experiment_id, start_time DESC, run_pk);

CREATE TABLE params (
    run_pk bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    key    text NOT NULL,
    value  text NOT NULL,
    PRIMARY KEY (run_pk, key)
);

CREATE TABLE run_tags (
    run_pk bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    key    text NOT NULL,
    value  text NOT NULL,
    PRIMARY KEY (run_pk, key)
);

-- Every logged point; written with COPY, never read on write. No foreign key:
-- its check would cost a lookup per row on the hot path (run deletes clean up).
CREATE TABLE metrics (
    run_pk    bigint NOT NULL,
    key       text NOT NULL,
    value     double precision NOT NULL,
    step      bigint NOT NULL,
    timestamp bigint NOT NULL
);
CREATE INDEX metrics_history ON metrics (run_pk, key, step, timestamp);

-- One row per (run, key): the point with the highest (step, timestamp), kept by an
-- upsert of the batch's own maximum, so search filters never scan history.
CREATE TABLE latest_metrics (
    run_pk    bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    key       text NOT NULL,
    value     double precision NOT NULL,
    step      bigint NOT NULL,
    timestamp bigint NOT NULL,
    PRIMARY KEY (run_pk, key)
);
CREATE INDEX latest_metrics_by_value ON latest_metrics (key, value);

-- MLflow 3 logged models ------------------------------------------------------

CREATE TABLE logged_models (
    model_id          text PRIMARY KEY,
    experiment_id     bigint NOT NULL REFERENCES experiments ON DELETE CASCADE,
    name              text NOT NULL,
    artifact_location text NOT NULL,
    source_run_id     text,
    model_type        text NOT NULL DEFAULT '',
    status            text NOT NULL DEFAULT 'PENDING',
    lifecycle_stage   text NOT NULL DEFAULT 'active',
    creation_time     bigint NOT NULL,
    last_updated_time bigint NOT NULL,
    tags              jsonb NOT NULL DEFAULT '{}',
    params            jsonb NOT NULL DEFAULT '{}',
    metrics           jsonb NOT NULL DEFAULT '[]'
);

-- Registered models, versions, aliases ----------------------------------------

CREATE TABLE registered_models (
    model_pk       bigserial PRIMARY KEY,
    catalog_name   text NOT NULL,
    schema_name    text NOT NULL,
    name           text NOT NULL,
    description    text NOT NULL DEFAULT '',
    owner          text NOT NULL,
    tags           jsonb NOT NULL DEFAULT '{}',
    latest_version bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (catalog_name, schema_name, name),
    FOREIGN KEY (catalog_name, schema_name) REFERENCES schemas (catalog_name, name) ON DELETE CASCADE
);

CREATE TABLE model_versions (
    model_pk         bigint NOT NULL REFERENCES registered_models ON DELETE CASCADE,
    version          bigint NOT NULL,
    source           text NOT NULL DEFAULT '',
    run_id           text NOT NULL DEFAULT '',
    model_id         text NOT NULL DEFAULT '',
    status           text NOT NULL,
    status_message   text NOT NULL DEFAULT '',
    description      text NOT NULL DEFAULT '',
    created_by       text NOT NULL,
    storage_location text NOT NULL,
    tags             jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_pk, version)
);

CREATE TABLE model_aliases (
    model_pk bigint NOT NULL REFERENCES registered_models ON DELETE CASCADE,
    alias    text NOT NULL,
    version  bigint NOT NULL,
    PRIMARY KEY (model_pk, alias)
);

-- Kept after a model is deleted: the history is the audit trail.
CREATE TABLE alias_history (
    id               bigserial PRIMARY KEY,
    model_pk         bigint NOT NULL,
    alias            text NOT NULL,
    action           text NOT NULL,
    version          bigint NOT NULL,
    previous_version bigint NOT NULL,
    actor            text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alias_history_by_model ON alias_history (model_pk, alias, id DESC);

-- Lineage -----------------------------------------------------------------------

CREATE TABLE lineage_edges (
    source_type text NOT NULL,
    source_name text NOT NULL,
    target_type text NOT NULL,
    target_name text NOT NULL,
    properties  jsonb NOT NULL DEFAULT '{}',
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_type, source_name, target_type, target_name)
);
CREATE INDEX lineage_by_target ON lineage_edges (target_type, target_name);

-- Outbox: events written in the transaction of the change they announce --------

CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
