package main

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Report is everything one run measured, with the configuration used.
type Report struct {
	Config reportConfig `json:"config"`
	RunID  string       `json:"run_id"`
	OK     bool         `json:"ok"`
	// Failures says why OK is false.
	Failures []string `json:"failures"`

	SetupS    float64     `json:"setup_s"`
	Users     int         `json:"users"`
	Chats     int         `json:"chats"`
	Conns     int         `json:"conns"`
	ConnsOpen int         `json:"conns_open"`
	ConnsAll  int         `json:"conns_ws_all"` // of them, on /ws
	Connect   Percentiles `json:"connect"`

	// ElapsedS runs from the first send to the last ack (to the end of the
	// hold for idle runs).
	ElapsedS   float64 `json:"elapsed_s"`
	Sent       int64   `json:"sent"`
	Acked      int64   `json:"acked"`
	Unanswered int64   `json:"unanswered"`
	// Ops counts the mixed load's edits and reaction changes sent, and
	// OpsAnswered the message.updated frames that answered them.
	Ops         int64 `json:"ops,omitempty"`
	OpsAnswered int64 `json:"ops_answered,omitempty"`
	// Updates counts message.updated frames received; ExpectedUpdates is
	// answered changes times the connections following their chat.
	Updates           int64   `json:"updates,omitempty"`
	ExpectedUpdates   int64   `json:"expected_updates,omitempty"`
	PersistedMsgsPerS float64 `json:"persisted_msgs_per_s"`
	// Deliveries counts message.new frames received; ExpectedDeliveries is
	// acked messages times the other connections following their chat.
	Deliveries         int64   `json:"deliveries"`
	ExpectedDeliveries int64   `json:"expected_deliveries"`
	DeliveriesPerS     float64 `json:"deliveries_per_s"`
	// AckLatency and DeliveryLatency run from each message's scheduled
	// send time (the actual send time in closed-loop runs); the *Sent ones
	// from its actual send.
	AckLatency          Percentiles `json:"ack_latency"`
	DeliveryLatency     Percentiles `json:"delivery_latency"`
	AckLatencySent      Percentiles `json:"ack_latency_from_send"`
	DeliveryLatencySent Percentiles `json:"delivery_latency_from_send"`

	Verify Verdict `json:"verify"`
	// States is the mixed load's final-state check.
	States *StateCheck `json:"states,omitempty"`

	ErrorFrames      map[string]int64 `json:"error_frames"`
	DialFailures     int64            `json:"dial_failures"`
	DialStatuses     map[string]int64 `json:"dial_statuses,omitempty"`
	UnexpectedCloses int64            `json:"unexpected_closes"`
	CloseCodes       map[string]int64 `json:"close_codes,omitempty"`
	WriteErrors      int64            `json:"write_errors"`
	DuplicateAcks    int64            `json:"duplicate_acks"`
	WrongFrames      int64            `json:"wrong_frames"`
	Unfollowed       int64            `json:"unfollowed"`
	BadFrames        int64            `json:"bad_frames"`
	// Errors sums every error above (error frames included).
	Errors int64 `json:"errors"`
	// CPU is what the -cpu-pids processes used from the first send to the
	// end of the grace period.
	CPU *CPUUse `json:"cpu,omitempty"`
}

// CPUUse is CPU time charged to a run's send phase.
type CPUUse struct {
	Seconds       float64 `json:"seconds"`
	PerMessageUS  float64 `json:"per_stored_message_us"`
	PerDeliveryUS float64 `json:"per_delivery_us"`
}

// plan is the scenario's users, chats and connections before any dial.
type plan struct {
	users   []user
	chats   []int64         // private: chat of pair i; group, idle: the group
	members map[int64][]int // chat -> user indexes
	ofUser  map[int][]int64 // user index -> chats
	conns   []*lconn
	senders []*lconn
}

