-- Securables other services own and register here (endpoints, monitors): a name,
-- an owner, and grants in `grants` under the same (securable_type, securable_name).
CREATE TABLE top_level_securables (
    securable_type text NOT NULL,
    name           text NOT NULL,
    owner          text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (securable_type, name)
);
