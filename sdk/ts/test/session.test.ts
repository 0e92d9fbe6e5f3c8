// WindiSession against a running server (WINDI_URL): concurrent calls with
// a rejected token share one refresh (two would spend the same refresh
// token, and the server would revoke the session), an expired access token
// is refreshed and the request sent again, a WebSocket of a session revoked
// from another device ends with 4401, and so does one of every other
// session when the password changes.
//
// An expired token is made by re-signing a real one with its exp in the
// past, with the server's secret: WINDI_TEST_JWT_SECRET_FILE names the
// file the server keeps it in (its data directory's jwt_secret; .ci/run
// sets it). Without it those tests are skipped, except with CI=true.
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { before, describe, test } from "node:test";

import WebSocket from "ws";

import {
  ApiError,
  CloseError,
  SessionEndedError,
  WindiSession,
  createWindiClient,
  type WebSocketConstructor,
} from "../src/index.js";

const BASE = process.env.WINDI_URL ?? "";
if (!BASE) throw new Error("WINDI_URL is not set: start a server and point WINDI_URL at it");
const SECRET_FILE = process.env.WINDI_TEST_JWT_SECRET_FILE ?? "";
if (!SECRET_FILE && process.env.CI === "true") throw new Error("WINDI_TEST_JWT_SECRET_FILE is not set (CI=true)");
const WS = WebSocket as unknown as WebSocketConstructor;

interface User {
  id: number;
  email: string;
  password: string;
}

async function signUp(name: string): Promise<User> {
  const email = `${name.toLowerCase()}-${randomUUID().slice(0, 8)}@example.com`;
  const password = `pw-${randomUUID()}`;
  const reg = await createWindiClient(BASE).POST("/register", { body: { name, email, password } });
  assert.ok(reg.data, `register: ${JSON.stringify(reg.error)}`);
  return { id: reg.data.id, email, password };
}

