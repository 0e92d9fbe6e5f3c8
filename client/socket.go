package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/windi-chat/windi/client/rest"
)

// MaxFrameBytes is the largest frame the server accepts (SPEC §5); a
// larger one closes the connection with 1009, so Socket refuses to write
// one.
const MaxFrameBytes = 64 << 10

// ErrFrameTooLarge is returned for a frame over MaxFrameBytes.
var ErrFrameTooLarge = errors.New("client: frame over 64 KiB")

// ErrBinaryFrame is returned by Read and ReadRaw for a binary frame, which
// the server never sends; the connection stays usable.
var ErrBinaryFrame = errors.New("client: binary frame from the server")

// Frame is one server frame. Value holds the generated type its Type
// selects, by value: rest.MessageNewFrame, rest.MessageAckFrame,
// rest.MessageUpdatedFrame, rest.MessageReadEventFrame,
// rest.ChatReadFrame, rest.PresenceFrame, rest.TypingEventFrame,
// rest.MemberAddedFrame, rest.MemberRemovedFrame or rest.ErrorFrame; nil
// for a type this version of the SDK does not know (Raw still has it).
type Frame struct {
	Type  string
	Value any
	// Raw is the frame as received.
	Raw []byte
}

// DecodeFrame decodes one server frame. A frame of an unknown type is not
// an error (Value is nil); malformed JSON, a missing type or a known type
// with the wrong shape is.
func DecodeFrame(data []byte) (Frame, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return Frame{Raw: data}, fmt.Errorf("client: decode frame: %w", err)
	}
	if head.Type == "" {
		return Frame{Raw: data}, fmt.Errorf("client: frame has no type: %.100s", data)
	}
	f := Frame{Type: head.Type, Raw: data}
	var err error
	switch head.Type {
	case string(rest.MessageNew):
		f.Value, err = decodeAs[rest.MessageNewFrame](data)
	case string(rest.MessageAck):
		f.Value, err = decodeAs[rest.MessageAckFrame](data)
	case string(rest.MessageReadEventFrameTypeMessageRead):
		f.Value, err = decodeAs[rest.MessageReadEventFrame](data)
	case string(rest.ChatRead):
		f.Value, err = decodeAs[rest.ChatReadFrame](data)
	case string(rest.Presence):
		f.Value, err = decodeAs[rest.PresenceFrame](data)
	case string(rest.MemberAdded):
		f.Value, err = decodeAs[rest.MemberAddedFrame](data)
	case string(rest.MemberRemoved):
		f.Value, err = decodeAs[rest.MemberRemovedFrame](data)
	case string(rest.ErrorFrameTypeError):
		f.Value, err = decodeAs[rest.ErrorFrame](data)
	case string(rest.MessageUpdated):
		f.Value, err = decodeAs[rest.MessageUpdatedFrame](data)
	case string(rest.TypingEventFrameTypeTyping):
		f.Value, err = decodeAs[rest.TypingEventFrame](data)
	}
	if err != nil {
		return Frame{Type: head.Type, Raw: data}, fmt.Errorf("client: decode %s frame: %w", head.Type, err)
	}
	return f, nil
}

func decodeAs[T any](data []byte) (T, error) {
	var v T
	err := json.Unmarshal(data, &v)
	return v, err
}

// FrameError is an error frame the server answered, as an error.
type FrameError struct{ rest.ErrorFrame }

func (e *FrameError) Error() string {
	if e.Seq != nil && e.ChatID != nil {
		return fmt.Sprintf("windi: %s: %s (chat %d, seq %d)", e.Code, e.Message, *e.ChatID, *e.Seq)
	}
	return fmt.Sprintf("windi: %s: %s", e.Code, e.Message)
}

// Temporary reports whether the same frame may succeed later: the server
// stored nothing (unavailable) or asked to slow down (rate_limited).
func (e *FrameError) Temporary() bool {
	return e.Code == rest.ErrorFrameCodeUnavailable || e.Code == rest.ErrorFrameCodeRateLimited
}

// HandshakeError is a WebSocket handshake the server refused with an HTTP
// status (401 bad token, 403 not a member, 404 no such chat, 429 too many
// connections, 503 not ready).
type HandshakeError struct {
	Status int
	// Problem is the problem document, when the body held one.
	Problem *rest.Problem
	Err     error
}

