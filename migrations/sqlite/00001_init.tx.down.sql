DROP TABLE IF EXISTS messages;
--bun:split
DROP TABLE IF EXISTS chat_members;
--bun:split
DROP TABLE IF EXISTS groups;
--bun:split
DROP TABLE IF EXISTS chats;
--bun:split
DROP TABLE IF EXISTS users;
