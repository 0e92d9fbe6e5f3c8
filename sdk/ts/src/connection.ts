// WindiConnection: a WebSocket session with a WinDI Chat server that
// outlives its sockets. It has the semantics of the Go SDK's client.Conn:
// every message of every followed chat reaches onMessage exactly once and
// in seq order (own messages included, from their acks), and every later
// change of a message (edit, delete, reaction) reaches onUpdate once, in
// order, across reconnects and replica losses: each chat resumes by
// revision (since_rev), so changes made while away arrive too. Sends are
// queued, keep their client_msg_id across reconnects (so each is stored
// once) and resolve with their ack or error frame; edits, deletes and
// reactions are queued and written in order; close codes 4401, 4403 and
// 4500–4999 (4501 too, unless the token provider hands out a new token)
// end it; everything else reconnects with jittered exponential backoff.
//
// It runs in browsers (the global WebSocket) and in Node (the `ws`
// package, an optional peer dependency, loaded when there is no global
// WebSocket; or pass `WebSocket`).
import type { components } from "./schema.js";
import { ChatStream, type Position } from "./order.js";
import { createWindiClient } from "./rest.js";

export type { Position } from "./order.js";

type Schemas = components["schemas"];
export type Message = Schemas["Message"];
export type ServerFrame = Schemas["ServerFrame"];
export type MessageAckFrame = Schemas["MessageAckFrame"];
export type ErrorFrame = Schemas["ErrorFrame"];

/** Close codes of the WinDI protocol (SPEC §4) beyond RFC 6455's. */
export const CloseCode = {
  GoingAway: 1001,
  TooLarge: 1009,
  SlowConsumer: 4008,
  Revoked: 4401,
  Removed: 4403,
  TokenExpired: 4501,
} as const;

/** The largest frame the server accepts (64 KiB); larger ones close with 1009. */
export const MAX_FRAME_BYTES = 64 * 1024;

/**
 * TokenProvider returns the access token for the next connection. expired
 * is true when the server has just rejected the previous one (a 401 at the
 * handshake, or close 4501): return a different token, or throw to end the
 * connection. An error with `temporary: true` (RefreshError) does not end
 * it: the connection backs off and asks again. WindiSession.token is one.
 */
export type TokenProvider = (expired: boolean) => string | Promise<string>;

export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";

/** The time a connection uses for its waits; tests pass a fake one. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** What WindiConnection needs of a WebSocket: the browser API, which `ws` also has. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Backoff chooses the wait in ms before reconnect attempt n (1, 2, 3…). */
export type Backoff = (attempt: number) => number;

/**
 * exponentialBackoff doubles the wait from minMs to maxMs and picks a
 * random point in its upper half ("equal jitter").
 */
export function exponentialBackoff(minMs: number, maxMs: number): Backoff {
  return (attempt) => {
    const d = Math.min(maxMs, minMs * 2 ** Math.max(0, Math.min(attempt, 32) - 1));
    return d / 2 + Math.random() * (d / 2);
  };
}

/** 0.25–0.5 s before the first retry, doubling to at most 15 s. */
export const defaultBackoff = exponentialBackoff(500, 15000);

export interface ConnectionOptions {
  /** The server's base URL, e.g. http://localhost:8000. */
  baseUrl: string;
  /** A token, or a provider that can renew it. */
  token: string | TokenProvider;
  /** Follow one chat (/ws/{chat_id}) instead of every chat (/ws). */
  chatId?: number;
  /**
   * Resume positions by seq: chat id to the last seq the application has
   * (new messages only are replayed). Chats in neither `since` nor `resume`
   * start after their last message's revision (GET /chats), so nothing
   * committed after connect was called is missed.
   */
  since?: Record<number, number> | Map<number, number>;
  /** Resume positions by revision (from resumePositions()): every change after Position.rev is replayed. */
  resume?: Record<number, Position> | Map<number, Position>;
  /** Resume every reconnect by seq (since_seq, new messages only), as before revisions. */
  resumeBySeq?: boolean;
  /** Every message once, in seq order per chat. */
  onMessage?: (m: Message) => void;
  /** Every change of a message (edit, delete, reaction) once, in order: its state after it. */
  onUpdate?: (m: Message) => void;
  /** Another member is typing in a chat (show it for about 5 s); without it typing frames go to onFrame. */
  onTyping?: (chatId: number, userId: number) => void;
  /** Error frames that answer no send (a refused edit, delete or reaction names chat_id and seq); without it they go to onFrame. */
  onError?: (e: FrameError) => void;
  /** Every other frame: receipts, presence, membership (typing and errors without onTyping / onError). */
  onFrame?: (f: ServerFrame) => void;
  /**
   * Every change of state, with the error that caused it; on "disconnected"
   * retryInMs says when the next attempt starts (none while paused).
   */
  onState?: (s: ConnectionState, err?: Error, retryInMs?: number) => void;
  /** Called once when the connection ends for good, with the reason. */
  onClose?: (err: Error) => void;
  backoff?: Backoff;
  clock?: Clock;
  /** How long a chat waits above a gap after a sync before syncing again; default 5000 ms. */
  gapTimeoutMs?: number;
  /** Sends waiting for acks at most; default 10000. */
  maxPending?: number;
  /** Sends written ahead of their acks; default 64. */
  maxInFlight?: number;
  /** Retries of a send answered rate_limited or unavailable; default 10, 0 for none. */
  sendRetries?: number;
  /**
   * Drop a socket that has read nothing, not even a ping, for this long
   * and reconnect, as the Go client does; default 60000 (the server pings
   * every 25 s), 0 for never. It applies only where the WebSocket shows
   * the server's pings, as `ws` does (its "ping" event): a browser's
   * WebSocket answers pings unseen, so there a quiet socket is no sign of
   * a dead one (use pause() and reconnect() on the offline and online
   * events instead).
   */
  idleTimeoutMs?: number;
  WebSocket?: WebSocketConstructor;
  fetch?: typeof fetch;
  /** Sees every frame read (out false) and written (out true). */
  trace?: (out: boolean, data: string) => void;
}

