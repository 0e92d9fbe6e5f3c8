DROP TABLE message_reactions;
--bun:split
DROP INDEX messages_chat_id_rev_key;
--bun:split
ALTER TABLE messages DROP COLUMN rev, DROP COLUMN created_rev, DROP COLUMN edited_at, DROP COLUMN deleted, DROP COLUMN reply_to_seq;
--bun:split
ALTER TABLE chats DROP COLUMN last_rev;
