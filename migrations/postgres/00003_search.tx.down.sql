DROP INDEX IF EXISTS messages_text_tsv_idx;
--bun:split
ALTER TABLE messages DROP COLUMN IF EXISTS text_tsv;
