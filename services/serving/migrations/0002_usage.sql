-- Usage limits and budgets per endpoint: principal '' is every caller together, '*' each caller, else one caller.
CREATE TABLE IF NOT EXISTS usage_limits (
    endpoint   text NOT NULL,
    principal  text NOT NULL,
    metric     text NOT NULL CHECK (metric IN ('requests', 'tokens', 'cost_usd')),
    period     text NOT NULL CHECK (period IN ('minute', 'day', 'month')),
    max_value  double precision NOT NULL CHECK (max_value >= 0),
    PRIMARY KEY (endpoint, principal, metric, period)
);

-- What is used (settled) and reserved (in flight) in one window; every replica admits against these rows.
CREATE TABLE IF NOT EXISTS usage_counters (
    endpoint     text NOT NULL,
    principal    text NOT NULL,
    metric       text NOT NULL,
    period       text NOT NULL,
    window_start timestamptz NOT NULL,
    used         double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint, principal, metric, period, window_start)
);

-- Settled usage per UTC day, endpoint, principal and served model (GetUsage, dashboards).
CREATE TABLE IF NOT EXISTS usage_daily (
    day               date NOT NULL,
    endpoint          text NOT NULL,
    principal         text NOT NULL,
    served_model      text NOT NULL,
    requests          bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost_usd          double precision NOT NULL DEFAULT 0,
    unpriced_requests bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, endpoint, principal, served_model)
);
CREATE INDEX IF NOT EXISTS usage_daily_principal ON usage_daily (principal, day);
