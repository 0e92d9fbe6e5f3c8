// The packed SDK in a project of its own: CI (`bash .ci/run node_sdk`)
// installs the tarball from `npm pack` into a fresh folder outside the
// repository, type-checks this file against the shipped types and runs it
// against a live server (WINDI_URL). Node 20 has no global WebSocket, so
// this also proves the SDK finds the `ws` peer dependency by itself.
import { randomUUID } from "node:crypto";

import { ApiError, WindiConnection, WindiSession, createWindiClient, login, type Message } from "@windi-chat/sdk";

const base = process.env.WINDI_URL;
if (!base) throw new Error("WINDI_URL is not set");

async function account(name: string): Promise<{ id: number; email: string; password: string; token: string }> {
  const email = `${name}-${randomUUID().slice(0, 8)}@example.com`;
  const password = `pw-${randomUUID()}`;
  const anon = createWindiClient(base!);
  const reg = await anon.POST("/register", { body: { name, email, password } });
  if (!reg.data) throw new ApiError(reg.response.status, reg.error);
  const tok = await login(anon, email, password);
  return { id: reg.data.id, email, password, token: tok.access_token };
}

const alice = await account("alice");
const bob = await account("bob");
// Alice through a session: its api and connection refresh by themselves.
const session = await WindiSession.login(base, alice.email, alice.password, { device: "pack-test" });
const created = await session.api.POST("/chats", {
  body: { type: "group", name: "packed SDK", member_ids: [bob.id] },
});
if (!created.data) throw new ApiError(created.response.status, created.error);
const chatId = created.data.id;

let delivered!: (m: Message) => void;
const got = new Promise<Message>((resolve) => (delivered = resolve));
let changed!: (m: Message) => void;
const edited = new Promise<Message>((resolve) => (changed = resolve));
const bobConn = await WindiConnection.connect({ baseUrl: base, token: bob.token, chatId, onMessage: (m) => delivered(m), onUpdate: (m) => changed(m) });
const aliceConn = await session.connect({});
const ack = await aliceConn.send(chatId, "hello from the packed SDK").ack;
const m = await got;
if (m.id !== ack.message.id || m.text !== "hello from the packed SDK" || m.sender_id !== alice.id) {
  throw new Error(`bob got ${JSON.stringify(m)}, want the message acked as ${JSON.stringify(ack.message)}`);
}
aliceConn.edit(chatId, ack.message.seq, "edited by the packed SDK");
const e = await edited;
if (e.seq !== ack.message.seq || e.text !== "edited by the packed SDK" || e.rev <= ack.message.rev) {
  throw new Error(`bob got the update ${JSON.stringify(e)}, want the edit of seq ${ack.message.seq}`);
}
await Promise.all([aliceConn.close(), bobConn.close()]);
await session.refresh(); // rotation: the session goes on with a new refresh token
const devices = await session.api.GET("/sessions");
if (!devices.data?.some((d) => d.current && d.device === "pack-test")) throw new Error(`GET /sessions: ${JSON.stringify(devices.data ?? devices.error)}`);
await session.logout();
console.log(`smoke: ok (seq ${ack.message.seq} acked to alice, delivered to bob, edited at rev ${e.rev}; session ${session.sessionId} refreshed ${session.refreshCount}x, logged out)`);
