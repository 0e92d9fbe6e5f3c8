-- Full-text search (SPEC §11.5). text_tsv is generated from text, so every
-- writer (sends, later edits and tombstones) keeps it current in its own
-- transaction without knowing it exists. The 'simple' configuration only
-- splits into words and lowercases them (by the database's LC_CTYPE), with
-- no stemming and no stop words, so it treats every language alike and
-- prefix queries see the words as written. Adding the column rewrites the
-- table once, which computes it for every existing message.
ALTER TABLE messages
    ADD COLUMN text_tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED;
--bun:split
CREATE INDEX messages_text_tsv_idx ON messages USING gin (text_tsv);
