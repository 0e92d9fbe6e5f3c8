// WindiSession: one login (one server-side session, SPEC §12) whose access
// token renews itself. The access token lives JWT_TTL (15 minutes by
// default); the refresh token is spent by every refresh and replaced by its
// successor (rotation), and presenting a spent one revokes the whole
// session (reuse detection). So refreshes must never race: one is in
// flight at a time, and every caller that needs a new token waits for it.
//
// session.api is a REST client whose requests carry the current access
// token, refreshed first when it is about to expire; a request answered 401
// refreshes once and is sent again once. session.token is a TokenProvider
// for WindiConnection (session.connect wires it): close 4501 and a 401 at
// the handshake reconnect with a refreshed token, close 4401 (the session
// was revoked: signed out elsewhere, the password changed) ends the
// connection and the session.
import type { components } from "./schema.js";
import { CloseCode, CloseError, WindiConnection, type ConnectionOptions } from "./connection.js";
import { ApiError, createWindiClient, formBody, type WindiClient } from "./rest.js";

type Schemas = components["schemas"];

/** What a session holds; store refreshToken (it changes on every refresh) to resume the session later. */
export interface SessionTokens {
  accessToken: string;
  refreshToken: string;
  /** When the access token expires, in ms since the epoch (by the client's clock). */
  expiresAt: number;
  sessionId: number;
}

/**
 * SessionEndedError: the session cannot go on, log in again. status is the
 * refresh's (401: revoked, expired, or a refresh token used twice), 4401
 * when a WebSocket of the session was closed as revoked, or 0 when the
 * shared store no longer holds the session (SharedSession.read: logged out
 * in another tab).
 */
export class SessionEndedError extends Error {
  constructor(
    readonly status: number,
    readonly problem?: Schemas["Problem"],
  ) {
    super(`session ended (${status}${problem ? ` ${problem.code}` : ""}): log in again`);
    this.name = "SessionEndedError";
  }
}

/** RefreshError: a refresh failed on the way (network, 5xx); the session goes on and a later call tries again. */
export class RefreshError extends Error {
  /** WindiConnection backs off and retries on temporary errors of its token provider. */
  readonly temporary = true;
  constructor(
    readonly status: number,
    override readonly cause?: unknown,
  ) {
    super(`token refresh failed (${status === -1 ? "network" : `status ${status}`})`);
    this.name = "RefreshError";
  }
}

/**
 * SharedSession lets several holders of one session (a browser's tabs, or
 * processes sharing a token file) refresh it without spending a refresh
 * token twice, which would make the server revoke the session: every
 * refresh runs under lock, one holder at a time, and spends the refresh
 * token read() returns then (the one the last holder stored); onTokens,
 * still under the lock, stores its successor. Each holder keeps its own
 * access token.
 */
export interface SharedSession {
  /** Runs fn under a lock all holders share, e.g. (fn) => navigator.locks.request("windi.refresh", fn). */
  lock<T>(fn: () => Promise<T>): Promise<T>;
  /** The refresh token stored now; null when the store no longer holds the session (it then ends here too, with status 0). */
  read(): string | null;
}

export interface SessionOptions {
  baseUrl: string;
  /** The tokens of a login (from WindiSession.login, or stored), or only a refresh token (the first call refreshes). */
  tokens: SessionTokens | { refreshToken: string; accessToken?: string; expiresAt?: number; sessionId?: number };
  /** Called after every refresh with the new tokens: store the refresh token, the old one is spent. */
  onTokens?: (t: SessionTokens) => void;
  /** Called once when the session ends (revoked, expired, logged out): forget the stored tokens, log in again. */
  onEnd?: (err: SessionEndedError) => void;
  /** Refresh this long before the access token expires; default a quarter of its lifetime, at most 60 s. */
  refreshEarlyMs?: number;
  /** The session is shared with other holders (tabs, processes): refreshes take turns under a lock. */
  shared?: SharedSession;
  fetch?: typeof fetch;
  /** The time; tests pass a fake one. */
  now?: () => number;
}

/** Options of WindiSession.login beyond SessionOptions. */
export interface LoginOptions extends Omit<SessionOptions, "baseUrl" | "tokens"> {
  /** The name the device list shows for this session (GET /sessions); default the User-Agent. */
  device?: string;
}

/** tokensOf turns a Token answer into SessionTokens, expiry by the clock at now. */
function tokensOf(t: Schemas["Token"], now: number): SessionTokens {
  return { accessToken: t.access_token, refreshToken: t.refresh_token, expiresAt: now + t.expires_in * 1000, sessionId: t.session_id };
}

