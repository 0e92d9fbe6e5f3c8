// WindiSession on a fake server (a fetch that keeps sessions the way SPEC
// §12 says: access tokens with an expiry, refresh tokens that rotate, a
// spent one revoking the session) and a fake clock: no network, no waiting.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { CloseError, RefreshError, SessionEndedError, WindiSession, type SessionTokens } from "../src/index.js";
import { FakeClock, FakeSocket, settle } from "./fakes.js";

const BASE = "http://windi.test";
const TTL_S = 900;

/** FakeServer answers /token/refresh, /logout, /chats and any other GET or POST with the token's user. */
class FakeServer {
  private n = 0;
  access = new Map<string, number>(); // token -> expiry (ms)
  refresh = new Map<string, "live" | "spent">();
  revoked = false;
  refreshCalls = 0;
  requests: { path: string; auth: string; body: string }[] = [];
  /** Fails the next refreshes with this status (-1: a network error). */
  failRefresh: number[] = [];
  /** Holds refresh answers until release() is called. */
  private held: (() => void)[] = [];
  hold = false;

  constructor(readonly clock: FakeClock) {}

  /** login issues a first pair of tokens. */
  login(): SessionTokens {
    const accessToken = this.issueAccess();
    const refreshToken = this.issueRefresh();
    return { accessToken, refreshToken, expiresAt: this.clock.now() + TTL_S * 1000, sessionId: 7 };
  }

  issueAccess(): string {
    const t = `acc-${++this.n}`;
    this.access.set(t, this.clock.now() + TTL_S * 1000);
    return t;
  }

  issueRefresh(): string {
    const t = `ref-${++this.n}`;
    this.refresh.set(t, "live");
    return t;
  }

  release(): void {
    for (const r of this.held.splice(0)) r();
  }

  valid(auth: string): boolean {
    const exp = this.access.get(auth.replace(/^Bearer /, ""));
    return !this.revoked && exp !== undefined && this.clock.now() < exp;
  }

  fetch: typeof fetch = (async (input: Request | string | URL, init?: RequestInit) => {
    const req = input instanceof Request ? input : new Request(input, init);
    const path = new URL(req.url).pathname;
    const body = await req.text();
    const auth = req.headers.get("Authorization") ?? "";
    this.requests.push({ path, auth, body });
    if (path === "/token/refresh") {
      this.refreshCalls++;
      if (this.hold) await new Promise<void>((r) => this.held.push(r));
      const fail = this.failRefresh.shift();
      if (fail === -1) throw new TypeError("fetch failed");
      if (fail !== undefined) return problem(fail, "unavailable");
      const { refresh_token: rt } = JSON.parse(body) as { refresh_token: string };
      const st = this.refresh.get(rt);
      if (st === "spent") this.revoked = true; // reuse detection: the whole session goes
      if (st !== "live" || this.revoked) return problem(401, "unauthorized");
      this.refresh.set(rt, "spent");
      return json(200, { access_token: this.issueAccess(), token_type: "bearer", expires_in: TTL_S, refresh_token: this.issueRefresh(), session_id: 7 });
    }
    if (!this.valid(auth)) return problem(401, this.revoked ? "session_revoked" : "unauthorized");
    if (path === "/logout") {
      this.revoked = true;
      return new Response(null, { status: 204 });
    }
    if (path === "/chats") return json(200, []);
    if (path === "/users/me/password") return problem(401, "invalid_credentials");
    return json(200, { id: 1, name: "Alice", email: "alice@example.com", created_at: "2026-01-01T00:00:00Z", echo: body });
  }) as typeof fetch;
}

function json(status: number, v: unknown): Response {
  return new Response(JSON.stringify(v), { status, headers: { "Content-Type": "application/json" } });
}

function problem(status: number, code: string): Response {
  return new Response(JSON.stringify({ type: "about:blank", title: code, status, code }), { status, headers: { "Content-Type": "application/problem+json" } });
}

function setup(tokens?: (s: FakeServer) => SessionTokens | { refreshToken: string; accessToken?: string; expiresAt?: number }) {
  const clock = new FakeClock();
  const server = new FakeServer(clock);
  const stored: SessionTokens[] = [];
  const ended: SessionEndedError[] = [];
  const session = new WindiSession({
    baseUrl: BASE,
    tokens: tokens ? tokens(server) : server.login(),
    fetch: server.fetch,
    now: () => clock.now(),
    onTokens: (t) => stored.push(t),
    onEnd: (e) => ended.push(e),
  });
  return { clock, server, session, stored, ended };
}

const me = (s: WindiSession) => s.api.GET("/users/me");