// run performs one load run. The error is for runs that could not start
// (bad configuration, setup failures); what the run found is in Report.
func run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.normalize(); err != nil {
		return Report{}, err
	}
	logf := cfg.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	rep := Report{Config: cfg.report(), RunID: randomHex(4)}
	st := &shared{base: time.Now(), warn: logf}

	// Setup: users, chats.
	t0 := time.Now()
	srv, err := newServers(cfg.URLs, cfg.SetupConcurrency)
	if err != nil {
		return rep, err
	}
	defer srv.close()
	nu := cfg.users()
	logf("setup: registering %d users (%d at a time) on %d server(s)", nu, cfg.SetupConcurrency, len(cfg.URLs))
	step := max(nu/10, 100)
	users, err := srv.createUsers(ctx, nu, cfg.SetupConcurrency, rep.RunID, func(done int) {
		if done%step == 0 && done < nu {
			logf("setup: %d/%d users", done, nu)
		}
	}, logf)
	if err != nil {
		return rep, fmt.Errorf("setup: %w", err)
	}
	p := &plan{users: users, members: map[int64][]int{}, ofUser: map[int][]int64{}}
	switch cfg.Scenario {
	case "private":
		p.chats = make([]int64, cfg.Chats)
		err = pool(ctx, cfg.Chats, cfg.SetupConcurrency, func(ctx context.Context, i int) error {
			id, err := createPrivate(ctx, i, users[2*i], users[2*i+1])
			p.chats[i] = id
			return err
		})
		for i, id := range p.chats {
			p.members[id] = []int{2 * i, 2*i + 1}
		}
	default:
		var id int64
		id, err = createGroup(ctx, "load "+rep.RunID, users)
		p.chats = []int64{id}
		p.members[id] = make([]int, len(users))
		for i := range users {
			p.members[id][i] = i
		}
	}
	if err != nil {
		return rep, fmt.Errorf("setup: %w", err)
	}
	for id, us := range p.members {
		for _, u := range us {
			p.ofUser[u] = append(p.ofUser[u], id)
		}
	}
	p.planConns(cfg)
	rep.Users, rep.Chats, rep.Conns = len(users), len(p.chats), len(p.conns)
	rep.SetupS = round3(time.Since(t0).Seconds())
	logf("setup: %d users, %d chats in %.1fs", len(users), len(p.chats), rep.SetupS)

	// Connections: dial all, each reader starting at once.
	logf("connect: opening %d connections (%d at a time)", len(p.conns), cfg.DialConcurrency)
	var connectH hist
	var mu sync.Mutex
	_ = pool(ctx, len(p.conns), cfg.DialConcurrency, func(ctx context.Context, i int) error {
		c := p.conns[i]
		c.dial(ctx, srv)
		if c.ws != nil {
			go c.read(st)
		} else {
			close(c.readerDone)
		}
		mu.Lock()
		connectH.record(c.connectDur)
		mu.Unlock()
		return nil
	})
	defer func() { // on early returns, leave nothing open
		st.closing.Store(true)
		closeAll(p.conns, cfg.DialConcurrency)
	}()
	followers := map[int64]int64{}
	for _, c := range p.conns {
		if c.ws != nil {
			rep.ConnsOpen++
			if c.chatID == 0 {
				rep.ConnsAll++
			}
			for _, id := range c.follows {
				followers[id]++
			}
		}
	}
	st.followers.Store(&followers)
	rep.Connect = connectH.percentiles()
	logf("connect: %d/%d open, connect p50 %.1fms p99 %.1fms max %.1fms",
		rep.ConnsOpen, len(p.conns), rep.Connect.P50, rep.Connect.P99, rep.Connect.Max)

	// Send (or hold) phase.
	var live []*lconn
	for _, c := range p.senders {
		if c.ws != nil {
			live = append(live, c)
		}
	}
	cpu0 := cpuTicks(cfg.CPUPIDs)
	start := time.Now()
	end := start.Add(cfg.Duration)
	if len(live) > 0 {
		var interval time.Duration
		if cfg.Rate > 0 {
			interval = time.Duration(float64(len(live)) / cfg.Rate * float64(time.Second))
		}
		if cfg.Open {
			logf("send: %d senders, open loop at %s, %v, %d-byte texts", len(live), rateString(cfg.Rate), cfg.Duration, cfg.Size)
		} else {
			logf("send: %d senders, rate %s, window %d, %v, %d-byte texts", len(live), rateString(cfg.Rate), cfg.Window, cfg.Duration, cfg.Size)
		}
		for i, c := range live {
			// Stagger the senders over one interval so sends do not
			// arrive in bursts.
			off := time.Duration(0)
			if interval > 0 {
				off = interval * time.Duration(i) / time.Duration(len(live))
			}
			go c.send(ctx, st, start.Add(off), end, interval, cfg.Size, cfg.Open, cfg.Mix)
		}
		for _, c := range live {
			<-c.sendDone
		}
		// Grace: wait for outstanding acks and deliveries, then a short
		// settle so late repeats are seen too.
		deadline := time.Now().Add(cfg.Grace)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			var inflight int64
			for _, c := range live {
				select {
				case <-c.readerDone:
				default:
					inflight += c.sent.Load() + c.opsSent.Load() - c.answered.Load()
				}
			}
			if inflight == 0 && st.deliveries.Load() >= st.owed.Load() && st.updates.Load() >= st.updatesOwed.Load() {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = sleepCtx(ctx, min(cfg.Grace, 200*time.Millisecond))
	} else {
		if cfg.Scenario != "idle" {
			logf("send: no sender connected")
		}
		logf("hold: %d connections for %v", rep.ConnsOpen, cfg.Duration)
		_ = sleepCtx(ctx, cfg.Duration)
	}
	holdEnd := time.Since(st.base)
	cpuUsed := float64(cpuTicks(cfg.CPUPIDs)-cpu0) / clockTicks

	st.closing.Store(true)
	closeAll(p.conns, cfg.DialConcurrency)

	// Aggregate and verify.
	acked := map[int64]bitset{}
	var ackH, delH, ackSH, delSH hist
	var lastAck, lastDel time.Duration
	rep.ErrorFrames = map[string]int64{}
	rep.DialStatuses = map[string]int64{}
	rep.CloseCodes = map[string]int64{}
	for _, c := range p.senders {
		if c.sendChat != 0 && c.acked != nil {
			a := acked[c.sendChat]
			a.or(c.acked)
			acked[c.sendChat] = a
		}
	}
	for _, c := range p.conns {
		if c.ws == nil {
			rep.DialFailures++
			rep.DialStatuses[strconv.Itoa(c.dialStatus)]++
			continue
		}
		rep.Verify.add(c.tr.verify(acked))
		rep.Sent += c.sent.Load()
		rep.Acked += c.acks - c.dupAcks
		if c.window != nil {
			rep.Unanswered += c.sent.Load() + c.opsSent.Load() - c.answered.Load()
		}
		rep.Ops += c.opsSent.Load()
		rep.OpsAnswered += c.opsAnswered
		rep.Updates += c.updates
		rep.Deliveries += c.deliveries
		rep.Unfollowed += c.unfollowed
		rep.WrongFrames += c.wrongFrames
		rep.DuplicateAcks += c.dupAcks
		rep.BadFrames += c.badFrames
		if c.writeErr != nil {
			rep.WriteErrors++
		}
		if c.unexpected {
			rep.UnexpectedCloses++
			rep.CloseCodes[strconv.Itoa(int(c.closeStatus))]++
		}
		for code, n := range c.errCodes {
			rep.ErrorFrames[code] += n
		}
		ackH.merge(&c.ackLat)
		delH.merge(&c.delLat)
		ackSH.merge(&c.ackLatSent)
		delSH.merge(&c.delLatSent)
		lastAck = max(lastAck, c.lastAck)
		lastDel = max(lastDel, c.lastDelivery)
	}
	rep.ExpectedDeliveries = rep.Verify.Expected - rep.Acked
	if cfg.Mix > 0 {
		rep.ExpectedUpdates = st.updatesOwed.Load()
		rep.States = &StateCheck{}
		want := expectedStates(p.senders)
		for _, msgs := range want {
			rep.States.Touched += int64(len(msgs))
		}
		checkViews(p.conns, want, rep.States)
		if err := checkServer(ctx, p, want, rep.States); err != nil {
			logf("verify: %v", err)
			rep.States.ServerDiffer = -1
		}
	}
	rep.AckLatency, rep.DeliveryLatency = ackH.percentiles(), delH.percentiles()
	rep.AckLatencySent, rep.DeliveryLatencySent = ackSH.percentiles(), delSH.percentiles()
	startOff := start.Sub(st.base)
	switch {
	case rep.Acked > 0:
		rep.ElapsedS = (lastAck - startOff).Seconds()
	default:
		rep.ElapsedS = (holdEnd - startOff).Seconds()
	}
	if rep.ElapsedS > 0 {
		rep.PersistedMsgsPerS = round1(float64(rep.Acked) / rep.ElapsedS)
		if d := (max(lastDel, lastAck) - startOff).Seconds(); d > 0 {
			rep.DeliveriesPerS = round1(float64(rep.Deliveries) / d)
		}
	}
	rep.ElapsedS = round3(rep.ElapsedS)
	if len(cfg.CPUPIDs) > 0 {
		rep.CPU = &CPUUse{Seconds: round3(cpuUsed)}
		if rep.Acked > 0 {
			rep.CPU.PerMessageUS = round1(cpuUsed / float64(rep.Acked) * 1e6)
		}
		if rep.Deliveries > 0 {
			rep.CPU.PerDeliveryUS = round3(cpuUsed / float64(rep.Deliveries) * 1e6)
		}
	}
	var frameErrs int64
	for _, n := range rep.ErrorFrames {
		frameErrs += n
	}
	rep.Errors = frameErrs + rep.DialFailures + rep.UnexpectedCloses + rep.WriteErrors +
		rep.DuplicateAcks + rep.WrongFrames + rep.Unfollowed + rep.BadFrames + rep.Unanswered
	rep.judge(cfg, frameErrs)
	if ctx.Err() != nil {
		rep.Failures = append(rep.Failures, "interrupted")
		rep.OK = false
	}
	return rep, nil
}

