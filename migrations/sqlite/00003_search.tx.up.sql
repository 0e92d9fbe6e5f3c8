-- Full-text search (SPEC §11.5): an FTS5 index over messages.text. It is an
-- external-content table (content='messages'), so it stores the index but
-- not a second copy of the text. The triggers keep it current inside the
-- transaction of whatever writes messages (sends, later edits and
-- tombstones, cascaded chat deletes). unicode61 splits on everything but
-- letters and numbers and folds case for all of Unicode (Cyrillic
-- included); remove_diacritics 2 also lets "creme" find "crème".
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
--bun:split
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;
--bun:split
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;
--bun:split
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
--bun:split
-- Index the messages stored before this migration.
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