/**
 * WindiSession keeps one login's tokens current. Create it with
 * WindiSession.login, or with new WindiSession({ tokens: { refreshToken } })
 * to resume a stored session.
 */
export class WindiSession {
  readonly baseUrl: string;
  /** REST with the session's token: refreshed before expiry, and once more (with one retry) after a 401. */
  readonly api: WindiClient;
  /** A TokenProvider for WindiConnection: renews on `expired`, and whenever the token is about to expire. */
  readonly token: (expired: boolean) => Promise<string>;

  private readonly opts: SessionOptions;
  private readonly fetchFn: typeof fetch;
  private readonly now: () => number;
  private access: string;
  private refreshTok: string;
  private expiresAt: number;
  private lifetime: number;
  private sessionIdNow: number;
  private inflight: Promise<string> | undefined;
  private endedWith: SessionEndedError | undefined;
  private refreshes = 0;

  constructor(opts: SessionOptions) {
    this.opts = opts;
    this.baseUrl = opts.baseUrl;
    this.fetchFn = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.now = opts.now ?? Date.now;
    const t = opts.tokens;
    this.access = t.accessToken ?? "";
    this.refreshTok = t.refreshToken;
    this.expiresAt = t.expiresAt ?? 0;
    this.lifetime = Math.max(0, this.expiresAt - this.now());
    this.sessionIdNow = t.sessionId ?? 0;
    this.api = createWindiClient(this.baseUrl, undefined, { fetch: (req: Request) => this.send(req) });
    let given = "";
    this.token = async (expired) => {
      given = expired ? await this.renew(given) : await this.accessToken();
      return given;
    };
  }

  /**
   * login logs in with an email and password and returns the new session;
   * a wrong password throws ApiError 401 (invalid_credentials).
   */
  static async login(baseUrl: string, email: string, password: string, opts: LoginOptions = {}): Promise<WindiSession> {
    const anon = createWindiClient(baseUrl, undefined, opts.fetch ? { fetch: opts.fetch } : {});
    const form: Schemas["LoginForm"] = { username: email, password };
    if (opts.device !== undefined) form.device = opts.device;
    const { data, error, response } = await anon.POST("/login", {
      body: form,
      bodySerializer: formBody,
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
    });
    if (!data) throw new ApiError(response.status, error);
    const { device: _, ...rest } = opts;
    return new WindiSession({ ...rest, baseUrl, tokens: tokensOf(data, (opts.now ?? Date.now)()) });
  }

  /** The tokens now (the refresh token changes on every refresh). */
  get tokens(): SessionTokens {
    return { accessToken: this.access, refreshToken: this.refreshTok, expiresAt: this.expiresAt, sessionId: this.sessionIdNow };
  }

  /** This session's id (GET /sessions lists it with current: true); 0 until the first refresh of a resumed one. */
  get sessionId(): number {
    return this.sessionIdNow;
  }

  /** Why the session ended, once it has. */
  get ended(): SessionEndedError | undefined {
    return this.endedWith;
  }

  /** How many refreshes this session made (each one a POST /token/refresh). */
  get refreshCount(): number {
    return this.refreshes;
  }

  /** accessToken returns a token good for a while: the current one, or a fresh one when it is about to expire. */
  async accessToken(): Promise<string> {
    if (this.endedWith) throw this.endedWith;
    const early = this.opts.refreshEarlyMs ?? Math.min(60_000, this.lifetime / 4);
    if (this.access && this.now() < this.expiresAt - early) return this.access;
    return this.renew(this.access);
  }

  /**
   * renew returns a token other than stale: the current one if a refresh
   * already replaced stale, else the result of a refresh (the one in flight,
   * or a new one). It throws SessionEndedError when the server refuses the
   * refresh, RefreshError when it could not be asked.
   */
  async renew(stale: string): Promise<string> {
    if (this.endedWith) throw this.endedWith;
    if (this.inflight) return this.inflight;
    if (this.access && this.access !== stale) return this.access;
    return this.refresh();
  }

