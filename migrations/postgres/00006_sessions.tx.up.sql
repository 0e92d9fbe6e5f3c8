-- Sessions (SPEC §12): one per login. refresh_hash is the SHA-256 (hex) of
-- the session's current refresh token; the tokens it replaced stay in
-- spent_refresh_tokens until they would have expired, so that presenting
-- one again is recognised as reuse and revokes the session. A revoked
-- session keeps its row (revoked_at set): replicas read the recent
-- revocations back after a broker outage.
CREATE TABLE sessions (
    id           bigserial PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device       text NOT NULL,
    refresh_hash text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz NULL
);
--bun:split
CREATE UNIQUE INDEX sessions_refresh_hash_key ON sessions (refresh_hash);
--bun:split
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
--bun:split
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
--bun:split
CREATE TABLE spent_refresh_tokens (
    hash       text PRIMARY KEY,
    session_id bigint NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);
--bun:split
CREATE INDEX spent_refresh_tokens_session_id_idx ON spent_refresh_tokens (session_id);
