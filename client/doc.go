// Package client is the Go SDK of WinDI Chat: a REST client generated from
// api/openapi.yaml (package rest, wrapped here with a bearer token) and a
// WebSocket connection that reconnects and resumes by itself.
//
// A program logs in with a Client, then dials a Conn:
//
//	c, err := client.New("http://localhost:8000")
//	if err != nil { … }
//	if _, err := c.Login(ctx, "alice@example.com", "correct horse"); err != nil { … }
//	conn, err := c.Dial(ctx, client.Config{
//		OnMessage: func(m rest.Message) { fmt.Println(m.ChatID, m.Seq, m.Text) },
//	})
//	if err != nil { … }
//	defer conn.Close()
//	p, err := conn.Send(chatID, "hello")
//	if err != nil { … }
//	ack, err := p.Wait(ctx) // the stored message, or the server's error frame
//
// # What a Conn guarantees
//
// OnMessage sees every message of every chat the Conn follows exactly once
// and in seq order, the application's own messages included, and OnUpdate
// every later change of a message (edit, delete, reaction) once, in the
// order made, across reconnects and the loss of a replica. The Conn keeps
// each chat's position (Position: the last seq delivered and the chat
// revision up to which everything was delivered), resumes by revision
// after a reconnect (since_rev on /ws/{chat_id}, the since_rev= list on
// /ws), so changes made while it was away arrive too, collapsed into each
// message's latest state, and drops repeats. The server sends changes in
// revision order and fills its own gaps; a replay that collapses a
// message created while away and changed afterwards brings it after
// messages created later, so the Conn holds a message above a missing
// seq back until the missing one has come. Before its first connection it
// learns the position of every chat it has none for (from Config.Resume
// or Config.Since) from GET /chats, so nothing committed after Dial was
// called is missed. A chat joined while connected starts where the server
// starts it (at the join); a chat joined while disconnected starts at the
// reconnect. Config.ResumeBySeq resumes by seq instead (new messages
// only), as before revisions.
//
// Edit, Delete, React, Unreact and Typing write the frames of SPEC §11;
// their outcome is message.updated to every connection (OnUpdate), or an
// error frame naming chat and seq (OnError). They survive reconnects too:
// one written on a connection that ended before the server answered about
// its message (a replica shutting down, a dead link) is written again on
// the next, since each is idempotent. OnTyping sees other members typing.
//
// Sends are queued and survive reconnects: each keeps its client_msg_id,
// so a send written again after a reconnect is stored once (the server
// answers the repeat with the original message, duplicate:true). A Pending
// resolves with the message.ack, or with the error frame the server
// answered (a *FrameError); rate_limited and unavailable answers are
// retried with backoff first.
//
// The Conn reconnects with jittered exponential backoff after a dropped
// connection, 1001 (the replica shuts down: at once), 4008 (too slow) and
// any other code below 4500 except 4403. It stops for good on 4401 (the
// session was revoked), 4403 (removed from the chat of a per-chat Conn),
// other codes from 4500 on, and on 4501 (token expired) or a 401 at the
// handshake unless the Client gets a new token: by refreshing its session
// or from its TokenFunc. Reconnect drops the connection and opens a new
// one at once (or cuts short the wait before the next attempt), resuming
// as after any loss: to move to another server behind a load balancer, or
// when the device has changed networks. Config.OnConnect sees the answer
// to each handshake; WinDI Chat's X-Windi-Replica header in it names the
// replica that took the connection.
//
// Config.Trace sees the raw frames, on the Conn's goroutine in order with
// the callbacks: every frame the Conn reads (repeats it drops included)
// and writes. Tests check them against the spec, and count from them what
// the server sent, which the Conn's guarantees hide.
//
// # Sessions and refresh
//
// Login starts a session and keeps its access token (short-lived,
// JWT_TTL) and refresh token. When the server rejects the access token (a
// REST 401, a 401 at the WebSocket handshake, close code 4501) the Client
// refreshes (POST /token/refresh) and the request is sent once more, the
// Conn reconnects: one refresh is in flight at a time, and every request
// that failed with the same token waits for it and uses its result. The
// refresh token changes with every refresh (WithOnTokens reports the new
// one, RefreshToken returns it; WithRefreshToken resumes a session after a
// restart). A refused refresh (ErrSessionEnded) and close code 4401 mean
// the session was revoked or expired: log in again.
package client
