// WindiConnection against a running server (WINDI_URL): sends, acks,
// duplicates and error frames; and a resume through a TCP proxy that the
// test cuts and restores, with sends queued while it is down.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { after, before, describe, test } from "node:test";

import WebSocket from "ws";

import {
  FrameError,
  WindiConnection,
  createWindiClient,
  login,
  type Chat,
  type ConnectionOptions,
  type Message,
  type ServerFrame,
  type WebSocketConstructor,
} from "../src/index.js";

const BASE = process.env.WINDI_URL ?? "";
if (!BASE) throw new Error("WINDI_URL is not set: start a server and point WINDI_URL at it");

interface Account {
  id: number;
  token: string;
}

async function signUp(name: string): Promise<Account> {
  const email = `${name.toLowerCase()}-${randomUUID().slice(0, 8)}@example.com`;
  const password = `pw-${randomUUID()}`;
  const anon = createWindiClient(BASE);
  const reg = await anon.POST("/register", { body: { name, email, password } });
  assert.ok(reg.data, `register: ${JSON.stringify(reg.error)}`);
  const tok = await login(anon, email, password);
  return { id: reg.data.id, token: tok.access_token };
}

/** Collects what a connection hands the application. */
class Recorder {
  messages: Message[] = [];
  updates: Message[] = [];
  typing: [number, number][] = [];
  errors: FrameError[] = [];
  frames: ServerFrame[] = [];
  private waiters: (() => void)[] = [];
  options(): Pick<ConnectionOptions, "onMessage" | "onUpdate" | "onTyping" | "onError" | "onFrame"> {
    return {
      onMessage: (m) => {
        this.messages.push(m);
        this.wake();
      },
      onUpdate: (m) => {
        this.updates.push(m);
        this.wake();
      },
      onTyping: (c, u) => {
        this.typing.push([c, u]);
        this.wake();
      },
      onError: (e) => {
        this.errors.push(e);
        this.wake();
      },
      onFrame: (f) => {
        this.frames.push(f);
        this.wake();
      },
    };
  }
  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  async until(what: string, cond: () => boolean, ms = 10000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
  seqs(chatId: number): number[] {
    return this.messages.filter((m) => m.chat_id === chatId).map((m) => m.seq);
  }
  /** The latest state of seq in chatId, from messages and updates. */
  state(chatId: number, seq: number): Message | undefined {
    let best: Message | undefined;
    for (const m of [...this.messages, ...this.updates]) if (m.chat_id === chatId && m.seq === seq && (!best || m.rev >= best.rev)) best = m;
    return best;
  }
}

const reactions = (m: Message | undefined) => (m?.reactions ?? []).map((r) => `${r.emoji}${JSON.stringify(r.user_ids)}`).join(" ");

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** A TCP proxy in front of the server that the test can cut and restore. */
class Proxy {
  private server = net.createServer((down) => {
    const up = net.connect(Number(this.target.port), this.target.hostname);
    this.sockets.add(down).add(up);
    down.pipe(up).pipe(down);
    const drop = () => {
      down.destroy();
      up.destroy();
      this.sockets.delete(down);
      this.sockets.delete(up);
    };
    down.on("error", drop).on("close", drop);
    up.on("error", drop).on("close", drop);
  });
  private sockets = new Set<net.Socket>();
  private readonly target: URL;
  port = 0;
  constructor(base: string) {
    this.target = new URL(base);
  }
  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.port, "127.0.0.1", () => {
      this.port = (this.server.address() as net.AddressInfo).port;
      resolve();
    }));
  }
  /** cut drops every connection and stops listening. */
  cut(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }
}

