package client_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/windi-chat/windi/client"
)

// TestSocketReadRaw: ReadRaw returns each frame's bytes undecoded in the
// caller's buffer (reused when it is big enough, grown when not), counts
// them for LastHeard, traces copies that later reads do not overwrite,
// survives a binary frame, and reports the close code at the end.
func TestSocketReadRaw(t *testing.T) {
	f := newFakeServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mu sync.Mutex
	var traced [][]byte
	sock, _, err := f.client(t).DialSocket(ctx, "/ws", client.SocketOptions{Trace: func(out bool, data []byte) {
		if !out {
			mu.Lock()
			traced = append(traced, data)
			mu.Unlock()
		}
	}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer func() { _ = sock.CloseNow() }()
	fc := <-f.conns

	small := `{"type":"presence","chat_id":1,"user_id":2,"online":true}`
	big := `{"type":"message.new","message":{"text":"` + strings.Repeat("x", 10_000) + `"}}`
	odd := `not even JSON: ReadRaw does not decode`
	send := func(typ websocket.MessageType, data string) {
		t.Helper()
		if err := fc.ws.Write(ctx, typ, []byte(data)); err != nil {
			t.Fatalf("server write: %v", err)
		}
	}
	read := func(buf []byte) ([]byte, error) {
		t.Helper()
		before := time.Now()
		got, err := sock.ReadRaw(ctx, buf)
		if err == nil && sock.LastHeard().Before(before) {
			t.Errorf("LastHeard %v, want at or after the read that began at %v", sock.LastHeard(), before)
		}
		return got, err
	}

	buf := make([]byte, 0, 4096)
	send(websocket.MessageText, small)
	got, err := read(buf)
	if err != nil || string(got) != small {
		t.Fatalf("got %q, %v, want %q, nil", got, err, small)
	}
	if &got[:1][0] != &buf[:1][0] {
		t.Error("got a new array, want the frame in the caller's buffer (it had room)")
	}

	send(websocket.MessageText, big)
	if got, err = read(got); err != nil || string(got) != big {
		t.Fatalf("got %d bytes, %v, want the %d-byte frame, nil", len(got), err, len(big))
	}

	send(websocket.MessageBinary, "\x00\x01")
	if got, err = read(got); !errors.Is(err, client.ErrBinaryFrame) || string(got) != "\x00\x01" {
		t.Fatalf("got %q, %v, want the binary frame's bytes and ErrBinaryFrame", got, err)
	}
	send(websocket.MessageText, odd)
	if got, err = read(got); err != nil || string(got) != odd {
		t.Fatalf("after a binary frame: got %q, %v, want %q, nil", got, err, odd)
	}

	mu.Lock()
	want := []string{small, big, "\x00\x01", odd}
	if len(traced) != len(want) {
		t.Errorf("traced %d frames, want %d", len(traced), len(want))
	}
	for i := range min(len(traced), len(want)) {
		if !bytes.Equal(traced[i], []byte(want[i])) {
			t.Errorf("traced frame %d is %.40q…, want %.40q…: a read overwrote a traced frame", i, traced[i], want[i])
		}
	}
	mu.Unlock()

	go func() { _ = fc.ws.Close(4001, "bye") }()
	if _, err = read(got); client.CloseStatus(err) != 4001 {
		t.Errorf("at the close got %v (code %d), want code 4001", err, client.CloseStatus(err))
	}
}

// TestSocketOversize: a frame over MaxFrameBytes is refused unless the
// socket was opened with Oversize; then it goes on the wire, and the
// server's own limit (the fake's is coder/websocket's 32 KiB) closes the
// connection with 1009.
func TestSocketOversize(t *testing.T) {
	f := newFakeServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	huge := bytes.Repeat([]byte("x"), client.MaxFrameBytes+1)

	sock, _, err := f.client(t).DialSocket(ctx, "/ws", client.SocketOptions{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	<-f.conns
	if err := sock.WriteRaw(ctx, huge); !errors.Is(err, client.ErrFrameTooLarge) {
		t.Errorf("WriteRaw without Oversize: got %v, want ErrFrameTooLarge", err)
	}
	if err := sock.Write(ctx, string(huge)); !errors.Is(err, client.ErrFrameTooLarge) {
		t.Errorf("Write without Oversize: got %v, want ErrFrameTooLarge", err)
	}
	_ = sock.CloseNow()

	sock, _, err = f.client(t).DialSocket(ctx, "/ws", client.SocketOptions{Oversize: true})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer func() { _ = sock.CloseNow() }()
	<-f.conns
	// The server may stop reading mid-frame, so the write may fail; it
	// must not be refused.
	if err := sock.WriteRaw(ctx, huge); errors.Is(err, client.ErrFrameTooLarge) {
		t.Fatalf("WriteRaw with Oversize: got %v, want the frame sent", err)
	}
	if _, err := sock.ReadRaw(ctx, nil); client.CloseStatus(err) != 1009 {
		t.Errorf("after the oversize frame: got %v (code %d), want the server's 1009", err, client.CloseStatus(err))
	}
}