/** A fetch that counts the refreshes it carries. */
function counting(): { fetch: typeof fetch; refreshes: () => number; paths: string[] } {
  const paths: string[] = [];
  return {
    paths,
    refreshes: () => paths.filter((p) => p === "POST /token/refresh").length,
    fetch: ((input: Request | string | URL, init?: RequestInit) => {
      const req = input instanceof Request ? input : new Request(input, init);
      paths.push(`${req.method} ${new URL(req.url).pathname}`);
      return globalThis.fetch(req);
    }) as typeof fetch,
  };
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");

/** expired re-signs a real access token with exp a minute in the past. */
function expired(token: string): string {
  const secret = readFileSync(SECRET_FILE, "utf8").trim();
  const [header, payload] = token.split(".") as [string, string];
  const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as Record<string, unknown>;
  const now = Math.floor(Date.now() / 1000);
  const ttl = Number(claims.exp) - Number(claims.iat ?? now);
  claims.exp = now - 60;
  if (claims.iat !== undefined) claims.iat = now - 60 - ttl;
  const body = `${header}.${b64url(JSON.stringify(claims))}`;
  return `${body}.${b64url(createHmac("sha256", secret).update(body).digest())}`;
}

/** withinMs resolves with what p resolves to, or fails after ms. */
async function withinMs<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe("WindiSession against " + BASE, () => {
  let alice: User;

  before(async () => {
    alice = await signUp("Alice");
  });

  test("a login is a session of its own, listed with its device", async () => {
    const s = await WindiSession.login(BASE, alice.email, alice.password, { device: "session.test.ts" });
    assert.ok(s.sessionId > 0);
    const list = await s.api.GET("/sessions");
    assert.equal(list.response.status, 200, JSON.stringify(list.error));
    const mine = list.data?.find((x) => x.id === s.sessionId);
    assert.equal(mine?.device, "session.test.ts");
    assert.equal(mine?.current, true);
    await assert.rejects(WindiSession.login(BASE, alice.email, "wrong password"), (e: unknown) => e instanceof ApiError && e.status === 401);
    await s.logout();
  });

  test("concurrent calls with a rejected token share one refresh, each retried once", { skip: !SECRET_FILE && "WINDI_TEST_JWT_SECRET_FILE is not set" }, async () => {
    const login = await WindiSession.login(BASE, alice.email, alice.password);
    const net = counting();
    const ended: Error[] = [];
    // The client's clock believes the token is good: the server's 401 must trigger the refresh.
    const s = new WindiSession({ baseUrl: BASE, tokens: { ...login.tokens, accessToken: expired(login.tokens.accessToken), expiresAt: Date.now() + 3_600_000 }, fetch: net.fetch, onEnd: (e) => ended.push(e) });
    const answers = await Promise.all(Array.from({ length: 6 }, () => s.api.GET("/users/me")));
    assert.deepEqual(answers.map((a) => a.response.status), Array(6).fill(200));
    assert.ok(answers.every((a) => a.data?.id === alice.id));
    assert.equal(net.refreshes(), 1, `one refresh for six calls: ${net.paths.join(", ")}`);
    assert.equal(net.paths.filter((p) => p === "GET /users/me").length, 12, "each call rejected once, then retried once");
    // Had two refreshes spent the same refresh token, the server would have revoked the session.
    assert.equal((await s.refresh()).length > 0, true);
    assert.equal((await s.api.GET("/users/me")).response.status, 200);
    assert.deepEqual(ended, []);
    await s.logout();
  });

  test("an expired access token is refreshed and the request retried, its body intact", { skip: !SECRET_FILE && "WINDI_TEST_JWT_SECRET_FILE is not set" }, async () => {
    const login = await WindiSession.login(BASE, alice.email, alice.password);
    const stale = expired(login.tokens.accessToken);
    const raw = await createWindiClient(BASE, stale).GET("/users/me");
    assert.equal(raw.response.status, 401, "the server rejects the re-signed token: it is expired");

    const net = counting();
    const stored: string[] = [];
    const s = new WindiSession({ baseUrl: BASE, tokens: { ...login.tokens, accessToken: stale, expiresAt: Date.now() + 3_600_000 }, fetch: net.fetch, onTokens: (t) => stored.push(t.refreshToken) });
    const created = await s.api.POST("/chats", { body: { type: "group", name: "refreshed on the way", member_ids: [] } });
    assert.equal(created.response.status, 201, JSON.stringify(created.error));
    assert.equal(created.data?.name, "refreshed on the way");
    assert.deepEqual(net.paths, ["POST /chats", "POST /token/refresh", "POST /chats"]);
    assert.equal(stored.length, 1);
    assert.notEqual(stored[0], login.tokens.refreshToken, "the refresh token rotated");

    // The spent refresh token, presented again, revokes the session (reuse detection).
    const reuse = await createWindiClient(BASE).POST("/token/refresh", { body: { refresh_token: login.tokens.refreshToken } });
    assert.equal(reuse.response.status, 401);
    const after = await s.api.GET("/users/me");
    assert.equal(after.response.status, 401);
    assert.ok(s.ended instanceof SessionEndedError, "the session has ended");
  });

  test("a connection with an expired token refreshes at the handshake and connects", { skip: !SECRET_FILE && "WINDI_TEST_JWT_SECRET_FILE is not set" }, async () => {
    const login = await WindiSession.login(BASE, alice.email, alice.password);
    const net = counting();
    const s = new WindiSession({ baseUrl: BASE, tokens: { ...login.tokens, accessToken: expired(login.tokens.accessToken), expiresAt: Date.now() + 3_600_000 }, fetch: net.fetch });
    const conn = await withinMs(s.connect({ WebSocket: WS, backoff: () => 100 }), 10_000, "connect");
    assert.equal(conn.state, "connected");
    assert.equal(net.refreshes(), 1);
    await conn.close();
    await s.logout();
  });

  test("a session revoked from another device: its connection ends with 4401 at once, the session with it", async () => {
    const phone = await WindiSession.login(BASE, alice.email, alice.password, { device: "phone" });
    const laptop = await WindiSession.login(BASE, alice.email, alice.password, { device: "laptop" });
    const ended: Error[] = [];
    const phoneNow = new WindiSession({ baseUrl: BASE, tokens: phone.tokens, onEnd: (e) => ended.push(e) });
    const conn = await phoneNow.connect({ WebSocket: WS });

    const listed = await laptop.api.GET("/sessions");
    const devices = new Map(listed.data?.map((x) => [x.id, x]));
    assert.equal(devices.get(phone.sessionId)?.device, "phone");
    assert.equal(devices.get(phone.sessionId)?.current, false);
    assert.equal(devices.get(laptop.sessionId)?.current, true);

    const t0 = Date.now();
    const del = await laptop.api.DELETE("/sessions/{session_id}", { params: { path: { session_id: phone.sessionId } } });
    assert.equal(del.response.status, 204, JSON.stringify(del.error));
    const why = await withinMs(conn.closed, 1500, "the revoked session's close");
    assert.ok(why instanceof CloseError && why.code === 4401, `closed with ${why}`);
    console.log(`4401 ${Date.now() - t0} ms after DELETE /sessions/${phone.sessionId}`);
    assert.equal(conn.state, "closed");
    assert.ok(ended[0] instanceof SessionEndedError && ended[0].status === 4401);
    await assert.rejects(phoneNow.api.GET("/users/me"), SessionEndedError);
    // Its tokens are dead on the server too.
    assert.equal((await createWindiClient(BASE, phone.tokens.accessToken).GET("/users/me")).response.status, 401);
    const refresh = await createWindiClient(BASE).POST("/token/refresh", { body: { refresh_token: phone.tokens.refreshToken } });
    assert.equal(refresh.response.status, 401);
    const again = await laptop.api.GET("/sessions");
    assert.equal(again.data?.some((x) => x.id === phone.sessionId), false, "the list no longer has it");
    const other = await laptop.api.DELETE("/sessions/{session_id}", { params: { path: { session_id: phone.sessionId } } });
    assert.equal(other.response.status, 404);
    await laptop.logout();
  });

  test("a password change ends every other session's connection with 4401; this one goes on", async () => {
    const bob = await signUp("Bob");
    const tablet = await WindiSession.login(BASE, bob.email, bob.password, { device: "tablet" });
    const desk = await WindiSession.login(BASE, bob.email, bob.password, { device: "desk" });
    const tabletConn = await tablet.connect({ WebSocket: WS });
    const deskConn = await desk.connect({ WebSocket: WS });

    const wrong = await desk.api.POST("/users/me/password", { body: { current_password: "not it", new_password: "a new password" } });
    assert.equal(wrong.response.status, 401);
    assert.equal(desk.ended, undefined, "a wrong current password does not end the session");

    const ok = await desk.api.POST("/users/me/password", { body: { current_password: bob.password, new_password: "a new password" } });
    assert.equal(ok.response.status, 204, JSON.stringify(ok.error));
    const why = await withinMs(tabletConn.closed, 1500, "the other session's close");
    assert.ok(why instanceof CloseError && why.code === 4401, `closed with ${why}`);
    assert.ok(tablet.ended);
    assert.equal(deskConn.state, "connected");
    assert.equal((await desk.api.GET("/users/me")).response.status, 200);
    await assert.rejects(WindiSession.login(BASE, bob.email, bob.password), (e: unknown) => e instanceof ApiError && e.status === 401);
    const fresh = await WindiSession.login(BASE, bob.email, "a new password");
    await fresh.logout();
    await deskConn.close();
    await desk.logout();
  });
});