/** ClosedError: the connection ended before the send was answered. */
export class ClosedError extends Error {
  constructor(override readonly cause?: Error) {
    super(cause ? `connection closed: ${cause.message}` : "connection closed");
    this.name = "ClosedError";
  }
}

/** The error frame the server answered to a send. */
export class FrameError extends Error {
  constructor(readonly frame: ErrorFrame) {
    super(`${frame.code}: ${frame.message}`);
    this.name = "FrameError";
  }
  get code(): ErrorFrame["code"] {
    return this.frame.code;
  }
  /** The same send may succeed later (rate_limited, unavailable). */
  get temporary(): boolean {
    return this.frame.code === "rate_limited" || this.frame.code === "unavailable";
  }
}

/** The close frame that ended the connection for good. */
export class CloseError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
  ) {
    super(`connection closed with ${code} ${reason}`);
    this.name = "CloseError";
  }
}

/** A handshake the server refused for good (401 after a refresh, 403, 404). */
export class HandshakeError extends Error {
  constructor(readonly status: number) {
    super(`websocket handshake refused: ${status}`);
    this.name = "HandshakeError";
  }
}

/** A send on its way; ack resolves with the message.ack or rejects. */
export interface PendingSend {
  readonly chatId: number;
  readonly clientMsgId: string;
  readonly ack: Promise<MessageAckFrame>;
}

interface Outgoing extends PendingSend {
  frame: string;
  written: boolean;
  resolved: boolean;
  attempts: number;
  resolve(a: MessageAckFrame): void;
  reject(e: Error): void;
}

/** Options of a send. */
export interface SendOptions {
  /** The application's own client_msg_id; a new random one by default. */
  clientMsgId?: string;
  /** Reply to this message of the same chat (deleted ones too). */
  replyToSeq?: number;
}

/** How often typing() writes a typing frame per chat at most (the server relays one per 2 s). */
export const TYPING_INTERVAL_MS = 2000;

/** The largest query of positions put in a handshake URL; the rest resume with sync frames. */
const MAX_RESUME_QUERY = 6 * 1024;

interface ChatState {
  stream: ChatStream;
  fallback?: Position;
  inURL: boolean;
  syncDue: number; // 0: none
  gapCheck: number; // 0: none
  syncFails: number;
}

