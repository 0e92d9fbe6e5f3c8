// The TypeScript SDK against a running server (WINDI_URL): REST through
// openapi-fetch typed by the generated paths, WebSocket frames typed by the
// spec's ClientFrame/ServerFrame schemas. Type errors here fail CI before the
// test runs (`tsc`), so a spec change that breaks clients is caught.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import createClient from "openapi-fetch";
import WebSocket from "ws";

import { formBody, parseServerFrame, wsURL, type Chat, type SearchHit, type ServerFrame, type ServerFrameOf } from "../src/index.js";
import type { components, paths } from "../src/schema.js";

type Schemas = components["schemas"];

const BASE = process.env.WINDI_URL ?? "";
if (!BASE) throw new Error("WINDI_URL is not set: start a server and point WINDI_URL at it");

const FRAME_TIMEOUT_MS = 5000;

/** One registered, logged-in user with its own authenticated client. */
interface Account {
  user: Schemas["User"];
  token: string;
  api: ReturnType<typeof createClient<paths>>;
}

const anon = createClient<paths>({ baseUrl: BASE });

async function signUp(name: string): Promise<Account> {
  const email = `${name.toLowerCase()}-${randomUUID().slice(0, 8)}@example.com`;
  const password = `pw-${randomUUID()}`;
  const reg = await anon.POST("/register", { body: { name, email, password } });
  assert.equal(reg.response.status, 201, `register ${email}: ${JSON.stringify(reg.error)}`);
  assert.ok(reg.data);
  assert.equal(reg.data.email, email);

  // POST /login takes the OAuth2 password form, not JSON.
  const login = await anon.POST("/login", {
    body: { username: email, password },
    bodySerializer: formBody,
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  assert.equal(login.response.status, 200, `login ${email}: ${JSON.stringify(login.error)}`);
  assert.ok(login.data);
  assert.equal(login.data.token_type, "bearer");
  assert.ok(login.data.expires_in > 0);
  const token = login.data.access_token;
  const api = createClient<paths>({ baseUrl: BASE, headers: { Authorization: `Bearer ${token}` } });
  return { user: reg.data, token, api };
}

/** A WebSocket whose server frames can be awaited by type. */
class Socket {
  private frames: ServerFrame[] = [];
  private wake: (() => void) | undefined;
  private constructor(readonly ws: WebSocket, readonly who: string) {
    ws.on("message", (data, isBinary) => {
      assert.equal(isBinary, false, "the server sends text frames");
      this.frames.push(parseServerFrame(data.toString()));
      this.wake?.();
    });
  }

  static open(url: string, who: string): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const s = new Socket(ws, who);
      ws.once("open", () => resolve(s));
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) => reject(new Error(`${who}: upgrade refused with ${res.statusCode}`)));
    });
  }

  send(frame: Schemas["ClientFrame"]): void {
    this.ws.send(JSON.stringify(frame));
  }

  /**
   * expect waits for the first frame of the given type that matches, skipping
   * (and keeping) others such as presence; an error frame fails at once.
   */
  async expect<T extends ServerFrame["type"]>(
    type: T,
    match: (f: ServerFrameOf<T>) => boolean = () => true,
  ): Promise<ServerFrameOf<T>> {
    const deadline = Date.now() + FRAME_TIMEOUT_MS;
    for (;;) {
      const err = this.frames.find((f): f is Schemas["ErrorFrame"] => f.type === "error");
      if (err && type !== "error") {
        assert.fail(`${this.who} got an error frame: ${err.code}: ${err.message}`);
      }
      const i = this.frames.findIndex((f) => f.type === type && match(f as ServerFrameOf<T>));
      if (i >= 0) return this.frames.splice(i, 1)[0] as ServerFrameOf<T>;
      const left = deadline - Date.now();
      if (left <= 0) {
        assert.fail(`${this.who}: no ${type} frame within ${FRAME_TIMEOUT_MS} ms; got ${JSON.stringify(this.frames.map(summarize))}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once("close", () => resolve());
      this.ws.close(1000);
    });
  }
}

/** summarize narrows a server frame on `type` into one line. */
function summarize(frame: ServerFrame): string {
  switch (frame.type) {
    case "message.ack":
      return `ack ${frame.client_msg_id} seq ${frame.message.seq}${frame.duplicate ? " (duplicate)" : ""}`;
    case "message.new":
      return `new seq ${frame.message.seq} from ${frame.message.sender_id}: ${frame.message.text}`;
    case "message.read":
      return `read chat ${frame.chat_id} user ${frame.user_id} seq ${frame.seq}`;
    case "chat.read":
      return `chat.read chat ${frame.chat_id} seq ${frame.seq}`;
    case "presence":
      return `presence user ${frame.user_id} ${frame.online ? "online" : "offline"}`;
    case "member.added":
    case "member.removed":
      return `${frame.type} user ${frame.user_id} chat ${frame.chat_id}`;
    case "error":
      return `error ${frame.code}: ${frame.message}`;
    default:
      return (frame as { type: string }).type;
  }
}

describe("WinDI Chat TypeScript SDK against " + BASE, () => {
  let alice: Account;
  let bob: Account;
  let chat: Schemas["Chat"];
  const sockets: Socket[] = [];

  before(async () => {
    alice = await signUp("Alice");
    bob = await signUp("Bob");
  });

  after(async () => {
    await Promise.all(sockets.map((s) => s.close()));
  });

  test("GET /users/me returns the logged-in user", async () => {
    const me = await alice.api.GET("/users/me");
    assert.equal(me.response.status, 200);
    assert.deepEqual(me.data, alice.user);
  });

  test("GET /users finds a user by prefix", async () => {
    const found = await alice.api.GET("/users", { params: { query: { q: bob.user.email, limit: 5 } } });
    assert.equal(found.response.status, 200);
    assert.deepEqual(
      found.data?.map((u) => u.id),
      [bob.user.id],
    );
  });

  test("errors are typed RFC 9457 problems", async () => {
    const missing = await alice.api.GET("/chats/{chat_id}", { params: { path: { chat_id: 2 ** 40 } } });
    assert.equal(missing.response.status, 404);
    assert.equal(missing.data, undefined);
    assert.equal(missing.error?.code, "not_found");
    assert.match(missing.response.headers.get("content-type") ?? "", /^application\/problem\+json/);

    const noToken = await anon.GET("/users/me");
    assert.equal(noToken.response.status, 401);
    assert.equal(noToken.error?.code, "unauthorized");
  });

  test("POST /chats creates a group with the other user", async () => {
    const created = await alice.api.POST("/chats", {
      body: { type: "group", name: "SDK test", member_ids: [bob.user.id] },
    });
    assert.equal(created.response.status, 201, JSON.stringify(created.error));
    assert.ok(created.data);
    chat = created.data;
    assert.equal(chat.type, "group");
    assert.equal(chat.name, "SDK test");
    const roles = Object.fromEntries(chat.members.map((m) => [m.user_id, m.role]));
    assert.deepEqual(roles, { [alice.user.id]: "owner", [bob.user.id]: "member" });
    // A chat without messages has last_message null, and the type says so
    // (this line stops compiling if the spec stops admitting null).
    const none: Chat["last_message"] = null;
    assert.equal(chat.last_message, none);
  });

  test("a message sent over REST is in the history, once", async () => {
    const clientMsgId = randomUUID();
    const sent = await alice.api.POST("/chats/{chat_id}/messages", {
      params: { path: { chat_id: chat.id } },
      body: { client_msg_id: clientMsgId, text: "hello over REST" },
    });
    assert.equal(sent.response.status, 201, JSON.stringify(sent.error));
    assert.equal(sent.data?.seq, 1);
    assert.equal(sent.data?.sender_id, alice.user.id);

    // The same client_msg_id again: 200 and the original message.
    const again = await alice.api.POST("/chats/{chat_id}/messages", {
      params: { path: { chat_id: chat.id } },
      body: { client_msg_id: clientMsgId, text: "hello over REST" },
    });
    assert.equal(again.response.status, 200);
    assert.equal(again.data?.id, sent.data?.id);

    const history = await bob.api.GET("/history/{chat_id}", {
      params: { path: { chat_id: chat.id }, query: { limit: 50 } },
    });
    assert.equal(history.response.status, 200);
    assert.deepEqual(
      history.data?.map((m) => [m.seq, m.sender_id, m.text, m.client_msg_id]),
      [[1, alice.user.id, "hello over REST", clientMsgId]],
    );

    const chats = await bob.api.GET("/chats");
    const mine = chats.data?.find((c) => c.id === chat.id);
    assert.equal(mine?.unread, 1);
    assert.equal(mine?.last_message?.text, "hello over REST");
  });

  test("search finds the message by a prefix of its words", async () => {
    const found = await bob.api.GET("/search", { params: { query: { q: "HELL ov", chat_id: chat.id } } });
    assert.equal(found.response.status, 200, JSON.stringify(found.error));
    const hits: SearchHit[] = found.data ?? [];
    assert.deepEqual(
      hits.map((h) => [h.chat_id, h.message.seq, h.message.text]),
      [[chat.id, 1, "hello over REST"]],
    );
    // Without q the request is refused with a problem document.
    const bad = await bob.api.GET("/search", { params: { query: { q: "   " } } });
    assert.equal(bad.response.status, 422);
    assert.equal(bad.error?.code, "validation_failed");
  });

  test("WebSocket: message.send is acked to the sender and delivered to the other member", async () => {
    const a = await Socket.open(wsURL(BASE, alice.token, chat.id), "alice");
    sockets.push(a);
    const b = await Socket.open(wsURL(BASE, bob.token, chat.id), "bob");
    sockets.push(b);

    const send: Schemas["MessageSendFrame"] = {
      type: "message.send",
      client_msg_id: randomUUID(),
      text: "hello over WebSocket",
    };
    a.send(send);

    const ack = await a.expect("message.ack", (f) => f.client_msg_id === send.client_msg_id);
    assert.equal(ack.duplicate, false);
    assert.equal(ack.message.seq, 2);
    assert.equal(ack.message.chat_id, chat.id);
    assert.equal(ack.message.text, send.text);

    const delivered = await b.expect("message.new", (f) => f.message.client_msg_id === send.client_msg_id);
    assert.equal(delivered.message.id, ack.message.id);
    assert.equal(delivered.message.sender_id, alice.user.id);
    assert.equal(delivered.message.seq, 2);
  });

  test("WebSocket: message.read reaches both members, and chat.read follows", async () => {
    const [a, b] = sockets as [Socket, Socket];
    const read: Schemas["MessageReadFrame"] = { type: "message.read", seq: 2 };
    b.send(read);

    for (const s of [a, b]) {
      const ev = await s.expect("message.read", (f) => f.user_id === bob.user.id);
      assert.equal(ev.chat_id, chat.id);
      assert.equal(ev.seq, 2);
      // Everyone has read up to 2 now (sending moved Alice's watermark).
      const low = await s.expect("chat.read", (f) => f.seq === 2);
      assert.equal(low.chat_id, chat.id);
    }

    const history = await alice.api.GET("/history/{chat_id}", { params: { path: { chat_id: chat.id } } });
    assert.deepEqual(
      history.data?.map((m) => [m.seq, m.read]),
      [
        [1, true],
        [2, true],
      ],
    );
    const got = await bob.api.GET("/chats/{chat_id}", { params: { path: { chat_id: chat.id } } });
    assert.equal(got.data?.unread, 0);
  });
});
