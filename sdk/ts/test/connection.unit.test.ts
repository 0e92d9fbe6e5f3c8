// WindiConnection's reconnect rules on a fake WebSocket, a fake fetch and
// a fake clock: no server, no waiting on real time.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { CloseError, WindiConnection, type Clock, type ConnectionOptions, type WebSocketLike } from "../src/index.js";

/** A clock whose time moves when the test says so. */
class FakeClock implements Clock {
  t = 1_700_000_000_000;
  private timers = new Map<number, { at: number; fn: () => void }>();
  private next = 1;
  made: number[] = [];
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.made.push(ms);
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  async advance(ms: number): Promise<void> {
    this.t += ms;
    for (const [id, tm] of [...this.timers].sort((a, b) => a[1].at - b[1].at)) {
      if (tm.at <= this.t) {
        this.timers.delete(id);
        tm.fn();
      }
    }
    await settle();
  }
}

/** Lets pending promise callbacks run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
}

class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  sent: Record<string, unknown>[] = [];
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }
  close(code = 1000, reason = ""): void {
    this.serverClose(code, reason);
  }
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  serverClose(code: number, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  deliver(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
}

const chats = [{ id: 5, type: "group", name: "g", created_at: "2026-01-01T00:00:00Z", last_seq: 3, last_message: null, members: [], unread: 0 }];

/** fakeFetch answers GET /chats, and GET /users/me with status me. */
function fakeFetch(me: () => number): typeof fetch {
  return (async (input: Request | string | URL) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    if (url.pathname === "/chats") return new Response(JSON.stringify(chats), { headers: { "Content-Type": "application/json" } });
    const status = me();
    return new Response(status === 200 ? "{}" : JSON.stringify({ code: "unauthorized", title: "no", status, type: "about:blank" }), {
      status,
      headers: { "Content-Type": status === 200 ? "application/json" : "application/problem+json" },
    });
  }) as typeof fetch;
}

async function start(opts: Partial<ConnectionOptions>, me = () => 200): Promise<{ conn: WindiConnection; clock: FakeClock; errors: Error[] }> {
  FakeSocket.all = [];
  const clock = new FakeClock();
  const errors: Error[] = [];
  const p = WindiConnection.connect({
    baseUrl: "http://windi.test",
    token: "tok",
    clock,
    WebSocket: FakeSocket,
    fetch: fakeFetch(me),
    backoff: (n) => n * 1000,
    onClose: (e) => errors.push(e),
    ...opts,
  });
  await settle();
  FakeSocket.all[0]!.open();
  return { conn: await p, clock, errors };
}

describe("WindiConnection reconnect rules", () => {
  test("a drop reconnects after the backoff and resumes from the positions", async () => {
    const { conn, clock } = await start({});
    const s1 = FakeSocket.all[0]!;
    assert.deepEqual(s1.sent, [{ type: "sync", chat_id: 5, since_seq: 3 }]);
    s1.deliver({ type: "message.new", message: { id: 1, chat_id: 5, seq: 4, sender_id: 2, text: "x", client_msg_id: "a", created_at: "2026-01-01T00:00:00Z", read: false } });
    s1.serverClose(1006);
    await clock.advance(999);
    assert.equal(FakeSocket.all.length, 1, "no reconnect before the backoff");
    await clock.advance(1);
    assert.equal(FakeSocket.all.length, 2);
    const s2 = FakeSocket.all[1]!;
    s2.open();
    assert.deepEqual(s2.sent, [{ type: "sync", chat_id: 5, since_seq: 4 }]);
    assert.equal(conn.state, "connected");
    await conn.close();
  });

  for (const code of [4401, 4403, 4599]) {
    test(`close ${code} ends the connection and fails waiting sends`, async () => {
      const { conn, clock, errors } = await start({});
      const p = conn.send(5, "hi");
      FakeSocket.all[0]!.serverClose(code, "bye");
      await assert.rejects(p.ack, /connection closed/);
      await clock.advance(60_000);
      assert.equal(FakeSocket.all.length, 1, "no reconnect");
      assert.ok(errors[0] instanceof CloseError && errors[0].code === code);
      assert.equal(conn.state, "closed");
    });
  }

  test("4501 asks the provider for a new token and reconnects at once", async () => {
    const asked: boolean[] = [];
    const { conn, clock } = await start({ token: (expired) => (asked.push(expired), expired ? "tok-2" : "tok-1") });
    FakeSocket.all[0]!.serverClose(4501, "token expired");
    await clock.advance(0);
    assert.equal(FakeSocket.all.length, 2);
    assert.match(FakeSocket.all[1]!.url, /token=tok-2/);
    assert.deepEqual(asked, [false, true]);
    await conn.close();
  });

  test("a handshake refused with 401 (seen through REST) renews the token once, then gives up", async () => {
    let me = 200;
    const { clock, errors } = await start({ token: () => "same" }, () => me);
    me = 401;
    FakeSocket.all[0]!.serverClose(1006); // drop: the next handshake fails
    await clock.advance(1000);
    FakeSocket.all[1]!.serverClose(1006); // never opened: a failed handshake
    await settle();
    await clock.advance(0);
    FakeSocket.all[2]!.serverClose(1006);
    await settle();
    assert.equal(errors[0]?.name, "HandshakeError");
    assert.equal((errors[0] as { status?: number }).status, 401);
  });

  test("1001 reconnects within a quarter second", async () => {
    const { conn, clock } = await start({});
    FakeSocket.all[0]!.serverClose(1001);
    await clock.advance(250);
    assert.equal(FakeSocket.all.length, 2);
    await conn.close();
  });
});
