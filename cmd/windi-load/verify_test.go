package main

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"
)

func ackedSet(seqs ...int64) bitset {
	var b bitset
	for _, s := range seqs {
		b.set(s)
	}
	return b
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestVerifier(t *testing.T) {
	cases := []struct {
		name     string
		start    int64
		arrivals []int64
		acked    []int64
		want     Verdict
	}{
		{"in order", 0, seqRange(1, 100), seqRange(1, 100),
			Verdict{Expected: 100, Received: 100}},
		{"nothing arrived", 0, nil, seqRange(1, 5),
			Verdict{Expected: 5, Lost: 5}},
		{"gap never filled", 0, []int64{1, 2, 4, 5}, seqRange(1, 5),
			Verdict{Expected: 5, Received: 4, Lost: 1, Gaps: 1}},
		{"tail lost", 0, []int64{1, 2, 3}, seqRange(1, 5),
			Verdict{Expected: 5, Received: 3, Lost: 2}},
		{"first lost", 0, []int64{2, 3}, seqRange(1, 3),
			Verdict{Expected: 3, Received: 2, Lost: 1, Gaps: 1}},
		{"repeat", 0, []int64{1, 2, 2, 3}, seqRange(1, 3),
			Verdict{Expected: 3, Received: 3, Repeated: 1}},
		{"repeat of an old one", 0, []int64{1, 2, 3, 1}, seqRange(1, 3),
			Verdict{Expected: 3, Received: 3, Repeated: 1}},
		{"swap", 0, []int64{1, 3, 2, 4}, seqRange(1, 4),
			Verdict{Expected: 4, Received: 4, OutOfOrder: 1, Gaps: 1}},
		{"reversed", 0, []int64{3, 2, 1}, seqRange(1, 3),
			Verdict{Expected: 3, Received: 3, OutOfOrder: 2, Gaps: 1}},
		{"reorder and repeat and loss", 0, []int64{1, 4, 2, 4, 6}, seqRange(1, 6),
			Verdict{Expected: 6, Received: 4, Lost: 2, Repeated: 1, OutOfOrder: 1, Gaps: 2}},
		{"unacked arrivals are not failures", 0, []int64{1, 2, 3}, []int64{1, 3},
			Verdict{Expected: 2, Received: 2, UnackedSeen: 1}},
		{"messages before the connection are not owed", 3, []int64{4, 5}, seqRange(1, 5),
			Verdict{Expected: 2, Received: 2}},
		{"seq at or below start is out of order", 3, []int64{2, 4}, seqRange(1, 4),
			Verdict{Expected: 1, Received: 1, OutOfOrder: 1, UnackedSeen: 1}},
		{"big seqs", 0, seqRange(1, 5000), seqRange(1, 5001),
			Verdict{Expected: 5001, Received: 5000, Lost: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker()
			tr.follow(7, tc.start)
			for _, s := range tc.arrivals {
				if tr.observe(7, s) == unfollowed {
					t.Fatal("followed chat reported as unfollowed")
				}
			}
			got := tr.verify(map[int64]bitset{7: ackedSet(tc.acked...)})
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestArrivalClasses(t *testing.T) {
	tr := newTracker()
	tr.follow(1, 0)
	var got []arrival
	for _, s := range []int64{1, 2, 4, 3, 3, 5} {
		got = append(got, tr.observe(1, s))
	}
	got = append(got, tr.observe(2, 1))
	want := []arrival{inOrder, inOrder, gap, outOfOrder, repeat, inOrder, unfollowed}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestVerifierChatsAreSeparate(t *testing.T) {
	tr := newTracker()
	tr.follow(1, 0)
	tr.follow(2, 0)
	// Interleaved chats, each in order.
	for _, a := range [][2]int64{{1, 1}, {2, 1}, {2, 2}, {1, 2}, {1, 3}, {2, 3}} {
		tr.observe(a[0], a[1])
	}
	if tr.observe(3, 1) != unfollowed {
		t.Error("chat 3 is not followed")
	}
	got := tr.verify(map[int64]bitset{1: ackedSet(1, 2, 3), 2: ackedSet(1, 2, 3, 4)})
	want := Verdict{Expected: 7, Received: 6, Lost: 1}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// A chat with no acks owes nothing.
	if v := newTracker().verify(nil); v != (Verdict{}) {
		t.Errorf("empty: %+v", v)
	}
}

func TestBitset(t *testing.T) {
	var a, b bitset
	for _, s := range []int64{0, 1, 63, 64, 1000} {
		a.set(s)
	}
	for _, s := range []int64{1, 64, 2000} {
		b.set(s)
	}
	if !a.has(63) || a.has(62) || a.has(5000) {
		t.Error("has")
	}
	if a.count() != 5 || a.andNotCount(b) != 3 || b.andNotCount(a) != 1 {
		t.Errorf("counts %d %d %d", a.count(), a.andNotCount(b), b.andNotCount(a))
	}
	a.or(b)
	if a.count() != 6 || !a.has(2000) {
		t.Error("or")
	}
}

func TestHist(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	p := h.percentiles()
	near := func(got, want float64) bool { return got >= want*0.97 && got <= want*1.03 }
	if p.Count != 1000 || !near(p.P50, 500) || !near(p.P95, 950) || !near(p.P99, 990) || p.Max != 1000 {
		t.Errorf("percentiles %+v", p)
	}
	var small hist
	for i := range 64 {
		small.record(time.Duration(i) * time.Microsecond)
	}
	if q := small.quantile(0.5); q != 31 {
		t.Errorf("exact small buckets: p50 %v", q)
	}
	var m hist
	m.merge(&h)
	m.merge(&small)
	m.merge(nil)
	if m.n != 1064 || m.max != h.max {
		t.Errorf("merge n=%d max=%d", m.n, m.max)
	}
	for us := int64(0); us < 1<<30; us = us*2 + 1 { // index and value agree
		v := histValue(histIndex(us))
		if v < float64(us)*0.97-1 || v > float64(us)*1.03+1 {
			t.Fatalf("bucket of %dµs has value %v", us, v)
		}
	}
}

func TestFrameDecoding(t *testing.T) {
	var f frame
	in := `{"type":"message.ack","client_msg_id":"12-7","duplicate":false,"message":{"id":9,"chat_id":3,"seq":41,"sender_id":5,"text":"1234567 xxxx","client_msg_id":"12-7","created_at":"2026-01-01T00:00:00Z","read":false}}`
	if err := json.Unmarshal([]byte(in), &f); err != nil {
		t.Fatal(err)
	}
	if f.Type != ftAck || f.ClientMsgID != 12 || f.Message.ChatID != 3 || f.Message.Seq != 41 ||
		f.Message.SenderID != 5 || f.Message.Text.stamp != (stamp{1234567, 1234567}) || string(f.Message.Text.raw) != "1234567 xxxx" || f.Message.ClientMsgID != 12 {
		t.Errorf("decoded %+v", f)
	}
	// Open loop: the scheduled and the actual send time.
	f = frame{}
	if err := json.Unmarshal([]byte(`{"type":"message.new","message":{"chat_id":3,"seq":42,"sender_id":5,"text":"1000 1250 xxxx","client_msg_id":"12-8"}}`), &f); err != nil {
		t.Fatal(err)
	}
	if f.Message.Text.stamp != (stamp{1000, 1250}) {
		t.Errorf("decoded stamp %+v, want {1000 1250}", f.Message.Text)
	}
	f = frame{}
	if err := json.Unmarshal([]byte(`{"type":"error","code":"rate_limited","message":"slow down","client_msg_id":"3-1"}`), &f); err != nil {
		t.Fatal(err)
	}
	if f.Type != ftError || f.Code != "rate_limited" || f.ClientMsgID != 3 {
		t.Errorf("decoded %+v", f)
	}
	f = frame{}
	if err := json.Unmarshal([]byte(`{"type":"message.new","message":{"seq":2,"text":"hello","client_msg_id":"not-ours"}}`), &f); err != nil {
		t.Fatal(err)
	}
	if f.Type != ftNew || f.Message.Text.stamp != (stamp{}) || f.Message.ClientMsgID != -1 {
		t.Errorf("decoded %+v", f)
	}
	f = frame{}
	_ = json.Unmarshal([]byte(`{"type":"presence","chat_id":1,"user_id":2,"online":true}`), &f)
	if f.Type != ftOther {
		t.Errorf("presence decoded as %v", f.Type)
	}
}

func TestJudge(t *testing.T) {
	r := Report{Config: reportConfig{Scenario: "group"}, Sent: 10, ErrorFrames: map[string]int64{"rate_limited": 3}}
	r.judge(Config{}, 3)
	if r.OK || len(r.Failures) != 1 {
		t.Errorf("error frames must fail: %+v", r.Failures)
	}
	r.judge(Config{AllowErrors: true}, 3)
	if !r.OK {
		t.Errorf("-allow-errors tolerates error frames: %+v", r.Failures)
	}
	r.Verify.Lost = 1
	r.judge(Config{AllowErrors: true}, 3)
	if r.OK {
		t.Error("loss fails even with -allow-errors")
	}
}

func TestFlags(t *testing.T) {
	var sink discard
	cfg, err := parseFlags([]string{"-url", "http://a:1/, http://b:2", "-scenario", "private", "-chats", "3", "-devices", "2", "-rate", "0"}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.normalize(); err != nil {
		t.Fatal(err)
	}
	if len(cfg.URLs) != 2 || cfg.URLs[0] != "http://a:1" || cfg.Senders != 3 || cfg.conns() != 12 || cfg.users() != 6 {
		t.Errorf("config %+v", cfg)
	}
	for _, bad := range [][]string{
		{"-scenario", "nope"}, {"-scenario", "group", "-members", "1001"}, {"-size", "5"},
		{"-url", "ftp://x"}, {"-window", "0"}, {"-scenario", "group", "-members", "3", "-senders", "4"},
	} {
		if _, err := parseFlags(bad, &sink); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestScanFrameAgreesWithJSON: the fast scanner decodes the server's
// message frames exactly as encoding/json does, and declines the rest.
func TestScanFrameAgreesWithJSON(t *testing.T) {
	frames := []string{
		`{"type":"message.new","message":{"chat_id":3,"client_msg_id":"12-8","created_at":"2026-01-01T00:00:00Z","id":9,"reactions":[],"read":false,"rev":45,"sender_id":5,"seq":42,"text":"1000 1250 xxxx"}}`,
		`{"type":"message.ack","client_msg_id":"7-1","duplicate":true,"message":{"chat_id":30,"client_msg_id":"7-1","created_at":"2026-01-01T00:00:00Z","id":19,"reactions":[{"emoji":"👍","count":1,"user_ids":[15]}],"read":true,"rev":4,"sender_id":15,"seq":4,"text":"99 xxxx"}}`,
		`{"type":"message.new","message":{"chat_id":3,"client_msg_id":"free-form","created_at":"2026-01-01T00:00:00Z","id":9,"read":false,"rev":50,"sender_id":5,"seq":43,"text":"no stamp \"seq\":7"}}`,
	}
	for _, in := range frames {
		var fast, slow frame
		if !scanFrame([]byte(in), &fast) {
			t.Errorf("scanFrame declined %s", in)
			continue
		}
		if err := json.Unmarshal([]byte(in), &slow); err != nil {
			t.Fatal(err)
		}
		// The scanner leaves reactions alone (message.new and acks
		// do not need them).
		slow.Message.Reactions = nil
		if !reflect.DeepEqual(fast, slow) {
			t.Errorf("scanFrame %+v, encoding/json %+v for %s", fast, slow, in)
		}
	}
	for _, in := range []string{`{"type":"error","code":"rate_limited","message":"slow down","client_msg_id":"3-1"}`, `{"type":"presence","chat_id":1,"user_id":2,"online":true}`, `{"message":{},"type":"message.new"}`} {
		var f frame
		if scanFrame([]byte(in), &f) {
			t.Errorf("scanFrame accepted %s", in)
		}
	}
}

// TestCPUTicksReadsProc: the tool's own process shows CPU time after some
// work, and a pid that does not exist counts zero.
func TestCPUTicksReadsProc(t *testing.T) {
	x := 0
	for i := range 50_000_000 {
		x ^= i
	}
	_ = x
	if n := cpuTicks([]int{os.Getpid()}); n <= 0 {
		t.Errorf("own CPU ticks %d, want > 0", n)
	}
	if n := cpuTicks([]int{1 << 30}); n != 0 {
		t.Errorf("a missing pid counted %d ticks", n)
	}
}
