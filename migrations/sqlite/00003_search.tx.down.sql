DROP TRIGGER IF EXISTS messages_fts_delete;
--bun:split
DROP TRIGGER IF EXISTS messages_fts_update;
--bun:split
DROP TRIGGER IF EXISTS messages_fts_insert;
--bun:split
DROP TABLE IF EXISTS messages_fts;
