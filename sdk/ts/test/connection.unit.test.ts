// WindiConnection's reconnect rules on a fake WebSocket, a fake fetch and
// a fake clock: no server, no waiting on real time.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { WebSocketServer } from "ws";

import { CloseError, FrameError, TYPING_INTERVAL_MS, WindiConnection, type ConnectionOptions, type ConnectionState, type Message } from "../src/index.js";
import { ChatStream, type Position } from "../src/order.js";
import { FakeClock, FakeSocket, PingSocket, settle } from "./fakes.js";

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

/** A message of chat 5 whose latest change is rev. */
function msg(seq: number, rev: number, text = `m${seq}`): Message {
  return { id: seq, chat_id: 5, seq, rev, sender_id: 2, text, client_msg_id: `c${seq}`, created_at: "2026-01-01T00:00:00Z", read: false, edited_at: null, deleted: false, reply_to_seq: null, reactions: [] };
}

function query(s: FakeSocket): Record<string, string> {
  const q = Object.fromEntries(new URL(s.url).searchParams);
  delete q.token;
  return q;
}

describe("ChatStream", () => {
  const run = (s: ChatStream, ...frames: [number, number, boolean][]) =>
    frames.flatMap(([seq, rev, isNew]) => s.offer(msg(seq, rev), isNew).map((d) => `${d.created ? "+" : "~"}${d.message.seq}@${d.message.rev}`));
  const cases: { name: string; start: Position; frames: [number, number, boolean][]; want: string[]; pos: Position; waiting?: boolean }[] = [
    { name: "live in order", start: { seq: 2, rev: 3 }, frames: [[3, 4, true], [1, 5, false], [4, 6, true]], want: ["+3@4", "~1@5", "+4@6"], pos: { seq: 4, rev: 6 } },
    { name: "repeats at or below the position are dropped", start: { seq: 2, rev: 3 }, frames: [[2, 2, true], [3, 4, true], [3, 4, true]], want: ["+3@4"], pos: { seq: 3, rev: 4 } },
    { name: "a collapsed replay keeps seq order", start: { seq: 2, rev: 2 }, frames: [[4, 4, true], [3, 5, true]], want: ["+3@5", "+4@4"], pos: { seq: 4, rev: 5 } },
    { name: "a message above the last seq is new whatever its frame says", start: { seq: 0, rev: 0 }, frames: [[2, 2, true], [1, 3, false]], want: ["+1@3", "+2@2"], pos: { seq: 2, rev: 3 } },
    { name: "frames behind a missing seq wait", start: { seq: 2, rev: 2 }, frames: [[4, 4, true], [1, 5, false]], want: [], pos: { seq: 2, rev: 2 }, waiting: true },
    { name: "an early hand-off moves the position only past what came before it", start: { seq: 2, rev: 2 }, frames: [[4, 4, true], [6, 6, true], [3, 7, true]], want: ["+3@7", "+4@4"], pos: { seq: 4, rev: 4 }, waiting: true },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const s = new ChatStream(c.start, true);
      assert.deepEqual(run(s, ...c.frames), c.want);
      assert.deepEqual(s.position(), c.pos);
      assert.equal(s.waiting(), c.waiting ?? false);
    });
  }
  test("a reconnect drops what waits but never hands anything twice", () => {
    const s = new ChatStream({ seq: 2, rev: 2 }, true);
    assert.deepEqual(run(s, [4, 4, true], [6, 6, true], [3, 7, true]), ["+3@7", "+4@4"]);
    s.reconnected();
    assert.deepEqual(run(s, [6, 6, true], [3, 7, false], [5, 8, true], [3, 9, false]), ["+5@8", "+6@6", "~3@9"]);
    assert.deepEqual(s.position(), { seq: 6, rev: 9 });
  });
});

