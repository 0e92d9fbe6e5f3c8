DROP TABLE spent_refresh_tokens;
--bun:split
DROP TABLE sessions;