func (e *HandshakeError) Error() string {
	if e.Problem != nil {
		return fmt.Sprintf("windi: websocket handshake: %d %s: %s", e.Status, e.Problem.Code, e.Problem.Title)
	}
	return fmt.Sprintf("windi: websocket handshake: status %d: %v", e.Status, e.Err)
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// CloseStatus returns the close code the peer sent, if err ended a
// connection with a close frame; -1 otherwise (1006: closed without one).
func CloseStatus(err error) int { return int(websocket.CloseStatus(err)) }

// SocketOptions configures DialSocket.
type SocketOptions struct {
	// HTTPClient sends the handshake; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Header is added to the handshake request (e.g. Authorization).
	Header http.Header
	// ReadLimit is the largest frame read; 0 means 1 MiB.
	ReadLimit int64
	// Oversize lets Write and WriteRaw send frames over MaxFrameBytes:
	// for tests of the server's own limit (it closes the connection with
	// 1009).
	Oversize bool
	// Trace, when set, sees every frame read (out false) and written (out
	// true), as bytes; tests check them against the spec with it.
	Trace func(out bool, data []byte)
}

// Socket is one WebSocket connection to /ws or /ws/{chat_id}, with frames
// typed from the spec and nothing more: no reconnect, no resume (Conn adds
// those). Read and ReadRaw must be called from one goroutine at a time;
// Write and WriteRaw may be called concurrently with them and with
// themselves.
type Socket struct {
	ws       *websocket.Conn
	trace    func(out bool, data []byte)
	oversize bool         // frames over MaxFrameBytes may be written
	heard    atomic.Int64 // Unix nanoseconds of the last frame or ping read
}

// DialSocket opens a WebSocket to url (ws:// or wss://). A handshake the
// server refused with a status is a *HandshakeError; the response is
// returned too when there was one.
func DialSocket(ctx context.Context, url string, opts SocketOptions) (*Socket, *http.Response, error) {
	s := &Socket{trace: opts.Trace, oversize: opts.Oversize}
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient: opts.HTTPClient,
		HTTPHeader: opts.Header,
		OnPingReceived: func(context.Context, []byte) bool {
			s.heard.Store(time.Now().UnixNano())
			return true
		},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			he := &HandshakeError{Status: resp.StatusCode, Err: err}
			if resp.Body != nil {
				body, _ := io.ReadAll(resp.Body)
				var p rest.Problem
				if json.Unmarshal(body, &p) == nil && p.Code != "" {
					he.Problem = &p
				}
			}
			return nil, resp, he
		}
		return nil, resp, err
	}
	limit := opts.ReadLimit
	if limit <= 0 {
		limit = 1 << 20
	}
	ws.SetReadLimit(limit)
	s.ws = ws
	s.heard.Store(time.Now().UnixNano())
	return s, resp, nil
}

// Read returns the next server frame. A frame that does not decode is
// returned with the error (its Raw set); the connection stays usable. When
// the connection ends, the error carries the close code (CloseStatus).
// Canceling ctx closes the connection (coder/websocket does so).
func (s *Socket) Read(ctx context.Context) (Frame, error) {
	typ, data, err := s.ws.Read(ctx)
	if err != nil {
		return Frame{}, err
	}
	s.heard.Store(time.Now().UnixNano())
	if s.trace != nil {
		s.trace(false, data)
	}
	if typ != websocket.MessageText {
		return Frame{Raw: data}, ErrBinaryFrame
	}
	return DecodeFrame(data)
}

// ReadRaw reads the next server frame undecoded: it appends the frame's
// bytes to buf[:0], reusing buf's capacity, and returns the result, which
// the next call with the same buffer overwrites. It is Read without
// DecodeFrame, for programs that parse only the few fields they need at a
// rate where decoding every frame into the generated types (and
// allocating it) would cost more than the rest of their work, such as the
// load tool cmd/windi-load. A frame read this way counts for LastHeard and
// is traced like one from Read. A binary frame is returned with
// ErrBinaryFrame; the connection stays usable. When the connection ends,
// the error carries the close code (CloseStatus). Like Read, it must be
// called from one goroutine at a time, and canceling ctx closes the
// connection.
func (s *Socket) ReadRaw(ctx context.Context, buf []byte) ([]byte, error) {
	typ, r, err := s.ws.Reader(ctx)
	if err != nil {
		return buf[:0], err
	}
	buf, err = readAll(r, buf[:0])
	if err != nil {
		return buf, err
	}
	s.heard.Store(time.Now().UnixNano())
	if s.trace != nil {
		s.trace(false, bytes.Clone(buf))
	}
	if typ != websocket.MessageText {
		return buf, ErrBinaryFrame
	}
	return buf, nil
}

// readAll appends everything r has to buf, like io.ReadAll but into the
// caller's buffer.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// Write sends v (a client frame such as rest.MessageSendFrame) as JSON.
func (s *Socket) Write(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("client: encode frame: %w", err)
	}
	return s.WriteRaw(ctx, b)
}

// WriteRaw sends data as one text frame, unchecked (for tests of malformed
// frames), except that a frame over MaxFrameBytes is refused unless
// SocketOptions.Oversize allows it.
func (s *Socket) WriteRaw(ctx context.Context, data []byte) error {
	if len(data) > MaxFrameBytes && !s.oversize {
		return ErrFrameTooLarge
	}
	if s.trace != nil {
		s.trace(true, bytes.Clone(data))
	}
	return s.ws.Write(ctx, websocket.MessageText, data)
}

// LastHeard returns when the socket last read a frame or a ping.
func (s *Socket) LastHeard() time.Time { return time.Unix(0, s.heard.Load()) }

// Close sends a close frame with code and reason and waits (up to 5 s,
// coder/websocket's limit) for the server's.
func (s *Socket) Close(code int, reason string) error {
	return s.ws.Close(websocket.StatusCode(code), reason)
}

// CloseNow drops the connection without a close handshake.
func (s *Socket) CloseNow() error { return s.ws.CloseNow() }
