// ChatStream: one chat's ordering state machine, the same as the Go SDK's
// (client/order.go). No I/O, no clock: test/connection.unit.test.ts drives
// it with frames alone.
//
// The server sends a connection a chat's changes in rev order, exactly
// once, and fills its own gaps (SPEC §11.1), so revisions need no
// hold-back: a frame at or below the position is a repeat (a replay after
// a reconnect or a sync) and is dropped. Seq order needs one: when a
// replay collapses a message created while the application was away and
// changed afterwards into its latest state, that message comes at its
// latest rev, after messages created later. A message above the next seq
// therefore waits, with everything after it, until the missing one
// arrives; that one is then handed first, so onMessage sees 1, 2, 3… once.
// Whether a frame creates a message for the application is decided by its
// seq, not by the frame's type: a message above the last seq handed is new
// to the application even as message.updated, one at or below it an update
// even as message.new.
import type { components } from "./schema.js";

type Message = components["schemas"]["Message"];

/**
 * Where the application stands in one chat: the last seq handed to
 * onMessage, and the chat revision up to which every change has been
 * handed to it (onMessage or onUpdate). rev 0 means unknown: the chat
 * resumes by seq (new messages only).
 */
export interface Position {
  seq: number;
  rev: number;
}

/** One message handed to the application: created (onMessage) or changed (onUpdate). */
export interface Delivery {
  message: Message;
  created: boolean;
}

interface Queued {
  m: Message;
  isNew: boolean;
  handed: boolean;
}

export class ChatStream {
  /** seq is a real position (else the first new message sets it). */
  seqKnown: boolean;
  seq: number;
  /** The resume position: every frame up to it, in the order sent, has been handed out. */
  rev: number;
  private queue: Queued[] = [];
  /** Revs above rev handed early whose queue a reconnect dropped. */
  private early = new Set<number>();

  constructor(p: Position, seqKnown: boolean) {
    this.seqKnown = seqKnown;
    this.seq = p.seq;
    this.rev = p.rev;
  }

  hasPosition(): boolean {
    return this.seqKnown || this.rev > 0;
  }

  position(): Position {
    return { seq: this.seq, rev: this.rev };
  }

  /** Frames wait for a missing seq. */
  waiting(): boolean {
    return this.queue.length > 0;
  }

  /** offer takes one frame's message (isNew: message.new or an ack) and returns what the application gets now, in order. */
  offer(m: Message, isNew: boolean): Delivery[] {
    if (m.rev <= this.rev || this.early.has(m.rev)) return []; // handed already
    const last = this.queue.at(-1);
    // One socket's frames come in rev order: a lower one is a sync's replay of what waits.
    if (last && m.rev <= last.m.rev) return [];
    this.queue.push({ m, isNew, handed: false });
    return this.drain();
  }

  /** reconnected forgets what waits (the new socket replays it), remembering what was handed early. */
  reconnected(): void {
    for (const e of this.queue) if (e.handed) this.early.add(e.m.rev);
    this.queue = [];
  }

  private creates(e: Queued): boolean {
    return this.seqKnown ? e.m.seq > this.seq : e.isNew;
  }

  private drain(): Delivery[] {
    const out: Delivery[] = [];
    for (;;) {
      while (this.queue.length > 0) {
        const e = this.queue[0]!;
        if (!e.handed) {
          if (this.seqKnown && e.m.seq > this.seq + 1) break; // the next seq has not come
          out.push(this.hand(e));
        }
        this.rev = e.m.rev;
        this.queue.shift();
      }
      if (this.queue.length === 0) break;
      // The head waits for seq+1: hand it first if it is further back.
      const next = this.queue.find((e) => !e.handed && e.m.seq === this.seq + 1 && this.creates(e));
      if (!next) break;
      out.push(this.hand(next));
      next.handed = true;
    }
    for (const r of this.early) if (r <= this.rev) this.early.delete(r);
    return out;
  }

  private hand(e: Queued): Delivery {
    if (!this.creates(e)) return { message: e.m, created: false };
    this.seqKnown = true;
    this.seq = e.m.seq;
    return { message: e.m, created: true };
  }
}
