package realtime

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/event"
	"github.com/windi-chat/windi/gen"
	"github.com/windi-chat/windi/repo"
)

// The per-frame hot paths of the WebSocket hub, without sockets:
//
//	go test -run '^$' -bench 'DecodeFrame|EncodeFrames' -benchmem ./realtime/
//
// BenchmarkFanOut1000 (fanout_bench_test.go) measures the whole delivery
// path over real sockets.

var sinkAny any

// BenchmarkDecodeFrame decodes the client frames a connection reads: what
// onMessage does before anything touches the database.
func BenchmarkDecodeFrame(b *testing.B) {
	text := strings.Repeat("x", 100) // the load tool's default message size
	for _, bc := range []struct {
		name, frame string
		chat        int64
	}{
		{"send", `{"type":"message.send","chat_id":12,"client_msg_id":"3f6c1a9e-load-000042","text":"` + text + `"}`, 0},
		{"send_per_chat", `{"type":"message.send","client_msg_id":"3f6c1a9e-load-000042","text":"` + text + `"}`, 12},
		{"read", `{"type":"message.read","chat_id":12,"seq":40}`, 0},
		{"sync", `{"type":"sync","chat_id":12,"since_seq":35}`, 0},
		{"bad_json", `{"type":"message.send","chat_id":`, 0},
	} {
		data := []byte(bc.frame)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				f, ferr := decodeFrame(data, bc.chat)
				if bc.name == "bad_json" {
					sinkAny = ferr
				} else {
					sinkAny = f
				}
			}
		})
	}
}

// BenchmarkEncodeFrames encodes the server frames and the broker envelope:
// per stored message, MessageStored encodes the message and the envelope
// once (envelope), each replica decodes the envelope and builds the
// message.new frame once (receive); every sender gets an ack, every
// rejected frame an error.
func BenchmarkEncodeFrames(b *testing.B) {
	m := chat.Message{Message: repo.Message{
		ID: 1234567, ChatID: 12, Seq: 4321, SenderID: 77, ClientMsgID: "3f6c1a9e-load-000042",
		Text: strings.Repeat("x", 100), CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 678900000, time.UTC),
	}}
	raw := json.RawMessage(mustJSON(m.API()))
	envelope := func(msg json.RawMessage) event.Envelope {
		return event.Envelope{Kind: event.Messages, ChatID: m.ChatID, SentAt: time.Now().UnixNano(),
			Items: []event.Item{{Seq: m.Seq, Sender: m.SenderID, CMID: m.ClientMsgID, Msg: msg}}}
	}
	env := envelope(raw).Encode()

	b.Run("message_api", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkAny = mustJSON(m.API())
		}
	})
	b.Run("envelope", func(b *testing.B) { // what the sequencer encodes per message
		b.ReportAllocs()
		for b.Loop() {
			sinkAny = envelope(mustJSON(m.API())).Encode()
		}
	})
	b.Run("receive", func(b *testing.B) { // what Receive does once per envelope
		b.ReportAllocs()
		b.SetBytes(int64(len(env)))
		for b.Loop() {
			e, err := event.Decode(env)
			if err != nil {
				b.Fatal(err)
			}
			sinkAny = event.NewFrame(e.Items[0].Msg)
		}
	})
	b.Run("newFrame", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkAny = event.NewFrame(raw)
		}
	})
	b.Run("ackFrame", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkAny = event.AckFrame(m.ClientMsgID, false, raw)
		}
	})
	b.Run("encodeError", func(b *testing.B) {
		fe := &frameError{code: gen.ErrorFrameCodeRateLimited, msg: "too many messages; slow down", clientMsgID: m.ClientMsgID, chatID: m.ChatID}
		b.ReportAllocs()
		for b.Loop() {
			sinkAny = encodeError(fe)
		}
	})
}