  /** refresh trades the refresh token for new tokens; concurrent calls share one request. */
  refresh(): Promise<string> {
    if (this.endedWith) return Promise.reject(this.endedWith);
    const shared = this.opts.shared;
    this.inflight ??= (shared ? shared.lock(() => this.doRefresh()) : this.doRefresh()).finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private async doRefresh(): Promise<string> {
    if (this.endedWith) throw this.endedWith; // it ended while this waited for the lock
    const shared = this.opts.shared;
    if (shared) {
      // Another holder may have refreshed meanwhile: this one's token is spent then.
      const stored = shared.read();
      if (stored === null) throw this.end(new SessionEndedError(0));
      this.refreshTok = stored;
    }
    const anon = createWindiClient(this.baseUrl, undefined, { fetch: (req: Request) => this.fetchFn(req) });
    let r;
    try {
      r = await anon.POST("/token/refresh", { body: { refresh_token: this.refreshTok } });
    } catch (e) {
      throw new RefreshError(-1, e);
    }
    if (!r.data) {
      const status = r.response.status;
      // 400 and 422: a refresh token the server cannot even read; as dead as a 401.
      if (status === 401 || status === 400 || status === 422) throw this.end(new SessionEndedError(status, r.error as Schemas["Problem"] | undefined));
      throw new RefreshError(status);
    }
    this.refreshes++;
    const t = tokensOf(r.data, this.now());
    this.access = t.accessToken;
    this.refreshTok = t.refreshToken;
    this.expiresAt = t.expiresAt;
    this.lifetime = r.data.expires_in * 1000;
    this.sessionIdNow = t.sessionId;
    this.opts.onTokens?.(t);
    return t.accessToken;
  }

  /** send is the api's fetch: the token on the way out, one refresh and one retry after a 401. */
  private async send(req: Request): Promise<Response> {
    const spare = req.clone(); // a body can be read once: this one is for the retry
    const token = await this.accessToken();
    const res = await this.fetchFn(authorized(req, token));
    if (res.status !== 401) return res;
    const problem = await problemOf(res);
    // A wrong current password (POST /users/me/password) is no token problem.
    if (problem?.code === "invalid_credentials") return res;
    // A revoked session stays revoked: no refresh can help.
    if (problem?.code === "session_revoked") {
      this.end(new SessionEndedError(401, problem));
      return res;
    }
    let fresh: string;
    try {
      fresh = await this.renew(token);
    } catch (e) {
      if (e instanceof SessionEndedError) return res; // the caller sees the 401; onEnd has run
      throw e;
    }
    return this.fetchFn(authorized(spare, fresh));
  }

  /**
   * connect opens a WindiConnection with this session's tokens: it renews
   * them on 4501 and on a 401 at the handshake; close 4401 ends it and the
   * session. It resolves once the first socket is open.
   */
  async connect(opts: Omit<ConnectionOptions, "baseUrl" | "token">): Promise<WindiConnection> {
    return WindiConnection.connect(this.connectionOptions(opts));
  }

  /** start is connect that returns the connection at once (WindiConnection.start): sends queue until a socket is open. */
  start(opts: Omit<ConnectionOptions, "baseUrl" | "token">): WindiConnection {
    return WindiConnection.start(this.connectionOptions(opts));
  }

  private connectionOptions(opts: Omit<ConnectionOptions, "baseUrl" | "token">): ConnectionOptions {
    const onClose = opts.onClose;
    return {
      ...opts,
      baseUrl: this.baseUrl,
      token: this.token,
      fetch: opts.fetch ?? this.opts.fetch,
      onClose: (err) => {
        if (err instanceof CloseError && err.code === CloseCode.Revoked) this.end(new SessionEndedError(CloseCode.Revoked));
        onClose?.(err);
      },
    };
  }

  /** logout revokes this session on the server (POST /logout): its sockets close with 4401 everywhere. */
  async logout(): Promise<void> {
    if (this.endedWith) return;
    const r = await this.api.POST("/logout");
    if (!r.response.ok && r.response.status !== 401) throw new ApiError(r.response.status, r.error as Schemas["Problem"] | undefined);
    this.end(new SessionEndedError(r.response.ok ? 204 : 401));
  }

  /** end marks the session over (once) and tells onEnd; it returns the reason it ended with. */
  private end(err: SessionEndedError): SessionEndedError {
    if (this.endedWith) return this.endedWith;
    this.endedWith = err;
    this.access = "";
    this.opts.onEnd?.(err);
    return err;
  }
}

/** authorized is req with `Authorization: Bearer token`. */
function authorized(req: Request, token: string): Request {
  const r = new Request(req);
  r.headers.set("Authorization", `Bearer ${token}`);
  return r;
}

/** problemOf reads the RFC 9457 problem of res from a copy (the caller still reads res). */
async function problemOf(res: Response): Promise<Schemas["Problem"] | undefined> {
  try {
    const p = (await res.clone().json()) as Schemas["Problem"];
    return typeof p?.code === "string" ? p : undefined;
  } catch {
    return undefined;
  }
}
