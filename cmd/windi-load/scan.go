package main

import "bytes"

// scanFrame decodes the message frames (message.new, message.ack) that make
// up nearly all of a load run's traffic without encoding/json, which at
// 100,000 frames a second would make the load tool, not the server, the
// bottleneck. It reports false for any frame it does not recognize, and
// the caller falls back to encoding/json, so correctness never depends on
// it.
//
// It finds each key by its quoted name followed by a colon: inside a JSON
// string a quote is always escaped, so such a sequence can only be a key.
// Keys nested deeper than the message (none exist in these frames) would
// confuse it; the server's frames have none.
func scanFrame(b []byte, f *frame) bool {
	const newPrefix, ackPrefix = `{"type":"message.new",`, `{"type":"message.ack",`
	switch {
	case bytes.HasPrefix(b, []byte(newPrefix)):
		f.Type = ftNew
	case bytes.HasPrefix(b, []byte(ackPrefix)):
		f.Type = ftAck
	default:
		return false
	}
	i := bytes.Index(b, []byte(`"message":{`))
	if i < 0 {
		return false
	}
	head, msg := b[:i], b[i:]
	if f.Type == ftAck {
		if !scanCMID(head, `"client_msg_id":"`, &f.ClientMsgID) {
			return false
		}
		d, ok := after(head, `"duplicate":`)
		if !ok {
			return false
		}
		f.Duplicate = bytes.HasPrefix(d, []byte("true"))
	}
	m := &f.Message
	ok := scanInt(msg, `"chat_id":`, &m.ChatID) && scanInt(msg, `"seq":`, &m.Seq) && scanInt(msg, `"rev":`, &m.Rev) &&
		scanInt(msg, `"sender_id":`, &m.SenderID) && scanCMID(msg, `"client_msg_id":"`, &m.ClientMsgID)
	if !ok {
		return false
	}
	t, ok := after(msg, `"text":"`)
	if !ok {
		return false
	}
	end := unescapedQuote(t)
	if end < 0 {
		return false
	}
	m.Text = text{stamp: parseStamp(t), raw: t[:end]}
	return true
}

// unescapedQuote is the index of the quote that ends the JSON string b
// starts inside of, or -1.
func unescapedQuote(b []byte) int {
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// after returns what follows key in b.
func after(b []byte, key string) ([]byte, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return nil, false
	}
	return b[i+len(key):], true
}

func scanInt(b []byte, key string, v *int64) bool {
	rest, ok := after(b, key)
	if !ok || len(rest) == 0 {
		return false
	}
	var n int64
	j := 0
	for ; j < len(rest) && rest[j] >= '0' && rest[j] <= '9'; j++ {
		n = n*10 + int64(rest[j]-'0')
	}
	*v = n
	return j > 0
}

func scanCMID(b []byte, key string, c *cmidRef) bool {
	rest, ok := after(b, key)
	if !ok {
		return false
	}
	*c = parseCMID(rest)
	return true
}
