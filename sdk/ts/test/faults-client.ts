// The TypeScript side of the fault test TestClientsResumeAcrossReplicaKill
// (faults/resume_test.go): WindiConnection clients that send at a steady
// rate while a replica is killed, and report on stdout, one JSON object a
// line, what each application sent, what was acked and every message it
// saw. Not a node test: the Go test runs it with node against the proxy
// (WINDI_URL) with the clients in WINDI_FAULTS_CLIENTS (JSON, see Config)
// and drives it with lines on stdin:
//
//	start          every client sends one message every intervalMs
//	burst N        every client sends N messages at once
//	stop           stop sending; keep receiving
//	close          close every connection, report "done" and exit
//
// The Go side checks everything; this script only records. Each client is
// placed on the replica it names (target): it reconnects through the proxy
// until the handshake's X-Windi-Replica is that one, so the killed replica
// holds TS clients whatever the round robin did.
import { createInterface } from "node:readline";

import WebSocket from "ws";

import { WindiConnection, type ConnectionState, type WebSocketConstructor } from "../src/index.js";

interface ClientSpec {
  name: string;
  token: string;
  /** Follow this chat only (/ws/{chat_id}); every chat (/ws) when absent. */
  chatId?: number;
  /** The X-Windi-Replica to connect to before the load starts. */
  target?: string;
}

interface Config {
  /** The chat every client sends to. */
  chatId: number;
  /** Prefix of every client_msg_id. */
  run: string;
  intervalMs: number;
  clients: ClientSpec[];
}

const BASE = process.env.WINDI_URL ?? "";
const CONFIG = process.env.WINDI_FAULTS_CLIENTS ?? "";
if (!BASE || !CONFIG) throw new Error("WINDI_URL and WINDI_FAULTS_CLIENTS must be set (faults/resume_test.go sets them)");
const cfg = JSON.parse(CONFIG) as Config;

/** emit writes one event line (writes to a pipe are synchronous in Node on Linux). */
function emit(ev: string, fields: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ ev, at: Date.now(), ...fields }) + "\n");
}

function errText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** A `ws` WebSocket that reports the replica named by each handshake's answer. */
function recordingWebSocket(onUpgrade: (replica: string) => void): WebSocketConstructor {
  class Recording extends WebSocket {
    constructor(url: string) {
      super(url);
      this.on("upgrade", (res) => onUpgrade(String(res.headers["x-windi-replica"] ?? "")));
    }
  }
  return Recording as unknown as WebSocketConstructor;
}

class Client {
  conn: WindiConnection | undefined;
  private sends = 0;
  private timer: ReturnType<typeof setInterval> | undefined;
  private placed = false;
  private replica = "";

  constructor(
    readonly spec: ClientSpec,
    readonly idx: number,
  ) {}

  /** place connects until the connection lands on spec.target (40 tries at most). */
  async place(): Promise<void> {
    for (let attempt = 1; attempt <= 40; attempt++) {
      let discarded = false;
      const conn = await WindiConnection.connect({
        baseUrl: BASE,
        token: this.spec.token,
        ...(this.spec.chatId !== undefined ? { chatId: this.spec.chatId } : {}),
        WebSocket: recordingWebSocket((r) => {
          this.replica = r;
          if (this.placed) emit("upgrade", { client: this.spec.name, replica: r });
        }),
        onMessage: (m) => {
          if (discarded) return;
          emit("message", { client: this.spec.name, chat: m.chat_id, seq: m.seq, cmid: m.client_msg_id, sender: m.sender_id, text: m.text });
        },
        onState: (s: ConnectionState, err?: Error) => {
          if (this.placed && !discarded) emit("state", { client: this.spec.name, state: s, replica: this.replica, error: err ? errText(err) : "" });
        },
        onClose: (err) => {
          if (!discarded) emit("closed", { client: this.spec.name, error: errText(err) });
        },
      });
      if (!this.spec.target || this.replica === this.spec.target) {
        this.conn = conn;
        this.placed = true;
        emit("ready", { client: this.spec.name, replica: this.replica, attempts: attempt });
        return;
      }
      discarded = true;
      await conn.close();
      // The round robin's next pick is the other replica: a plain request
      // moves it on, so the next handshake does not meet the same one.
      await fetch(new URL("/readyz", BASE)).then((r) => r.arrayBuffer()).catch(() => undefined);
    }
    throw new Error(`${this.spec.name}: no connection landed on ${this.spec.target} in 40 tries`);
  }

  start(): void {
    // Spread the clients over the interval, as the Go senders are.
    const offset = (this.idx * cfg.intervalMs) / Math.max(1, cfg.clients.length);
    setTimeout(() => {
      if (this.timer === undefined && !stopped) this.timer = setInterval(() => this.sendOne(), cfg.intervalMs);
    }, offset);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private sendOne(): void {
    if (stopped) return;
    this.sends++;
    this.send(`${cfg.run}-${this.spec.name}-${this.sends}`);
  }

  burst(n: number): void {
    for (let i = 1; i <= n; i++) this.send(`${cfg.run}-${this.spec.name}-burst-${i}`);
  }

  private send(cmid: string): void {
    const conn = this.conn;
    if (!conn) return;
    const text = `message ${cmid} of ${this.spec.name}`;
    emit("sent", { client: this.spec.name, cmid, text });
    try {
      conn.sendWithId(cfg.chatId, cmid, text).ack.then(
        (a) => emit("acked", { client: this.spec.name, cmid, chat: a.message.chat_id, seq: a.message.seq, id: a.message.id, duplicate: a.duplicate }),
        (e: unknown) => emit("failed", { client: this.spec.name, cmid, error: errText(e) }),
      );
    } catch (e) {
      emit("failed", { client: this.spec.name, cmid, error: errText(e) });
    }
  }
}

let stopped = false;
const clients = cfg.clients.map((s, i) => new Client(s, i));

async function main(): Promise<void> {
  for (const c of clients) await c.place();
  emit("placed", { clients: clients.length });
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    const [cmd, ...args] = line.trim().split(/\s+/);
    switch (cmd) {
      case "burst":
        for (const c of clients) c.burst(Number(args[0]));
        break;
      case "start":
        for (const c of clients) c.start();
        break;
      case "stop":
        stopped = true;
        for (const c of clients) c.stop();
        break;
      case "close":
        stopped = true;
        rl.close();
        void (async () => {
          for (const c of clients) c.stop();
          await Promise.all(clients.map((c) => c.conn?.close()));
          emit("done", {});
          process.exit(0);
        })();
        break;
    }
  });
  rl.on("close", () => {
    if (!stopped) process.exit(3); // stdin gone: the Go test ended
  });
}

main().catch((e: unknown) => {
  emit("fatal", { error: errText(e) });
  process.exit(2);
});
