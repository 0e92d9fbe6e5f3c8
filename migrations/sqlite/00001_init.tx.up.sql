CREATE TABLE users (
    id            integer PRIMARY KEY AUTOINCREMENT,
    name          text NOT NULL,
    email         text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamp NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))
);
--bun:split
CREATE UNIQUE INDEX users_email_key ON users (email);
--bun:split
CREATE TABLE chats (
    id          integer PRIMARY KEY AUTOINCREMENT,
    name        text NULL,
    type        text NOT NULL CHECK (type IN ('private', 'group')),
    created_at  timestamp NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    last_seq    bigint NOT NULL DEFAULT 0,
    private_key text NULL UNIQUE
);
--bun:split
CREATE TABLE groups (
    id         integer PRIMARY KEY REFERENCES chats (id) ON DELETE CASCADE,
    name       text NOT NULL,
    creator_id integer NOT NULL REFERENCES users (id)
);
--bun:split
CREATE TABLE chat_members (
    chat_id       integer NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id       integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at     timestamp NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    last_read_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (chat_id, user_id)
) WITHOUT ROWID;
--bun:split
CREATE INDEX chat_members_user_id_idx ON chat_members (user_id);
--bun:split
CREATE TABLE messages (
    id            integer PRIMARY KEY AUTOINCREMENT,
    chat_id       integer NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    sender_id     integer NOT NULL REFERENCES users (id),
    text          text NOT NULL,
    client_msg_id text NOT NULL,
    created_at    timestamp NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    UNIQUE (chat_id, seq),
    UNIQUE (chat_id, sender_id, client_msg_id)
);