describe("WindiConnection against " + BASE, () => {
  let alice: Account;
  let bob: Account;
  let chat: Chat;
  const open: WindiConnection[] = [];

  before(async () => {
    alice = await signUp("Alice");
    bob = await signUp("Bob");
    const created = await createWindiClient(BASE, alice.token).POST("/chats", {
      body: { type: "group", name: "connection test", member_ids: [bob.id] },
    });
    assert.ok(created.data, JSON.stringify(created.error));
    chat = created.data;
  });

  after(async () => {
    await Promise.all(open.map((c) => c.close()));
  });

  async function connect(opts: Omit<ConnectionOptions, "WebSocket">): Promise<WindiConnection> {
    const c = await WindiConnection.connect({ ...opts, WebSocket: WebSocket as unknown as WebSocketConstructor });
    open.push(c);
    return c;
  }

  test("sends are acked in order and every member sees every message once", async () => {
    const arec = new Recorder();
    const brec = new Recorder();
    const a = await connect({ baseUrl: BASE, token: alice.token, ...arec.options() });
    await connect({ baseUrl: BASE, token: bob.token, chatId: chat.id, ...brec.options() });

    const sends = range(1, 20).map((i) => a.send(chat.id, `message ${i}`));
    const acks = await Promise.all(sends.map((p) => p.ack));
    assert.deepEqual(acks.map((x) => [x.message.seq, x.duplicate, x.message.text]), range(1, 20).map((i) => [i, false, `message ${i}`]));
    await arec.until("alice's 20", () => arec.seqs(chat.id).length >= 20);
    await brec.until("bob's 20", () => brec.seqs(chat.id).length >= 20);
    assert.deepEqual(arec.seqs(chat.id), range(1, 20));
    assert.deepEqual(brec.seqs(chat.id), range(1, 20));

    const again = a.sendWithId(chat.id, sends[4]!.clientMsgId, "message 5");
    const dup = await again.ack;
    assert.equal(dup.duplicate, true);
    assert.equal(dup.message.seq, 5);

    const blank = a.send(chat.id, "   ");
    await assert.rejects(blank.ack, (err: unknown) => err instanceof FrameError && err.code === "bad_request" && err.frame.client_msg_id === blank.clientMsgId);
    assert.equal(a.positions().get(chat.id), 20);
  });

  test("a cut connection resumes with nothing lost or repeated, and queued sends are stored once", async () => {
    const proxy = new Proxy(BASE);
    await proxy.listen();
    const brec = new Recorder();
    const states: string[] = [];
    const b = await connect({ baseUrl: proxy.url, token: bob.token, backoff: () => 50, onState: (s) => states.push(s), ...brec.options() });
    const a = await connect({ baseUrl: BASE, token: alice.token });
    const start = (await a.send(chat.id, "before the cut").ack).message.seq;
    await brec.until("the first message", () => brec.seqs(chat.id).includes(start));
    const first = brec.seqs(chat.id)[0]!;

    await proxy.cut();
    const missed = await Promise.all(range(1, 5).map((i) => a.send(chat.id, `while cut ${i}`).ack));
    const queued = [b.send(chat.id, "queued 1"), b.send(chat.id, "queued 2")];
    await proxy.listen(); // same port
    const own = await Promise.all(queued.map((p) => p.ack));
    const last = Math.max(...own.map((x) => x.message.seq), ...missed.map((x) => x.message.seq));
    await brec.until("every message", () => brec.seqs(chat.id).includes(last));
    assert.deepEqual(brec.seqs(chat.id), range(first, last), "bob's messages are a gap-free run, once each");
    assert.ok(states.includes("disconnected"), `states ${states}`);

    const history = await createWindiClient(BASE, bob.token).GET("/history/{chat_id}", {
      params: { path: { chat_id: chat.id }, query: { after_seq: start, limit: 100 } },
    });
    const texts = history.data?.map((m) => m.text) ?? [];
    assert.deepEqual(texts.filter((t) => t.startsWith("queued")).sort(), ["queued 1", "queued 2"]);
    await b.close();
    await proxy.cut();
  });

  test("replies, edits, deletes, reactions and typing reach the other member; errors name the message", async () => {
    const arec = new Recorder();
    const brec = new Recorder();
    const a = await connect({ baseUrl: BASE, token: alice.token, ...arec.options() });
    const b = await connect({ baseUrl: BASE, token: bob.token, chatId: chat.id, ...brec.options() });
    const hello = (await a.send(chat.id, "hello").ack).message;
    const reply = (await b.sendWith(chat.id, "hi back", { replyToSeq: hello.seq }).ack).message;
    assert.equal(reply.reply_to_seq, hello.seq);
    await arec.until("the reply", () => arec.state(chat.id, reply.seq)?.reply_to_seq === hello.seq);

    a.edit(chat.id, hello.seq, "hello, world");
    b.react(chat.id, hello.seq, "👍");
    await arec.until("edit and reaction", () => arec.state(chat.id, hello.seq)?.text === "hello, world" && reactions(arec.state(chat.id, hello.seq)) === `👍[${bob.id}]`);
    // The edit (Alice's) and the reaction (Bob's) race: wait for both.
    await brec.until("edit and reaction (bob)", () => brec.state(chat.id, hello.seq)?.text === "hello, world" && reactions(brec.state(chat.id, hello.seq)) === `👍[${bob.id}]`);
    assert.ok(brec.state(chat.id, hello.seq)?.edited_at, "edited_at is set");
    b.unreact(chat.id, hello.seq, "👍");
    a.delete(chat.id, reply.seq); // the group's owner deletes Bob's message
    await brec.until("the tombstone", () => brec.state(chat.id, reply.seq)?.deleted === true && reactions(brec.state(chat.id, hello.seq)) === "");
    assert.equal(brec.state(chat.id, reply.seq)?.text, "");

    b.delete(chat.id, hello.seq); // not his
    b.edit(chat.id, reply.seq, "undo"); // deleted
    await brec.until("two refusals", () => brec.errors.length === 2);
    assert.deepEqual(brec.errors.map((e) => [e.code, e.frame.chat_id, e.frame.seq]), [["forbidden", chat.id, hello.seq], ["bad_request", chat.id, reply.seq]]);

    for (let i = 0; i < 5; i++) b.typing(chat.id);
    await arec.until("bob typing", () => arec.typing.length > 0);
    assert.deepEqual(arec.typing, [[chat.id, bob.id]]);
    const revs = [...arec.messages, ...arec.updates].filter((m) => m.chat_id === chat.id).map((m) => m.rev);
    assert.equal(new Set(revs).size, revs.length, `a revision twice: ${revs}`);
    assert.equal(brec.typing.length, 0, "bob never sees his own typing");
  });

  test("changes made while cut arrive after the resume by revision, once, in order", async () => {
    const proxy = new Proxy(BASE);
    await proxy.listen();
    const brec = new Recorder();
    const b = await connect({ baseUrl: proxy.url, token: bob.token, chatId: chat.id, backoff: () => 50, ...brec.options() });
    const a = await connect({ baseUrl: BASE, token: alice.token });
    const one = (await a.send(chat.id, "one").ack).message;
    const two = (await a.send(chat.id, "two").ack).message;
    await brec.until("two", () => brec.seqs(chat.id).includes(two.seq));
    const before = brec.updates.length;

    await proxy.cut();
    a.edit(chat.id, one.seq, "one, edited");
    a.react(chat.id, two.seq, "🎉");
    const three = (await a.send(chat.id, "three").ack).message;
    a.edit(chat.id, three.seq, "three, edited"); // created and changed while Bob is away
    const sentinel = (await a.send(chat.id, "sentinel").ack).message;
    await proxy.listen();
    await brec.until("the sentinel", () => brec.seqs(chat.id).includes(sentinel.seq));
    assert.equal(brec.state(chat.id, three.seq)?.text, "three, edited");
    assert.deepEqual(
      brec.updates.slice(before).map((m) => `${m.seq}:${m.text}:${reactions(m)}`),
      [`${one.seq}:one, edited:`, `${two.seq}:two:🎉[${alice.id}]`],
    );
    assert.deepEqual(b.resumePositions().get(chat.id), { seq: sentinel.seq, rev: sentinel.rev });
    await b.close();
    await proxy.cut();
  });

  test("a token the server rejects, with nothing to renew it, ends connect", async () => {
    await assert.rejects(
      WindiConnection.connect({ baseUrl: BASE, token: "not-a-token", WebSocket: WebSocket as unknown as WebSocketConstructor }),
      /token rejected and no token provider/,
    );
  });
});