describe("WindiConnection reconnect rules", () => {
  test("a drop reconnects after the backoff and resumes from the positions, by revision", async () => {
    const got: string[] = [];
    const { conn, clock } = await start({ onMessage: (m) => got.push(`+${m.seq}`), onUpdate: (m) => got.push(`~${m.seq}`) });
    const s1 = FakeSocket.all[0]!;
    assert.deepEqual(query(s1), { since: "5:3" }, "chat 5 has no last message: by seq");
    assert.deepEqual(s1.sent, []);
    s1.deliver({ type: "message.new", message: msg(4, 4) });
    s1.deliver({ type: "message.updated", message: msg(2, 5, "edited") });
    s1.deliver({ type: "message.new", message: msg(4, 4) }); // a repeat
    s1.serverClose(1006);
    await clock.advance(999);
    assert.equal(FakeSocket.all.length, 1, "no reconnect before the backoff");
    await clock.advance(1);
    assert.equal(FakeSocket.all.length, 2);
    const s2 = FakeSocket.all[1]!;
    s2.open();
    assert.deepEqual(query(s2), { since_rev: "5:5" });
    assert.deepEqual(got, ["+4", "~2"]);
    assert.deepEqual(conn.resumePositions(), new Map([[5, { seq: 4, rev: 5 }]]));
    assert.deepEqual(conn.positions(), new Map([[5, 4]]));
    assert.equal(conn.state, "connected");
    await conn.close();
  });

  test("resumeBySeq and a missing seq: a sync by seq at once", async () => {
    const { conn } = await start({ resume: { 5: { seq: 3, rev: 7 } }, resumeBySeq: true });
    const s1 = FakeSocket.all[0]!;
    assert.deepEqual(query(s1), { since: "5:3" });
    s1.deliver({ type: "message.new", message: msg(5, 9) });
    assert.deepEqual(s1.sent, [{ type: "sync", chat_id: 5, since_seq: 3 }]);
    await conn.close();
  });

  test("edits, deletes and reactions are written in order, queued while disconnected, written again when their socket ended unanswered; refusals reach onError", async () => {
    const errors: FrameError[] = [];
    const updates: Message[] = [];
    const { conn, clock } = await start({ onError: (e) => errors.push(e), onUpdate: (m) => updates.push(m) });
    const s1 = FakeSocket.all[0]!;
    conn.edit(5, 1, "fixed");
    conn.react(5, 2, "👍");
    conn.unreact(5, 2, "👍");
    conn.delete(5, 3);
    assert.deepEqual(s1.sent, [
      { type: "message.edit", chat_id: 5, seq: 1, text: "fixed" },
      { type: "reaction.add", chat_id: 5, seq: 2, emoji: "👍" },
      { type: "reaction.remove", chat_id: 5, seq: 2, emoji: "👍" },
      { type: "message.delete", chat_id: 5, seq: 3 },
    ]);
    s1.deliver({ type: "message.updated", message: msg(1, 4, "fixed") });
    s1.deliver({ type: "error", code: "forbidden", message: "not yours", chat_id: 5, seq: 3 });
    assert.equal(updates[0]?.text, "fixed");
    assert.equal(errors[0]?.code, "forbidden");
    assert.equal(errors[0]?.frame.seq, 3);
    assert.deepEqual(conn.resumePositions().get(5), { seq: 3, rev: 4 }, "a refused change leaves the chat followed");
    s1.serverClose(1006);
    conn.edit(5, 2, "later");
    await clock.advance(1000);
    const s2 = FakeSocket.all[1]!;
    s2.open();
    // First the changes the server never answered about on the lost socket
    // (seq 2's reaction: no message.updated came), then the new edit.
    assert.deepEqual(s2.sent, [
      { type: "reaction.add", chat_id: 5, seq: 2, emoji: "👍" },
      { type: "reaction.remove", chat_id: 5, seq: 2, emoji: "👍" },
      { type: "message.edit", chat_id: 5, seq: 2, text: "later" },
    ]);
    // Answered about now; a change written more than 10 s before its
    // socket ended is not written again either.
    s2.deliver({ type: "message.updated", message: msg(2, 5, "later") });
    conn.delete(5, 1);
    await clock.advance(11_000);
    s2.serverClose(1006);
    await clock.advance(1000);
    const s3 = FakeSocket.all[2]!;
    s3.open();
    assert.deepEqual(s3.sent, []);
    await conn.close();
  });

  test("typing: one frame per chat every 2 s, only while connected; others' typing reaches onTyping", async () => {
    const typing: [number, number][] = [];
    const { conn, clock } = await start({ onTyping: (c, u) => typing.push([c, u]) });
    const s1 = FakeSocket.all[0]!;
    conn.typing(5);
    conn.typing(5);
    await clock.advance(TYPING_INTERVAL_MS - 1);
    conn.typing(5);
    await clock.advance(1);
    conn.typing(5);
    assert.deepEqual(s1.sent, [{ type: "typing", chat_id: 5 }, { type: "typing", chat_id: 5 }]);
    s1.deliver({ type: "typing", chat_id: 5, user_id: 7 });
    assert.deepEqual(typing, [[5, 7]]);
    s1.serverClose(1006);
    await clock.advance(TYPING_INTERVAL_MS);
    conn.typing(5); // disconnected: dropped
    await clock.advance(1000);
    FakeSocket.all[1]!.open();
    assert.deepEqual(FakeSocket.all[1]!.sent, []);
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

  test("start returns at once: what is sent before the first socket opens is written when it does", async () => {
    FakeSocket.all = [];
    const clock = new FakeClock();
    const conn = WindiConnection.start({ baseUrl: "http://windi.test", token: "tok", clock, WebSocket: FakeSocket, fetch: fakeFetch(() => 200) });
    let ready = false;
    void conn.ready.then(() => (ready = true));
    const p = conn.send(5, "early");
    conn.markRead(5, 3);
    await settle();
    assert.equal(conn.state, "connecting");
    assert.equal(ready, false);
    FakeSocket.all[0]!.open();
    await settle();
    assert.equal(ready, true);
    assert.deepEqual(
      FakeSocket.all[0]!.sent.map((f) => f.type),
      ["message.send", "message.read"],
    );
    FakeSocket.all[0]!.deliver({ type: "message.ack", client_msg_id: p.clientMsgId, duplicate: false, message: { ...msg(4, 4, "early"), client_msg_id: p.clientMsgId } });
    assert.equal((await p.ack).message.seq, 4);
    await conn.close();
  });

  test("onState says when the next attempt starts", async () => {
    const states: [string, number | undefined][] = [];
    const { conn, clock } = await start({ onState: (s, _err, ms) => states.push([s, ms]) });
    FakeSocket.all[0]!.serverClose(1006);
    await clock.advance(1000);
    FakeSocket.all[1]!.serverClose(1006); // never opened: a failed handshake, asked about through REST
    await settle();
    assert.deepEqual(states, [
      ["connecting", undefined],
      ["connected", undefined],
      ["disconnected", 1000],
      ["connecting", undefined],
      ["disconnected", 2000],
    ]);
    await conn.close();
  });

  test("pause closes the socket and connects no more; reconnect connects at once, sends queued meanwhile written", async () => {
    const states: string[] = [];
    const { conn, clock } = await start({ onState: (s) => states.push(s) });
    const s1 = FakeSocket.all[0]!;
    conn.pause();
    assert.equal(s1.readyState, 3, "the socket is closed");
    assert.equal(conn.state, "disconnected");
    const p = conn.send(5, "while offline");
    conn.edit(5, 1, "fixed offline");
    await clock.advance(10 * 60_000);
    assert.equal(FakeSocket.all.length, 1, "no attempt while paused");
    assert.deepEqual(s1.sent, []);

    conn.reconnect();
    await settle();
    assert.equal(FakeSocket.all.length, 2, "at once, no backoff");
    const s2 = FakeSocket.all[1]!;
    s2.open();
    assert.deepEqual(
      s2.sent.map((f) => f.type),
      ["message.send", "message.edit"],
    );
    assert.equal(s2.sent[0]!.client_msg_id, p.clientMsgId);
    conn.reconnect(); // open already: nothing
    await settle();
    assert.equal(FakeSocket.all.length, 2);

    // During a backoff wait, reconnect skips what is left of it.
    s2.serverClose(1006);
    await clock.advance(500);
    assert.equal(FakeSocket.all.length, 2);
    conn.reconnect();
    await settle();
    assert.equal(FakeSocket.all.length, 3);
    FakeSocket.all[2]!.open();
    assert.deepEqual(states, ["connecting", "connected", "disconnected", "connecting", "connected", "disconnected", "connecting", "connected"]);
    await conn.close();
  });

  test("a pause while the token is on its way stops that attempt; reconnect makes a new one", async () => {
    FakeSocket.all = [];
    const clock = new FakeClock();
    const gives: ((t: string) => void)[] = [];
    const conn = WindiConnection.start({
      baseUrl: "http://windi.test",
      token: () => new Promise<string>((r) => gives.push(r)),
      clock,
      WebSocket: FakeSocket,
      fetch: fakeFetch(() => 200),
    });
    await settle();
    conn.pause();
    gives[0]!("tok-1");
    await settle();
    assert.equal(FakeSocket.all.length, 0, "the paused attempt opened no socket");
    conn.reconnect();
    await settle();
    gives[1]!("tok-2");
    await settle();
    assert.equal(FakeSocket.all.length, 1);
    assert.match(FakeSocket.all[0]!.url, /token=tok-2/);
    await conn.close();
  });

  test("idle: a socket that shows pings is dropped after idleTimeoutMs without a frame or a ping", async () => {
    const { conn, clock } = await start({ WebSocket: PingSocket, idleTimeoutMs: 60_000 });
    const s1 = FakeSocket.all[0] as PingSocket;
    for (let i = 0; i < 4; i++) {
      await clock.advance(25_000);
      s1.ping(); // the server's heartbeat keeps it
    }
    await clock.advance(30_000);
    s1.deliver({ type: "presence", chat_id: 5, user_id: 7, online: true }); // so does a frame
    await clock.advance(59_999);
    assert.equal(s1.terminated, false, "alive while something came within 60 s");
    assert.equal(FakeSocket.all.length, 1);
    await clock.advance(1);
    assert.equal(s1.terminated, true, "60 s of silence: dropped");
    assert.equal(conn.state, "disconnected");
    await clock.advance(1000);
    assert.equal(FakeSocket.all.length, 2, "and reconnected after the backoff");
    await conn.close();
  });

  test("idle: a socket that shows no pings (a browser's) is never dropped for silence", async () => {
    const { conn, clock } = await start({ idleTimeoutMs: 60_000 });
    await clock.advance(10 * 60_000);
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(FakeSocket.all[0]!.readyState, 1);
    assert.equal(conn.state, "connected");
    await conn.close();
  });

  test("idle with the real `ws` package: pings keep a quiet socket, their silence drops it", async () => {
    // A server of the test's own that pings every 100 ms until told to stop, as a dead link would.
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise<void>((r) => wss.once("listening", () => r()));
    const port = (wss.address() as { port: number }).port;
    let pinging = true;
    let accepted = 0;
    wss.on("connection", (sock) => {
      accepted++;
      const t = setInterval(() => pinging && sock.ping(), 100);
      sock.on("close", () => clearInterval(t));
    });
    const states: ConnectionState[] = [];
    const conn = await WindiConnection.connect({
      baseUrl: `http://127.0.0.1:${port}`,
      token: "tok",
      fetch: fakeFetch(() => 200),
      idleTimeoutMs: 500,
      backoff: () => 50,
      onState: (s) => states.push(s),
    });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(accepted, 1, "three times the idle timeout without a frame, kept by the pings");
      assert.equal(conn.state, "connected");
      pinging = false;
      await new Promise((r) => setTimeout(r, 1000));
      assert.ok(accepted >= 2, `dropped and reconnected (connections ${accepted}, states ${states.join(" ")})`);
      assert.ok(states.includes("disconnected"));
    } finally {
      await conn.close();
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
    }
  });

  test("1001 reconnects within a quarter second", async () => {
    const { conn, clock } = await start({});
    FakeSocket.all[0]!.serverClose(1001);
    await clock.advance(250);
    assert.equal(FakeSocket.all.length, 2);
    await conn.close();
  });
});
