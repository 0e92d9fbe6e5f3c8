// WindiConnection's reconnect rules on a fake WebSocket, a fake fetch and
// a fake clock: no server, no waiting on real time.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { CloseError, FrameError, TYPING_INTERVAL_MS, WindiConnection, type ConnectionOptions, type Message } from "../src/index.js";
import { ChatStream, type Position } from "../src/order.js";
import { FakeClock, FakeSocket, settle } from "./fakes.js";

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

  test("edits, deletes and reactions are written in order, queued while disconnected; refusals reach onError", async () => {
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
    assert.deepEqual(s2.sent, [{ type: "message.edit", chat_id: 5, seq: 2, text: "later" }]);
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

  test("1001 reconnects within a quarter second", async () => {
    const { conn, clock } = await start({});
    FakeSocket.all[0]!.serverClose(1001);
    await clock.advance(250);
    assert.equal(FakeSocket.all.length, 2);
    await conn.close();
  });
});
