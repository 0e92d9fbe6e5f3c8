CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    email         text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
--bun:split
CREATE UNIQUE INDEX users_email_key ON users (email);
--bun:split
CREATE TABLE chats (
    id          bigserial PRIMARY KEY,
    name        text NULL,
    type        text NOT NULL CHECK (type IN ('private', 'group')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_seq    bigint NOT NULL DEFAULT 0,
    private_key text NULL UNIQUE
);
--bun:split
CREATE TABLE groups (
    id         bigint PRIMARY KEY REFERENCES chats (id) ON DELETE CASCADE,
    name       text NOT NULL,
    creator_id bigint NOT NULL REFERENCES users (id)
);
--bun:split
CREATE TABLE chat_members (
    chat_id       bigint NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at     timestamptz NOT NULL DEFAULT now(),
    last_read_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (chat_id, user_id)
);
--bun:split
CREATE INDEX chat_members_user_id_idx ON chat_members (user_id);
--bun:split
CREATE TABLE messages (
    id            bigserial PRIMARY KEY,
    chat_id       bigint NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    sender_id     bigint NOT NULL REFERENCES users (id),
    text          text NOT NULL,
    client_msg_id text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_chat_id_seq_key UNIQUE (chat_id, seq),
    CONSTRAINT messages_chat_id_sender_id_client_msg_id_key UNIQUE (chat_id, sender_id, client_msg_id)
);