describe("WindiSession", () => {
  test("concurrent calls with a rejected token share one refresh, and each is retried once", async () => {
    const { server, session, stored } = setup((s) => ({ ...s.login(), accessToken: "revoked-elsewhere" }));
    server.hold = true;
    const calls = Array.from({ length: 8 }, () => me(session));
    await settle();
    assert.equal(server.refreshCalls, 1, "one refresh in flight");
    server.release();
    const answers = await Promise.all(calls);
    assert.deepEqual(answers.map((a) => a.response.status), Array(8).fill(200));
    assert.equal(server.refreshCalls, 1);
    assert.equal(stored.length, 1);
    const mine = server.requests.filter((r) => r.path === "/users/me");
    assert.equal(mine.length, 16, "each call twice: rejected, then retried");
    assert.deepEqual(new Set(mine.slice(8).map((r) => r.auth)), new Set([`Bearer ${stored[0]!.accessToken}`]));
    assert.equal(server.revoked, false, "no refresh token was presented twice");
  });

  test("a token about to expire is refreshed before the request; the refresh token rotates", async () => {
    const { clock, server, session, stored } = setup();
    const first = session.tokens;
    clock.t += (TTL_S - 30) * 1000; // inside the last quarter minute (a quarter of 15 min, at most 60 s)
    assert.equal((await me(session)).response.status, 200);
    assert.equal(server.refreshCalls, 1);
    assert.equal(server.requests.filter((r) => r.auth === `Bearer ${first.accessToken}`).length, 0, "the old token was not sent");
    assert.notEqual(session.tokens.refreshToken, first.refreshToken);
    assert.equal(stored.at(-1)?.refreshToken, session.tokens.refreshToken);

    clock.t += (TTL_S - 30) * 1000;
    assert.equal((await me(session)).response.status, 200);
    assert.equal(server.refreshCalls, 2);
    const sent = server.requests.filter((r) => r.path === "/token/refresh").map((r) => JSON.parse(r.body).refresh_token);
    assert.deepEqual(sent, [first.refreshToken, stored[0]!.refreshToken], "each refresh spends the latest refresh token");
    assert.equal(server.revoked, false);
  });

  test("an expired token answered 401 is refreshed and the request sent again with its body", async () => {
    const { clock, server, session } = setup((s) => ({ ...s.login(), expiresAt: Number.MAX_SAFE_INTEGER })); // the client's clock thinks it is fresh
    clock.t += (TTL_S + 1) * 1000;
    const r = await session.api.PATCH("/users/me", { body: { name: "Alice Liddell" } });
    assert.equal(r.response.status, 200);
    assert.equal((r.data as unknown as { echo: string }).echo, JSON.stringify({ name: "Alice Liddell" }), "the retry carried the body");
    assert.deepEqual(server.requests.map((q) => q.path), ["/users/me", "/token/refresh", "/users/me"]);
  });

  test("a refused refresh ends the session once: the caller sees the 401, later calls throw", async () => {
    const { server, session, ended } = setup((s) => ({ ...s.login(), accessToken: "expired" }));
    server.refresh.clear(); // its refresh token expired
    const r = await me(session);
    assert.equal(r.response.status, 401);
    assert.equal(server.refreshCalls, 1);
    assert.equal(ended.length, 1);
    assert.ok(session.ended instanceof SessionEndedError && session.ended.status === 401);
    await assert.rejects(me(session), SessionEndedError);
    await assert.rejects(session.token(true), SessionEndedError);
    assert.equal(server.refreshCalls, 1, "no refresh after the end");
    assert.equal(ended.length, 1);
  });

  test("a wrong current password is no token problem: no refresh, no retry", async () => {
    const { server, session, ended } = setup();
    const r = await session.api.POST("/users/me/password", { body: { current_password: "nope", new_password: "long enough" } });
    assert.equal(r.response.status, 401);
    assert.equal(r.error?.code, "invalid_credentials", "the caller still reads the problem");
    assert.equal(server.refreshCalls, 0);
    assert.equal(server.requests.filter((q) => q.path === "/users/me/password").length, 1);
    assert.deepEqual(ended, []);
  });

  test("session_revoked ends the session without trying a refresh", async () => {
    const { server, session, ended } = setup();
    server.revoked = true;
    server.refresh.clear();
    const r = await me(session);
    assert.equal(r.response.status, 401);
    assert.equal(server.refreshCalls, 0);
    assert.equal(ended[0]?.problem?.code, "session_revoked");
  });

  test("a refresh that fails on the way (network, 503) keeps the session; the next call refreshes", async () => {
    const { server, session, ended } = setup((s) => ({ ...s.login(), accessToken: "stale" }));
    server.failRefresh = [-1, 503];
    await assert.rejects(me(session), (e: unknown) => e instanceof RefreshError && e.temporary && e.status === -1);
    await assert.rejects(me(session), (e: unknown) => e instanceof RefreshError && e.status === 503);
    assert.equal((await me(session)).response.status, 200);
    assert.deepEqual(ended, []);
  });

  test("a stored refresh token alone resumes the session with a refresh", async () => {
    let rt = "";
    const { server, session } = setup((s) => ((rt = s.login().refreshToken), { refreshToken: rt }));
    assert.equal(session.sessionId, 0);
    assert.equal((await me(session)).response.status, 200);
    assert.equal(server.refreshCalls, 1);
    assert.equal(session.sessionId, 7);
    assert.notEqual(session.tokens.refreshToken, rt);
  });

  test("logout revokes the session on the server and ends it here", async () => {
    const { server, session, ended } = setup();
    await session.logout();
    assert.equal(server.revoked, true);
    assert.equal(ended[0]?.status, 204);
    await assert.rejects(session.accessToken(), SessionEndedError);
  });

  test("shared: two holders of one session (two tabs) take turns and each spends the refresh token the other stored", async () => {
    const clock = new FakeClock();
    const server = new FakeServer(clock);
    const first = server.login();
    let store: string | null = first.refreshToken; // localStorage, say
    let queue = Promise.resolve(); // a lock both take, as navigator.locks would
    let locked = 0;
    const shared = {
      lock<T>(fn: () => Promise<T>): Promise<T> {
        const run = queue.then(async () => {
          locked++;
          assert.equal(locked, 1, "one holder at a time");
          try {
            return await fn();
          } finally {
            locked--;
          }
        });
        queue = run.then(
          () => {},
          () => {},
        );
        return run;
      },
      read: () => store,
    };
    const ended: SessionEndedError[] = [];
    const tab = (tokens: SessionTokens | { refreshToken: string }) =>
      new WindiSession({ baseUrl: BASE, tokens, fetch: server.fetch, now: () => clock.now(), shared, onTokens: (t) => (store = t.refreshToken), onEnd: (e) => ended.push(e) });
    const a = tab(first);
    const b = tab({ refreshToken: first.refreshToken }); // opened later, from the store

    // Both refresh at once, twice over: each refresh spends the latest token.
    for (let i = 0; i < 2; i++) {
      const [ta, tb] = await Promise.all([a.refresh(), b.refresh()]);
      assert.notEqual(ta, tb, "each tab has an access token of its own");
    }
    assert.equal(server.refreshCalls, 4);
    assert.equal(server.revoked, false, "no refresh token was presented twice");
    const sent = server.requests.filter((r) => r.path === "/token/refresh").map((r) => JSON.parse(r.body).refresh_token as string);
    assert.equal(new Set(sent).size, 4);
    assert.equal(store, b.tokens.refreshToken, "the store holds the last refresh's token");
    assert.equal((await me(a)).response.status, 200);
    assert.equal((await me(b)).response.status, 200);

    // Logged out in another tab: the store is empty, and the next refresh ends the session without asking.
    store = null;
    await assert.rejects(a.refresh(), (e: unknown) => e instanceof SessionEndedError && e.status === 0);
    assert.equal(server.refreshCalls, 4);
    assert.equal(ended.length, 1);
    assert.deepEqual(ended[0], a.ended);
  });

  test("connect: 4501 reconnects at once with a refreshed token; 4401 ends the connection and the session", async () => {
    FakeSocket.all = [];
    const { clock, server, session, ended } = setup();
    const closed: Error[] = [];
    const p = session.connect({ clock, WebSocket: FakeSocket, backoff: () => 1000, onClose: (e) => closed.push(e) });
    await settle();
    FakeSocket.all[0]!.open();
    const conn = await p;
    const tok0 = new URL(FakeSocket.all[0]!.url).searchParams.get("token");
    assert.equal(tok0, session.tokens.accessToken);

    FakeSocket.all[0]!.serverClose(4501, "token expired");
    await clock.advance(0);
    assert.equal(server.refreshCalls, 1, "4501 refreshed");
    assert.equal(FakeSocket.all.length, 2, "and reconnected at once");
    const tok1 = new URL(FakeSocket.all[1]!.url).searchParams.get("token");
    assert.notEqual(tok1, tok0);
    assert.equal(tok1, session.tokens.accessToken);
    FakeSocket.all[1]!.open();

    FakeSocket.all[1]!.serverClose(4401, "session revoked");
    await clock.advance(60_000);
    assert.equal(FakeSocket.all.length, 2, "no reconnect after 4401");
    assert.equal(conn.state, "closed");
    assert.ok(closed[0] instanceof CloseError && closed[0].code === 4401);
    assert.equal(ended[0]?.status, 4401);
    assert.ok(session.ended);
  });

  test("connect: a refresh that fails on the way backs off and tries again instead of ending", async () => {
    FakeSocket.all = [];
    const { clock, server, session } = setup();
    const p = session.connect({ clock, WebSocket: FakeSocket, backoff: () => 1000 });
    await settle();
    FakeSocket.all[0]!.open();
    const conn = await p;
    server.failRefresh = [503];
    FakeSocket.all[0]!.serverClose(4501, "token expired");
    await clock.advance(0);
    assert.equal(FakeSocket.all.length, 1, "no token yet");
    assert.equal(conn.state, "disconnected");
    await clock.advance(1000);
    assert.equal(server.refreshCalls, 2);
    assert.equal(FakeSocket.all.length, 2, "reconnected after the backoff");
    assert.equal(new URL(FakeSocket.all[1]!.url).searchParams.get("token"), session.tokens.accessToken);
    await conn.close();
  });
});
