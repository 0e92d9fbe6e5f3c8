package realtime

import (
	"encoding/json"
	"testing"

	"github.com/windi-chat/windi/gen"
)

// FuzzDecodeFrame feeds arbitrary bytes to the frame decoder: it must never
// panic, must answer every rejected frame with an error frame that encodes,
// and every accepted frame must carry the fields its type requires.
func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"message.send","chat_id":12,"client_msg_id":"9b2c","text":"hi"}`,
		`{"type":"message.read","chat_id":12,"seq":40}`,
		`{"type":"sync","chat_id":12,"since_seq":35}`,
		`{"type":"message.send","client_msg_id":"x","text":"no chat"}`,
		`{"type":"sync","since_seq":-1}`,
		`{"type":`, `[]`, `null`, `{}`, `{"type":"message.read","seq":1e400}`,
		`{"type":"message.send","chat_id":1,"client_msg_id":null,"text":"x"}`,
		`{"type":"message.send","chat_id":0,"client_msg_id":"a","text":"b"} {}`,
	} {
		f.Add([]byte(seed), int64(0))
		f.Add([]byte(seed), int64(12))
	}
	f.Fuzz(func(t *testing.T, data []byte, defaultChat int64) {
		if defaultChat < 0 {
			defaultChat = -defaultChat
		}
		v, ferr := decodeFrame(data, defaultChat)
		if ferr != nil {
			if v != nil {
				t.Fatalf("got both a frame and an error for %q", data)
			}
			var out gen.ErrorFrame
			if err := json.Unmarshal(encodeError(ferr), &out); err != nil || out.Type != gen.ErrorFrameTypeError || !out.Code.Valid() {
				t.Fatalf("error frame for %q does not encode: %v %+v", data, err, out)
			}
			return
		}
		switch fr := v.(type) {
		case gen.MessageSendFrame:
			if fr.ChatID == nil || *fr.ChatID < 1 {
				t.Fatalf("send frame without a chat: %q", data)
			}
		case gen.MessageReadFrame:
			if fr.ChatID == nil || *fr.ChatID < 1 || fr.Seq < 0 {
				t.Fatalf("bad read frame accepted: %q", data)
			}
		case gen.SyncFrame:
			if fr.ChatID == nil || *fr.ChatID < 1 || (fr.SinceSeq == nil) == (fr.SinceRev == nil) ||
				fr.SinceSeq != nil && *fr.SinceSeq < 0 || fr.SinceRev != nil && *fr.SinceRev < 0 {
				t.Fatalf("bad sync frame accepted: %q", data)
			}
		case gen.MessageEditFrame:
			if fr.ChatID == nil || *fr.ChatID < 1 || fr.Seq < 1 {
				t.Fatalf("bad edit frame accepted: %q", data)
			}
		case gen.MessageDeleteFrame:
			if fr.ChatID == nil || *fr.ChatID < 1 || fr.Seq < 1 {
				t.Fatalf("bad delete frame accepted: %q", data)
			}
		case gen.ReactionAddFrame:
			if fr.ChatID == nil || *fr.ChatID < 1 || fr.Seq < 1 {
				t.Fatalf("bad reaction frame accepted: %q", data)
			}
		case gen.ReactionRemoveFrame:
			if fr.ChatID == nil || *fr.ChatID < 1 || fr.Seq < 1 {
				t.Fatalf("bad reaction frame accepted: %q", data)
			}
		case gen.TypingFrame:
			if fr.ChatID == nil || *fr.ChatID < 1 {
				t.Fatalf("typing frame without a chat: %q", data)
			}
		default:
			t.Fatalf("decoder returned %T for %q", v, data)
		}
	})
}