/** newClientMsgId returns a random client_msg_id. */
export function newClientMsgId(): string {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function defaultWebSocket(): Promise<WebSocketConstructor> {
  const g = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (g) return g;
  const name = "ws"; // a variable: bundlers for browsers must not pull ws in
  try {
    const mod = (await import(name)) as { default?: WebSocketConstructor; WebSocket?: WebSocketConstructor };
    const ctor = mod.WebSocket ?? mod.default;
    if (ctor) return ctor;
  } catch {
    // fall through to the error below
  }
  throw new Error("no WebSocket: install the `ws` package (npm install ws) or pass options.WebSocket");
}

const OPEN = 1;

/**
 * How long after its write a change still counts as possibly unprocessed
 * when its socket ends: the server answers one within milliseconds, or not
 * at all when it changed nothing (an edit to the same text).
 */
const CHANGE_SETTLE_MS = 10_000;

/**
 * WindiConnection follows the user's chats over one WebSocket at a time.
 * Create it with WindiConnection.connect, which resolves once the first
 * socket is open and resumed.
 */
export class WindiConnection {
  private readonly opts: ConnectionOptions;
  private readonly clock: Clock;
  private readonly backoff: Backoff;
  private readonly tokenOf: TokenProvider;
  private readonly gapTimeout: number;
  private readonly maxPending: number;
  private readonly maxInFlight: number;
  private readonly sendRetries: number;
  private readonly idleMs: number;
  private WS?: WebSocketConstructor;

  private chats = new Map<number, ChatState>();
  private pending = new Map<string, Outgoing>();
  private outbox: Outgoing[] = [];
  private reads = new Map<number, number>();
  // Edit, delete and reaction frames not yet written; at is when one was
  // first written (a change written again keeps it), 0 if never.
  private changes: { frame: string; at: number }[] = [];
  // Changes written on the current socket that the server has not answered
  // about yet (a message.updated or an error frame for their message):
  // written again first on the next socket if this one ends.
  private unconfirmed: { frame: string; chatId: number; seq: number; at: number }[] = [];
  private typedAt = new Map<number, number>();
  private ws: WebSocketLike | undefined;
  private opened = false;
  private positioned = false;
  private inflight = 0;
  private pauseUntil = 0;
  private pauses = 0;
  private attempt = 0;
  private expired = false;
  private rejected = 0;
  private upSince = 0;
  private timer: unknown;
  private deadline = 0;
  private reconnectTimer: unknown;
  private paused = false;
  // Counts dials, pauses and reconnects: an attempt whose number is no
  // longer current was overtaken by one of them and stops where it is.
  private epoch = 0;
  private dialing = false;
  private idleWatch = false; // the socket shows pings: the idle check is on
  private lastRead = 0;
  private ended: Error | undefined;
  private stateNow: ConnectionState = "connecting";
  private stateReported = false;
  private firstDone = false;
  private firstResolve!: () => void;
  private firstReject!: (e: Error) => void;
  private closedResolve!: (e: Error) => void;
  /** Resolves with the reason once the connection has ended. */
  readonly closed: Promise<Error>;
  /**
   * Resolves once the first socket is open and resumed; rejects with the
   * error that ended the connection before that.
   */
  readonly ready: Promise<void>;

  private constructor(opts: ConnectionOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    this.backoff = opts.backoff ?? defaultBackoff;
    const tok = opts.token;
    this.tokenOf =
      typeof tok === "function"
        ? tok
        : (expired) => {
            if (expired) throw new Error("token rejected and no token provider to renew it");
            return tok;
          };
    this.gapTimeout = opts.gapTimeoutMs ?? 5000;
    this.maxPending = opts.maxPending ?? 10000;
    this.maxInFlight = opts.maxInFlight ?? 64;
    this.sendRetries = opts.sendRetries ?? 10;
    this.idleMs = opts.idleTimeoutMs ?? 60_000;
    this.WS = opts.WebSocket;
    for (const [id, seq] of entries(opts.since)) this.chats.set(id, newChat({ seq, rev: 0 }, true));
    for (const [id, p] of entries(opts.resume)) this.chats.set(id, newChat(p, true));
    this.closed = new Promise((resolve) => (this.closedResolve = resolve));
    this.ready = new Promise<void>((resolve, reject) => {
      this.firstResolve = resolve;
      this.firstReject = reject;
    });
    this.ready.catch(() => {}); // start()'s caller may never look: onClose tells it too
  }

  /**
   * connect starts a connection and resolves once its first socket is open
   * and resumed; it rejects with the error that ends it (a handshake
   * refused for good, the token provider's error). Failures that may pass
   * are retried with backoff.
   */
  static async connect(opts: ConnectionOptions): Promise<WindiConnection> {
    const c = WindiConnection.start(opts);
    await c.ready;
    return c;
  }

  /**
   * start starts a connection and returns it at once, before any socket
   * is open: sends, changes and reads queue until one is (`ready` says
   * when). For an application that shows its own state meanwhile, such
   * as a page that may open while offline.
   */
  static start(opts: ConnectionOptions): WindiConnection {
    const c = new WindiConnection(opts);
    void c.dial();
    return c;
  }

  get state(): ConnectionState {
    return this.stateNow;
  }

  /** Queues text for chatId under a new client_msg_id. */
  send(chatId: number, text: string): PendingSend {
    return this.sendWith(chatId, text, {});
  }

  /**
   * sendWithId queues a send with the application's own client_msg_id;
   * while one with the same chat and id waits, it returns that one.
   */
  sendWithId(chatId: number, clientMsgId: string, text: string): PendingSend {
    return this.sendWith(chatId, text, { clientMsgId });
  }

  /** sendWith queues a send with options: a reply (replyToSeq), the application's own client_msg_id. */
  sendWith(chatId: number, text: string, o: SendOptions): PendingSend {
    this.checkChat(chatId);
    const clientMsgId = o.clientMsgId ?? newClientMsgId();
    const key = `${chatId}:${clientMsgId}`;
    const have = this.pending.get(key);
    if (have) return have;
    if (this.pending.size >= this.maxPending) throw new Error("too many sends waiting for their acks");
    const f: Schemas["MessageSendFrame"] = { type: "message.send", chat_id: chatId, client_msg_id: clientMsgId, text };
    if (o.replyToSeq !== undefined) f.reply_to_seq = o.replyToSeq;
    const frame = JSON.stringify(f);
    if (new TextEncoder().encode(frame).length > MAX_FRAME_BYTES) throw new Error("frame over 64 KiB");
    let resolve!: (a: MessageAckFrame) => void;
    let reject!: (e: Error) => void;
    const ack = new Promise<MessageAckFrame>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    ack.catch(() => {}); // an unobserved failure is the caller's choice, not a crash
    const p: Outgoing = { chatId, clientMsgId, ack, frame, written: false, resolved: false, attempts: 0, resolve, reject };
    this.pending.set(key, p);
    this.outbox.push(p);
    this.pump();
    return p;
  }

  /**
   * edit asks the server to replace the text of message seq (its sender
   * only). edit, delete, react and unreact are written in the order called,
   * at once or on the next connection (and again on the next one when
   * their socket ended within 10 s before the server answered about the
   * message: each is idempotent); success reaches every connection as
   * message.updated (onUpdate), an edit to the same text sends nothing, and
   * a refusal is an error frame naming chat_id and seq (onError):
   * forbidden, not_found, bad_request (a deleted message, a bad text),
   * too_large. It throws only when the connection has ended.
   */
  edit(chatId: number, seq: number, text: string): void {
    this.change(chatId, { type: "message.edit", chat_id: chatId, seq, text } satisfies Schemas["MessageEditFrame"]);
  }

  /** delete asks the server to delete message seq (its sender, or the group's owner): a tombstone reaches onUpdate. */
  delete(chatId: number, seq: number): void {
    this.change(chatId, { type: "message.delete", chat_id: chatId, seq } satisfies Schemas["MessageDeleteFrame"]);
  }

  /** react adds the user's emoji (1..16 characters, no whitespace; at most 20 distinct per message). */
  react(chatId: number, seq: number, emoji: string): void {
    this.change(chatId, { type: "reaction.add", chat_id: chatId, seq, emoji } satisfies Schemas["ReactionAddFrame"]);
  }

  /** unreact removes the user's emoji. */
  unreact(chatId: number, seq: number, emoji: string): void {
    this.change(chatId, { type: "reaction.remove", chat_id: chatId, seq, emoji } satisfies Schemas["ReactionRemoveFrame"]);
  }

  /**
   * typing tells the chat's other members that the user types: call it on
   * every keystroke. It writes at most one frame per chat every
   * TYPING_INTERVAL_MS, and only while connected (never late).
   */
  typing(chatId: number): void {
    this.checkChat(chatId);
    if (!this.ws || !this.opened) return;
    const now = this.clock.now();
    const at = this.typedAt.get(chatId);
    if (at !== undefined && now - at < TYPING_INTERVAL_MS) return;
    this.typedAt.set(chatId, now);
    this.write(JSON.stringify({ type: "typing", chat_id: chatId } satisfies Schemas["TypingFrame"]));
  }

  private checkChat(chatId: number): void {
    if (this.ended) throw new ClosedError(this.ended);
    if (this.opts.chatId !== undefined && chatId !== this.opts.chatId) {
      throw new Error(`chat ${chatId} on the connection of chat ${this.opts.chatId}`);
    }
  }

  private change(chatId: number, frame: object): void {
    this.checkChat(chatId);
    if (this.changes.length >= this.maxPending) throw new Error("too many changes waiting");
    this.changes.push({ frame: JSON.stringify(frame), at: 0 });
    this.flushChanges();
  }

  private flushChanges(): void {
    const now = this.clock.now();
    // Older than the window: never written again, so not kept either.
    this.unconfirmed = this.unconfirmed.filter((c) => now - c.at <= CHANGE_SETTLE_MS);
    while (this.changes.length > 0 && this.ws && this.opened && this.ws.readyState === OPEN) {
      const { frame, at } = this.changes.shift()!;
      this.write(frame);
      const k = JSON.parse(frame) as { chat_id: number; seq: number };
      this.unconfirmed.push({ frame, chatId: k.chat_id, seq: k.seq, at: at || now });
    }
  }

  /** settleChanges forgets the written changes of one message: the server has answered about it. */
  private settleChanges(chatId: number, seq: number): void {
    this.unconfirmed = this.unconfirmed.filter((c) => c.chatId !== chatId || c.seq !== seq);
  }

  /**
   * requeueChanges runs when a socket ends: the changes first written in
   * the last CHANGE_SETTLE_MS that the server never answered about may not
   * have been processed (a replica shutting down, a dead link), so they go
   * first on the next socket. Each is idempotent: one that was applied
   * changes nothing the second time.
   */
  private requeueChanges(): void {
    if (this.unconfirmed.length === 0) return;
    const now = this.clock.now();
    const again = this.unconfirmed.filter((c) => now - c.at <= CHANGE_SETTLE_MS).map((c) => ({ frame: c.frame, at: c.at }));
    this.unconfirmed = [];
    this.changes = [...again, ...this.changes];
  }

  /** Moves the read watermark of chatId to seq; kept until a socket takes it. */
  markRead(chatId: number, seq: number): void {
    if (this.ended) throw new ClosedError(this.ended);
    if (seq > (this.reads.get(chatId) ?? -1)) this.reads.set(chatId, seq);
    this.flushReads();
  }

  /** Each chat's last seq delivered to onMessage (for `since`). */
  positions(): Map<number, number> {
    const out = new Map<number, number>();
    for (const [id, st] of this.chats) if (st.stream.seqKnown) out.set(id, st.stream.seq);
    return out;
  }

  /** Each chat's position with its revision (for `resume`: every change made meanwhile is replayed). */
  resumePositions(): Map<number, Position> {
    const out = new Map<number, Position>();
    for (const [id, st] of this.chats) if (st.stream.hasPosition()) out.set(id, st.stream.position());
    return out;
  }

  /** Ends the connection: close 1000, waiting sends reject with ClosedError. */
  close(): Promise<Error> {
    if (!this.ended) {
      const ws = this.ws;
      this.detach();
      if (ws && (ws.readyState === 0 || ws.readyState === OPEN)) ws.close(1000, "client closing");
      this.finish(new ClosedError());
    }
    return this.closed;
  }

  /**
   * pause closes the socket and connects no more until reconnect(): for
   * when the application knows the network is gone (a browser's offline
   * event), rather than wait for a dead socket to time out and back off
   * against no network. Sends, changes and reads queue meanwhile; the
   * state is "disconnected".
   */
  pause(): void {
    if (this.ended || this.paused) return;
    this.paused = true;
    this.epoch++; // an attempt on its way stops
    this.dialing = false;
    if (this.reconnectTimer !== undefined) this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const ws = this.ws;
    this.detach();
    if (ws && (ws.readyState === 0 || ws.readyState === OPEN)) ws.close(1000, "client paused");
    this.setState("disconnected", new Error("paused"));
  }

  /**
   * reconnect ends a pause, or a wait for the backoff, and connects at
   * once with the backoff started over: for when the application knows
   * the network is back (a browser's online event). A socket open or on
   * its way is left as it is.
   */
  reconnect(): void {
    if (this.ended) return;
    this.paused = false;
    if (this.ws || this.dialing) return;
    if (this.reconnectTimer !== undefined) this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.attempt = 0;
    void this.dial();
  }

  // --- connecting ---

  private async dial(): Promise<void> {
    if (this.ended || this.paused) return;
    const epoch = ++this.epoch;
    this.dialing = true;
    try {
      await this.dialNow(epoch);
    } finally {
      if (epoch === this.epoch) this.dialing = false;
    }
  }

  /** current: the attempt numbered epoch still counts (no end, pause or newer attempt overtook it). */
  private current(epoch: number): boolean {
    return !this.ended && epoch === this.epoch;
  }

  private async dialNow(epoch: number): Promise<void> {
    this.setState("connecting");
    let token: string;
    try {
      token = await this.tokenOf(this.expired);
    } catch (e) {
      if (!this.current(epoch)) return;
      const err = e instanceof Error ? e : new Error(String(e));
      if ((err as { temporary?: unknown }).temporary === true) {
        // The provider could not renew the token just now (a refresh on
        // its way failed): back off and ask again.
        this.attempt++;
        this.retry(this.backoff(this.attempt), err);
        return;
      }
      this.finish(err);
      return;
    }
    if (!this.current(epoch)) return;
    if (!this.positioned) {
      const status = await this.readPositions(token);
      if (!this.current(epoch)) return;
      if (status !== 0) {
        this.failed(status, new Error(`reading positions: status ${status}`));
        return;
      }
      this.positioned = true;
    }
    try {
      this.WS ??= await defaultWebSocket();
    } catch (e) {
      this.finish(e as Error);
      return;
    }
    if (!this.current(epoch)) return;
    const ws = new this.WS(this.url(token));
    this.ws = ws;
    this.opened = false;
    ws.onopen = () => this.onOpen();
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onerror = () => {}; // onclose follows and says more
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.detach();
      if (!this.opened) void this.handshakeFailed(token, epoch);
      else this.lost(ev.code, ev.reason);
    };
    // `ws` (Node) shows the server's pings; a browser's WebSocket does not.
    const pings = ws as unknown as { on?: (event: string, fn: () => void) => unknown };
    this.idleWatch = this.idleMs > 0 && typeof pings.on === "function";
    if (this.idleWatch) {
      pings.on!("ping", () => {
        if (this.ws === ws) this.lastRead = this.clock.now();
      });
    }
  }

  /**
   * url prepares every chat for a new socket and builds the handshake URL,
   * which resumes each chat from its position: since_rev (or since_seq
   * without a revision) on /ws/{chat_id}; on /ws the since_rev=chat:rev,…
   * and since=chat:seq,… lists, so every chat resumes at the handshake
   * without racing live frames. Chats that do not fit resume with sync
   * frames once the socket is open.
   */
  private url(token: string): string {
    const u = new URL(this.opts.chatId === undefined ? "/ws" : `/ws/${this.opts.chatId}`, this.opts.baseUrl);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    u.searchParams.set("token", token);
    const bySeq = this.opts.resumeBySeq === true;
    for (const st of this.chats.values()) {
      st.stream.reconnected();
      st.inURL = false;
      if (!st.stream.hasPosition() && st.fallback) st.stream = new ChatStream(st.fallback, true);
    }
    if (this.opts.chatId !== undefined) {
      const st = this.chats.get(this.opts.chatId);
      if (st?.stream.hasPosition()) {
        st.inURL = true;
        if (st.stream.rev > 0 && !bySeq) u.searchParams.set("since_rev", String(st.stream.rev));
        else u.searchParams.set("since_seq", String(st.stream.seq));
      }
      return u.toString();
    }
    const revs: string[] = [];
    const seqs: string[] = [];
    let size = 0;
    for (const [id, st] of [...this.chats].sort((a, b) => a[0] - b[0])) {
      if (!st.stream.hasPosition()) continue;
      if (size > MAX_RESUME_QUERY) break;
      const byRev = st.stream.rev > 0 && !bySeq;
      const pair = `${id}:${byRev ? st.stream.rev : st.stream.seq}`;
      (byRev ? revs : seqs).push(pair);
      size += pair.length + 1;
      st.inURL = true;
    }
    if (revs.length) u.searchParams.set("since_rev", revs.join(","));
    if (seqs.length) u.searchParams.set("since", seqs.join(","));
    return u.toString();
  }

  /** readPositions sets unknown chats' positions from GET /chats; returns 0 or the failing status (-1: network). */
  private async readPositions(token: string): Promise<number> {
    const api = createWindiClient(this.opts.baseUrl, token, this.opts.fetch ? { fetch: this.opts.fetch } : {});
    try {
      let chats: Schemas["Chat"][];
      if (this.opts.chatId !== undefined) {
        if (this.chats.get(this.opts.chatId)?.stream.hasPosition()) return 0;
        const r = await api.GET("/chats/{chat_id}", { params: { path: { chat_id: this.opts.chatId } } });
        if (!r.data) return r.response.status;
        chats = [r.data];
      } else {
        const r = await api.GET("/chats");
        if (!r.data) return r.response.status;
        chats = r.data;
      }
      for (const ch of chats) {
        if (!this.chats.get(ch.id)?.stream.hasPosition()) this.chats.set(ch.id, newChat(chatStart(ch), true));
      }
      return 0;
    } catch {
      return -1;
    }
  }

  /**
   * handshakeFailed learns why a socket never opened: browsers do not show
   * the handshake's status, so a REST request with the same token asks.
   */
  private async handshakeFailed(token: string, epoch: number): Promise<void> {
    const api = createWindiClient(this.opts.baseUrl, token, this.opts.fetch ? { fetch: this.opts.fetch } : {});
    let status = -1;
    try {
      const r =
        this.opts.chatId === undefined
          ? await api.GET("/users/me")
          : await api.GET("/chats/{chat_id}", { params: { path: { chat_id: this.opts.chatId } } });
      status = r.response.ok ? 0 : r.response.status;
    } catch {
      // the server is unreachable: back off
    }
    if (!this.current(epoch)) return;
    this.failed(status, new Error(`websocket handshake failed (status ${status})`));
  }

  private failed(status: number, err: Error): void {
    if (status === 401) {
      this.rejected++;
      if (this.rejected >= 2) return this.finish(new HandshakeError(401));
      this.expired = true;
      return this.retry(0, err);
    }
    if (status === 400 || status === 403 || status === 404) return this.finish(new HandshakeError(status));
    this.attempt++;
    this.retry(this.backoff(this.attempt), err);
  }

  private retry(ms: number, err: Error): void {
    if (this.paused) return this.setState("disconnected", err);
    this.setState("disconnected", err, ms);
    this.reconnectTimer = this.clock.setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.dial();
    }, ms);
  }

  private onOpen(): void {
    this.opened = true;
    this.expired = false;
    this.rejected = 0;
    this.upSince = this.clock.now();
    const now = this.upSince;
    this.lastRead = now;
    if (this.idleWatch) this.schedule(now + this.idleMs);
    this.inflight = 0;
    this.pauseUntil = 0;
    this.pauses = 0;
    for (const p of this.outbox) p.written = false;
    for (const [id, st] of this.chats) {
      st.syncDue = 0;
      st.gapCheck = 0;
      st.syncFails = 0;
      if (st.stream.hasPosition() && !st.inURL) this.writeSync(id, st, now); // more chats than the URL holds
    }
    this.pump();
    this.flushReads();
    this.flushChanges();
    this.setState("connected");
    if (!this.firstDone) {
      this.firstDone = true;
      this.firstResolve();
    }
  }

  private lost(code: number, reason: string): void {
    if (this.ended) return;
    if (this.clock.now() - this.upSince >= 5000) this.attempt = 0;
    const err = new CloseError(code, reason);
    if (code === CloseCode.TokenExpired) {
      this.expired = true;
      return this.retry(0, err);
    }
    if (code === CloseCode.GoingAway) return this.retry(Math.random() * 250, err);
    if (code === CloseCode.Revoked || code === CloseCode.Removed || code >= 4500) return this.finish(err);
    this.attempt++;
    this.retry(this.backoff(this.attempt), err);
  }

  private detach(): void {
    const ws = this.ws;
    this.ws = undefined;
    this.requeueChanges();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Not null: `ws` throws an error event nobody listens to (closing a
      // socket still connecting makes one).
      ws.onerror = () => {};
    }
    this.stopTimer();
  }

  /** idle drops a socket that read nothing for idleTimeoutMs: the link is dead, though no close says so. */
  private idle(): void {
    const ws = this.ws;
    this.detach();
    const t = ws as unknown as { terminate?: () => void } | undefined;
    if (typeof t?.terminate === "function") t.terminate(); // no closing handshake on a dead link
    else ws?.close(1000, "idle");
    this.lost(1006, `nothing read for ${this.idleMs} ms`);
  }

  private write(data: string): void {
    const ws = this.ws;
    if (!ws || !this.opened || ws.readyState !== OPEN) return;
    this.opts.trace?.(true, data);
    ws.send(data);
  }

  // --- sends ---

  private pump(): void {
    if (!this.ws || !this.opened || this.clock.now() < this.pauseUntil) return;
    let resolved = 0;
    for (const p of this.outbox) {
      if (p.resolved) {
        resolved++;
        continue;
      }
      if (p.written) continue;
      if (this.inflight >= this.maxInFlight) break;
      this.write(p.frame);
      p.written = true;
      this.inflight++;
    }
    if (resolved > this.outbox.length / 2) this.outbox = this.outbox.filter((p) => !p.resolved);
  }

  private flushReads(): void {
    if (!this.ws || !this.opened) return;
    for (const [chatId, seq] of this.reads) {
      this.write(JSON.stringify({ type: "message.read", chat_id: chatId, seq } satisfies Schemas["MessageReadFrame"]));
    }
    this.reads.clear();
  }

  private take(key: string): Outgoing | undefined {
    const p = this.pending.get(key);
    if (!p) return undefined;
    this.pending.delete(key);
    p.resolved = true;
    if (p.written) this.inflight--;
    return p;
  }

  // --- frames ---

  private onMessage(data: unknown): void {
    const text = typeof data === "string" ? data : String(data);
    this.lastRead = this.clock.now();
    this.opts.trace?.(false, text);
    let f: ServerFrame;
    try {
      f = JSON.parse(text) as ServerFrame;
    } catch {
      return; // not JSON: nothing the protocol sends
    }
    switch (f.type) {
      case "message.new":
        this.deliver(f.message, true);
        break;
      case "message.updated":
        this.settleChanges(f.message.chat_id, f.message.seq);
        this.deliver(f.message, false);
        break;
      case "message.ack": {
        const p = this.take(`${f.message.chat_id}:${f.client_msg_id}`);
        if (p) {
          this.pauses = 0;
          p.resolve(f);
        }
        // A duplicate's message was stored before (maybe before where the
        // chat starts): the stream brings it in its place, if at all.
        if (!f.duplicate) this.deliver(f.message, true);
        this.pump();
        break;
      }
      case "typing":
        if (this.opts.onTyping) this.opts.onTyping(f.chat_id, f.user_id);
        else this.opts.onFrame?.(f);
        break;
      case "error":
        if (f.chat_id != null && f.seq != null) this.settleChanges(f.chat_id, f.seq);
        if (!this.frameError(f)) {
          if (this.opts.onError) this.opts.onError(new FrameError(f));
          else this.opts.onFrame?.(f);
        }
        break;
      case "member.added": {
        const st = this.chats.get(f.chat_id);
        if (this.opts.chatId === undefined && (!st || (!st.stream.hasPosition() && st.fallback === undefined))) void this.fetchPosition(f.chat_id);
        this.opts.onFrame?.(f);
        break;
      }
      default:
        this.opts.onFrame?.(f);
    }
  }

  private deliver(m: Message, isNew: boolean): void {
    let st = this.chats.get(m.chat_id);
    if (!st) {
      st = newChat({ seq: 0, rev: 0 }, false); // joined meanwhile: starts with its first frame
      this.chats.set(m.chat_id, st);
    }
    for (const d of st.stream.offer(m, isNew)) {
      if (d.created) this.opts.onMessage?.(d.message);
      else this.opts.onUpdate?.(d.message);
    }
    if (!st.stream.waiting()) st.gapCheck = 0;
    else if (st.gapCheck === 0 && st.syncDue === 0) this.writeSync(m.chat_id, st, this.clock.now());
  }

  private frameError(e: ErrorFrame): boolean {
    const now = this.clock.now();
    if (e.client_msg_id !== undefined) {
      let key: string | undefined;
      if (e.chat_id !== undefined) key = `${e.chat_id}:${e.client_msg_id}`;
      else for (const [k, p] of this.pending) if (p.clientMsgId === e.client_msg_id) key = k;
      const p = key === undefined ? undefined : this.pending.get(key);
      if (!p || !key) return false;
      const err = new FrameError(e);
      if (err.temporary && p.attempts < this.sendRetries) {
        p.attempts++;
        if (p.written) {
          p.written = false;
          this.inflight--;
        }
        this.pauses++;
        this.pauseUntil = now + this.backoff(this.pauses);
        this.schedule(this.pauseUntil);
        return true;
      }
      this.take(key)?.reject(err);
      this.pump();
      return true;
    }
    if (e.chat_id === undefined || e.seq !== undefined) return false; // a refused change: the application's
    const st = this.chats.get(e.chat_id);
    if (!st) return false;
    if (e.code === "rate_limited") {
      if (st.gapCheck === 0) return false; // a read receipt's, not a sync's
      st.syncFails++;
      st.gapCheck = 0;
      st.syncDue = now + this.backoff(st.syncFails);
      this.schedule(st.syncDue);
      return true;
    }
    if (e.code === "forbidden" || e.code === "not_found") this.chats.delete(e.chat_id);
    return false;
  }

  /** writeSync asks for a replay from the chat's position: by rev, or by seq without one (or with resumeBySeq). */
  private writeSync(chatId: number, st: ChatState, now: number): void {
    const f: Schemas["SyncFrame"] = { type: "sync", chat_id: chatId };
    if (st.stream.rev > 0 && this.opts.resumeBySeq !== true) f.since_rev = st.stream.rev;
    else f.since_seq = st.stream.seq;
    this.write(JSON.stringify(f));
    st.syncDue = 0;
    st.gapCheck = now + this.gapTimeout;
    this.schedule(st.gapCheck);
  }

  private async fetchPosition(chatId: number): Promise<void> {
    try {
      const token = await this.tokenOf(false);
      const api = createWindiClient(this.opts.baseUrl, token, this.opts.fetch ? { fetch: this.opts.fetch } : {});
      const r = await api.GET("/chats/{chat_id}", { params: { path: { chat_id: chatId } } });
      if (!r.data) return;
      let st = this.chats.get(chatId);
      if (!st) {
        st = newChat({ seq: 0, rev: 0 }, false);
        this.chats.set(chatId, st);
      }
      if (!st.stream.hasPosition()) st.fallback = chatStart(r.data);
    } catch {
      // the chat then starts at the reconnect
    }
  }

  // --- timers ---

  private schedule(at: number): void {
    if (this.deadline !== 0 && at >= this.deadline) return;
    this.stopTimer();
    this.deadline = at;
    this.timer = this.clock.setTimeout(() => this.tick(), Math.max(0, at - this.clock.now()));
  }

  private stopTimer(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.deadline = 0;
  }

  private tick(): void {
    this.timer = undefined;
    this.deadline = 0;
    if (!this.ws || !this.opened) return;
    const now = this.clock.now();
    if (this.idleWatch) {
      if (now - this.lastRead >= this.idleMs) return this.idle();
      this.schedule(this.lastRead + this.idleMs);
    }
    if (this.pauseUntil !== 0) {
      if (now < this.pauseUntil) this.schedule(this.pauseUntil);
      else {
        this.pauseUntil = 0;
        this.pump();
      }
    }
    for (const [id, st] of this.chats) {
      if (st.syncDue !== 0 && now >= st.syncDue) this.writeSync(id, st, now);
      else if (st.syncDue !== 0) this.schedule(st.syncDue);
      else if (st.gapCheck !== 0 && now >= st.gapCheck) {
        if (st.stream.waiting()) this.writeSync(id, st, now);
        else st.gapCheck = 0;
      } else if (st.gapCheck !== 0) this.schedule(st.gapCheck);
    }
  }

  // --- the end ---

  private setState(s: ConnectionState, err?: Error, retryInMs?: number): void {
    if (s === this.stateNow && this.stateReported && retryInMs === undefined) return;
    this.stateNow = s;
    this.stateReported = true;
    this.opts.onState?.(s, err, retryInMs);
  }

  private finish(err: Error): void {
    if (this.ended) return;
    this.ended = err;
    this.detach();
    if (this.reconnectTimer !== undefined) this.clock.clearTimeout(this.reconnectTimer);
    const failed = err instanceof ClosedError ? err : new ClosedError(err);
    for (const p of this.pending.values()) {
      p.resolved = true;
      p.reject(failed);
    }
    this.pending.clear();
    this.setState("closed", err);
    if (!this.firstDone) {
      this.firstDone = true;
      this.firstReject(err);
    }
    this.opts.onClose?.(err);
    this.closedResolve(err);
  }
}

function newChat(p: Position, seqKnown: boolean): ChatState {
  return { stream: new ChatStream(p, seqKnown), inURL: false, syncDue: 0, gapCheck: 0, syncFails: 0 };
}

function entries<V>(v: Record<number, V> | Map<number, V> | undefined): [number, V][] {
  if (v instanceof Map) return [...v];
  return Object.entries(v ?? {}).map(([k, x]) => [Number(k), x as V]);
}

/**
 * chatStart is where a chat without a position starts: after its last
 * message, by that message's latest revision (a Chat has no revision of
 * its own, so changes to older messages after it are replayed, not missed).
 */
function chatStart(ch: Schemas["Chat"]): Position {
  return { seq: ch.last_seq ?? ch.last_message?.seq ?? 0, rev: ch.last_message?.rev ?? 0 };
}
