// Fakes for the unit tests: a clock that moves when the test says so and a
// WebSocket the test opens, closes and feeds by hand.
import type { Clock, WebSocketLike } from "../src/index.js";

/** A clock whose time moves when the test says so. */
export class FakeClock implements Clock {
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
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
}

export class FakeSocket implements WebSocketLike {
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

/** A FakeSocket that shows pings the way `ws` does (an EventEmitter's "ping"), and can be terminated. */
export class PingSocket extends FakeSocket {
  private pingers: (() => void)[] = [];
  terminated = false;
  on(event: string, fn: () => void): this {
    if (event === "ping") this.pingers.push(fn);
    return this;
  }
  ping(): void {
    for (const fn of this.pingers) fn();
  }
  terminate(): void {
    this.terminated = true;
    this.readyState = 3;
  }
}
