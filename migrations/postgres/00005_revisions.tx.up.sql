-- Revisions (SPEC §11.1): every change to a chat's timeline takes the next
-- rev of the chat. Before this migration every change was a new message,
-- so existing messages take rev = created_rev = seq, and each chat's
-- last_rev its last_seq.
ALTER TABLE chats ADD COLUMN last_rev bigint NOT NULL DEFAULT 0;
--bun:split
UPDATE chats SET last_rev = last_seq;
--bun:split
ALTER TABLE messages
    ADD COLUMN rev          bigint      NOT NULL DEFAULT 0,
    ADD COLUMN created_rev  bigint      NOT NULL DEFAULT 0,
    ADD COLUMN edited_at    timestamptz NULL,
    ADD COLUMN deleted      boolean     NOT NULL DEFAULT false,
    ADD COLUMN reply_to_seq bigint      NULL;
--bun:split
UPDATE messages SET rev = seq, created_rev = seq;
--bun:split
CREATE UNIQUE INDEX messages_chat_id_rev_key ON messages (chat_id, rev);
--bun:split
CREATE TABLE message_reactions (
    chat_id   bigint NOT NULL,
    seq       bigint NOT NULL,
    user_id   bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji     text   NOT NULL,
    -- the rev that added it: emoji are ordered by their first use
    added_rev bigint NOT NULL,
    PRIMARY KEY (chat_id, seq, emoji, user_id),
    FOREIGN KEY (chat_id, seq) REFERENCES messages (chat_id, seq) ON DELETE CASCADE
);
