DROP TABLE message_reactions;
--bun:split
DROP INDEX messages_chat_id_rev_key;
--bun:split
ALTER TABLE messages DROP COLUMN reply_to_seq;
--bun:split
ALTER TABLE messages DROP COLUMN deleted;
--bun:split
ALTER TABLE messages DROP COLUMN edited_at;
--bun:split
ALTER TABLE messages DROP COLUMN created_rev;
--bun:split
ALTER TABLE messages DROP COLUMN rev;
--bun:split
ALTER TABLE chats DROP COLUMN last_rev;
