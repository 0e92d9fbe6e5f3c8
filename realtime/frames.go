package realtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/gen"
)

// Close codes beyond RFC 6455's. 4000–4499 tell the client it may reconnect
// and resync; 4500–4999 that it must not without new credentials.
const (
	CloseSlowConsumer = 4008 // the connection's queue filled; reconnect with since_seq
	CloseRemoved      = 4403 // removed from the chat of a per-chat connection
	CloseTokenExpired = 4501 // the token expired; refresh it and reconnect
	CloseRevoked      = 4401 // the session was revoked; log in again
)

// clientFrame is any frame a client sends. Pointers tell a missing field
// from a zero one; the typed frames from gen are built from it once the
// required fields are known to be there.
type clientFrame struct {
	Type        string  `json:"type"`
	ChatID      *int64  `json:"chat_id"`
	ClientMsgID *string `json:"client_msg_id"`
	Text        *string `json:"text"`
	Seq         *int64  `json:"seq"`
	SinceSeq    *int64  `json:"since_seq"`
	SinceRev    *int64  `json:"since_rev"`
	ReplyToSeq  *int64  `json:"reply_to_seq"`
	Emoji       *string `json:"emoji"`
}

// frameError is a problem with a client frame, answered with an error frame.
type frameError struct {
	code        gen.ErrorFrameCode
	msg         string
	clientMsgID string
	chatID      int64
	seq         int64 // the message an edit, delete or reaction was about
}

func (e *frameError) Error() string { return string(e.code) + ": " + e.msg }

func badRequest(format string, args ...any) *frameError {
	return &frameError{code: gen.ErrorFrameCodeBadRequest, msg: fmt.Sprintf(format, args...)}
}

// decodeFrame parses one client frame and checks the fields its type
// requires. defaultChat is the chat of a per-chat connection, 0 on /ws.
func decodeFrame(data []byte, defaultChat int64) (any, *frameError) {
	var f clientFrame
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		return nil, badRequest("malformed JSON frame")
	}
	if dec.More() {
		return nil, badRequest("one JSON object per frame")
	}
	chatID := defaultChat
	if chatID < 0 {
		chatID = 0 // not a chat id (callers pass 0 or a positive id); never accept a frame for it
	}
	if f.ChatID != nil {
		if *f.ChatID < 1 {
			return nil, badRequest("chat_id must be a positive integer")
		}
		chatID = *f.ChatID
	}
	needChat := func() *frameError {
		if chatID == 0 {
			return badRequest("%s needs chat_id on /ws", f.Type)
		}
		return nil
	}
	switch f.Type {
	case string(gen.MessageSend):
		cmid := ""
		if f.ClientMsgID != nil {
			cmid = *f.ClientMsgID
		}
		if f.ClientMsgID == nil || f.Text == nil {
			return nil, &frameError{code: gen.ErrorFrameCodeBadRequest, msg: "message.send needs client_msg_id and text", clientMsgID: cmid}
		}
		if err := needChat(); err != nil {
			err.clientMsgID = cmid
			return nil, err
		}
		return gen.MessageSendFrame{Type: gen.MessageSend, ChatID: &chatID, ClientMsgID: cmid, Text: *f.Text, ReplyToSeq: f.ReplyToSeq}, nil
	case string(gen.MessageReadFrameTypeMessageRead):
		if f.Seq == nil {
			return nil, badRequest("message.read needs seq")
		}
		if *f.Seq < 0 {
			return nil, badRequest("seq must be >= 0")
		}
		if err := needChat(); err != nil {
			return nil, err
		}
		return gen.MessageReadFrame{Type: gen.MessageReadFrameTypeMessageRead, ChatID: &chatID, Seq: *f.Seq}, nil
	case string(gen.Sync):
		if (f.SinceSeq == nil) == (f.SinceRev == nil) {
			return nil, badRequest("sync needs since_seq or since_rev (one of them)")
		}
		if f.SinceSeq != nil && *f.SinceSeq < 0 || f.SinceRev != nil && *f.SinceRev < 0 {
			return nil, badRequest("since_seq and since_rev must be >= 0")
		}
		if err := needChat(); err != nil {
			return nil, err
		}
		return gen.SyncFrame{Type: gen.Sync, ChatID: &chatID, SinceSeq: f.SinceSeq, SinceRev: f.SinceRev}, nil
	case string(gen.MessageEdit), string(gen.MessageDelete), string(gen.ReactionAdd), string(gen.ReactionRemove):
		if f.Seq == nil || *f.Seq < 1 {
			return nil, badRequest("%s needs seq (>= 1)", f.Type)
		}
		seq := *f.Seq
		if err := needChat(); err != nil {
			err.seq = seq
			return nil, err
		}
		fail := func(format string) *frameError {
			e := badRequest(format, f.Type)
			e.chatID, e.seq = chatID, seq
			return e
		}
		switch f.Type {
		case string(gen.MessageEdit):
			if f.Text == nil {
				return nil, fail("%s needs text")
			}
			return gen.MessageEditFrame{Type: gen.MessageEdit, ChatID: &chatID, Seq: seq, Text: *f.Text}, nil
		case string(gen.MessageDelete):
			return gen.MessageDeleteFrame{Type: gen.MessageDelete, ChatID: &chatID, Seq: seq}, nil
		}
		if f.Emoji == nil {
			return nil, fail("%s needs emoji")
		}
		if f.Type == string(gen.ReactionAdd) {
			return gen.ReactionAddFrame{Type: gen.ReactionAdd, ChatID: &chatID, Seq: seq, Emoji: *f.Emoji}, nil
		}
		return gen.ReactionRemoveFrame{Type: gen.ReactionRemove, ChatID: &chatID, Seq: seq, Emoji: *f.Emoji}, nil
	case string(gen.TypingFrameTypeTyping):
		if err := needChat(); err != nil {
			return nil, err
		}
		return gen.TypingFrame{Type: gen.TypingFrameTypeTyping, ChatID: &chatID}, nil
	case "":
		return nil, badRequest("frame has no type")
	}
	return nil, badRequest("unknown frame type %q", f.Type)
}

// errorFrameCode maps a service error to an error frame code.
func errorFrameCode(err error) gen.ErrorFrameCode {
	switch chat.CodeOf(err) {
	case chat.CodeInvalid, chat.CodeMessageDeleted, chat.CodeTooManyReactions:
		// SPEC §4's codes have no conflict: these are refusals of the frame.
		return gen.ErrorFrameCodeBadRequest
	case chat.CodeTooLarge:
		return gen.ErrorFrameCodeTooLarge
	case chat.CodeForbidden:
		return gen.ErrorFrameCodeForbidden
	case chat.CodeNotFound:
		return gen.ErrorFrameCodeNotFound
	case chat.CodeRateLimited:
		return gen.ErrorFrameCodeRateLimited
	case chat.CodeUnavailable:
		return gen.ErrorFrameCodeUnavailable
	}
	return gen.ErrorFrameCodeInternal
}

func errorMessage(err error) string {
	var ce *chat.Error
	if errors.As(err, &ce) {
		return ce.Message
	}
	return "internal error"
}

func encodeError(e *frameError) []byte {
	f := gen.ErrorFrame{Type: gen.ErrorFrameTypeError, Code: e.code, Message: e.msg}
	if e.clientMsgID != "" {
		f.ClientMsgID = &e.clientMsgID
	}
	if e.chatID != 0 {
		f.ChatID = &e.chatID
	}
	if e.seq != 0 {
		f.Seq = &e.seq
	}
	return mustJSON(f)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("realtime: encode %T: %v", v, err)) // only our own frame types get here
	}
	return b
}
