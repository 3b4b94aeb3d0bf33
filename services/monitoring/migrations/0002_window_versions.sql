-- Every write to a window bumps its version; evaluation clears `dirty` only if the version it
-- read is still current, so records landing while a window is evaluated trigger another pass.
ALTER TABLE windows ADD COLUMN version bigint NOT NULL DEFAULT 0;
