// Package event is what WinDI replicas tell each other through the broker:
// the channel names, and the envelopes published on them. Package chat
// publishes envelopes after it commits; package realtime receives them and
// fans their frames out to the sockets of its replica.
//
// An envelope names one chat (or one user) and carries frames already
// encoded as the client will see them, so that a replica encodes a message
// once however many sockets receive it.
package event

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// ChatChannel is the channel of one chat's events.
func ChatChannel(chatID int64) string { return "chat:" + strconv.FormatInt(chatID, 10) }

// UserChannel is the channel of one user's own events: joins, and removals
// (which also go to the chat's channel).
func UserChannel(userID int64) string { return "user:" + strconv.FormatInt(userID, 10) }

// SessionsChannel is the channel every replica follows from start-up to
// shutdown: session revocations, which each replica's revocation cache and
// WebSockets must learn of at once.
const SessionsChannel = "sessions"

// ParseChannel returns the kind ("chat" or "user") and id of a channel name.
func ParseChannel(channel string) (kind string, id int64, ok bool) {
	kind, rest, found := strings.Cut(channel, ":")
	if !found {
		return "", 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	return kind, id, err == nil && (kind == "chat" || kind == "user")
}

// Kind says what an envelope carries.
type Kind string

// The envelope kinds.
const (
	// Messages: changes to one chat's timeline (new and changed messages),
	// in rev order, then Frames (the chat.read a send caused, if any).
	Messages Kind = "msgs"
	// Forward: frames for every socket following the chat (read receipts,
	// presence, member.added, typing), except those of UserID when it is
	// set (the typist; the added member, who hears it through Join).
	Forward Kind = "fwd"
	// Removed: UserID left or was removed from the chat; Frames holds the
	// member.removed frame. Published on the chat's channel and on the
	// removed user's channel.
	Removed Kind = "removed"
	// Join: UserID was added to the chat (published on the user's channel);
	// its all-chats sockets start following the chat.
	Join Kind = "join"
	// Revoked: the Sessions of UserID were revoked (published on
	// SessionsChannel); every replica adds them to its revocation cache and
	// closes their WebSockets with 4401.
	Revoked Kind = "revoked"
)

// Item is one change of a Messages envelope: a new message, or a changed
// one (edit, delete, reaction), at revision Rev; CreatedRev is the
// revision that created the message (equal to Rev for a new one).
type Item struct {
	Rev        int64           `json:"r"`
	CreatedRev int64           `json:"cr"`
	Seq        int64           `json:"s"`
	Sender     int64           `json:"u"`
	CMID       string          `json:"cm"`
	Msg        json.RawMessage `json:"m"` // the encoded gen.Message
}

// Envelope is one publication.
type Envelope struct {
	Kind   Kind              `json:"k"`
	ChatID int64             `json:"c"`
	UserID int64             `json:"u,omitempty"`
	Items  []Item            `json:"i,omitempty"`
	Frames []json.RawMessage `json:"f,omitempty"`
	// Sessions are the revoked session ids of a Revoked envelope.
	Sessions []int64 `json:"s,omitempty"`
	// SentAt is when the batch was committed, in Unix nanoseconds, for the
	// delivery latency metric.
	SentAt int64 `json:"t,omitempty"`
}

// Encode returns the envelope's wire form.
func (e Envelope) Encode() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		// Only this package's own types get here, with raw frames that were
		// encoded by json.Marshal.
		panic(fmt.Sprintf("event: encode envelope: %v", err))
	}
	return b
}

// Decode parses an envelope.
func Decode(payload []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(payload, &e); err != nil {
		return Envelope{}, fmt.Errorf("event: decode envelope: %w", err)
	}
	return e, nil
}

// NewFrame returns the message.new frame around an encoded message. It is
// spliced rather than marshalled: the message is already JSON.
func NewFrame(msg json.RawMessage) []byte {
	const head, tail = `{"type":"message.new","message":`, `}`
	b := make([]byte, 0, len(head)+len(msg)+len(tail))
	b = append(b, head...)
	b = append(b, msg...)
	return append(b, tail...)
}

// UpdatedFrame returns the message.updated frame around an encoded message.
func UpdatedFrame(msg json.RawMessage) []byte {
	const head, tail = `{"type":"message.updated","message":`, `}`
	b := make([]byte, 0, len(head)+len(msg)+len(tail))
	b = append(b, head...)
	b = append(b, msg...)
	return append(b, tail...)
}

// AckFrame returns the message.ack frame around an encoded message.
func AckFrame(clientMsgID string, duplicate bool, msg json.RawMessage) []byte {
	cmid, _ := json.Marshal(clientMsgID)
	b := make([]byte, 0, 64+len(cmid)+len(msg))
	b = append(b, `{"type":"message.ack","client_msg_id":`...)
	b = append(b, cmid...)
	b = append(b, `,"duplicate":`...)
	b = strconv.AppendBool(b, duplicate)
	b = append(b, `,"message":`...)
	b = append(b, msg...)
	return append(b, '}')
}