// judge decides OK: nothing lost, repeated or reordered, and no errors
// (error frames tolerated with -allow-errors).
func (r *Report) judge(cfg Config, frameErrs int64) {
	r.Failures = []string{}
	add := func(n int64, what string) {
		if n > 0 {
			r.Failures = append(r.Failures, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(r.Verify.Lost, "lost")
	add(r.Verify.Repeated, "repeated")
	add(r.Verify.OutOfOrder, "out of order")
	add(r.Verify.RevOutOfOrder, "changes out of rev order")
	if s := r.States; s != nil {
		add(s.Differ, "final states differ on connections")
		add(s.ServerDiffer, "final states differ on the server")
		if s.ServerDiffer < 0 {
			r.Failures = append(r.Failures, "the server's history could not be read")
		}
		if s.ServerChecked != s.Touched {
			r.Failures = append(r.Failures, fmt.Sprintf("%d of %d changed messages read back", s.ServerChecked, s.Touched))
		}
	}
	if !cfg.AllowErrors {
		for _, code := range slices.Sorted(maps.Keys(r.ErrorFrames)) {
			add(r.ErrorFrames[code], "error frames "+code)
		}
	}
	add(r.DialFailures, "dial failures")
	add(r.UnexpectedCloses, "unexpected closes")
	add(r.WriteErrors, "write errors")
	add(r.DuplicateAcks, "duplicate acks")
	add(r.WrongFrames, "own sends delivered as message.new")
	add(r.Unfollowed, "messages of chats the connection does not follow")
	add(r.BadFrames, "undecodable frames")
	add(r.Unanswered, "sends never answered")
	if r.Config.Scenario != "idle" && r.Sent == 0 {
		r.Failures = append(r.Failures, "nothing sent")
	}
	r.OK = len(r.Failures) == 0
}

// planConns lays out the connections: devices per user (idle: conns spread
// over the users), each on /ws or /ws/{chat_id} by the -ws-all share, and
// each on the next server in turn; then picks the senders.
func (p *plan) planConns(cfg Config) {
	n := cfg.conns()
	userOf := func(k int) int {
		if cfg.Scenario == "idle" {
			return k % len(p.users)
		}
		return k / cfg.Devices
	}
	for k := range n {
		u := userOf(k)
		c := &lconn{
			idx: k, url: cfg.URLs[k%len(cfg.URLs)], userIdx: u, userID: p.users[u].id, token: p.users[u].token,
			tr: newTracker(), readerDone: make(chan struct{}), sendDone: make(chan struct{}),
		}
		chats := p.ofUser[u]
		// Spread the /ws share evenly: connection k is on /ws when
		// floor((k+1)·r) > floor(k·r).
		r := cfg.AllChatsRatio
		if math.Floor(float64(k+1)*r) > math.Floor(float64(k)*r) {
			c.follows = chats
		} else {
			c.chatID = chats[0]
			c.follows = []int64{c.chatID}
		}
		for _, id := range c.follows {
			c.tr.follow(id, 0) // every chat is new: it starts at seq 0
		}
		if cfg.Mix > 0 {
			c.views = map[viewKey]msgState{}
		}
		p.conns = append(p.conns, c)
	}
	if cfg.Senders == 0 {
		return
	}
	// Senders: the first device of each user in turn (private: alternating
	// sides across chats), then second devices, and so on.
	var order []int
	switch cfg.Scenario {
	case "private":
		for d := range cfg.Devices {
			for side := range 2 {
				for i := range cfg.Chats {
					u := 2*i + (i+side)%2
					order = append(order, u*cfg.Devices+d)
				}
			}
		}
	case "group":
		for d := range cfg.Devices {
			for u := range len(p.users) {
				order = append(order, u*cfg.Devices+d)
			}
		}
	}
	for _, k := range order[:cfg.Senders] {
		c := p.conns[k]
		c.sendChat = p.ofUser[c.userIdx][0]
		c.window = make(chan struct{}, cfg.Window)
		if cfg.Mix > 0 {
			c.own = &ownMsgs{}
		}
		p.senders = append(p.senders, c)
	}
	sort.Slice(p.senders, func(i, j int) bool { return p.senders[i].idx < p.senders[j].idx })
}

// closeAll closes every open connection, conc at a time.
func closeAll(conns []*lconn, conc int) {
	_ = pool(context.Background(), len(conns), conc, func(_ context.Context, i int) error {
		conns[i].close()
		return nil
	})
}

func rateString(r float64) string {
	if r == 0 {
		return "unlimited"
	}
	return strconv.FormatFloat(r, 'f', -1, 64) + "/s"
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
