package faults

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/testkit"
)

// report prints a scenario's one-line summary (also kept in the test log).
func report(t *testing.T, scenario string, start time.Time, res result, extra ...string) {
	t.Helper()
	line := fmt.Sprintf("FAULTS %s: %s", scenario, res.summary())
	if len(extra) > 0 {
		line += "; " + strings.Join(extra, "; ")
	}
	line += fmt.Sprintf("; took %s", secs(time.Since(start)))
	fmt.Println(line)
	t.Log(line)
}

// sleepUntil sleeps until t (not at all when it has passed).
func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// TestKill9 kills one of three replicas with SIGKILL while every device
// sends. The devices it held reconnect through nginx (which marks the dead
// upstream failed and passes their upgrades to a survivor) and resume with
// since_seq; nothing acknowledged is lost or repeated. The killed replica
// cannot say goodbye, so its presence entries must expire by themselves:
// two observers connected only to it must drop out of GET
// /chats/{id}/presence on a survivor within 60 s (the TTL is 45 s, not
// configurable).
func TestKill9(t *testing.T) {
	requireFaults(t)
	start := time.Now()
	c := startCluster(t, testkit.Options{Replicas: 3, Nginx: true})
	l := newLoad(t, c, loadOptions{observers: 2})
	victim := c.Replicas[0]
	l.spread(t, 2)
	l.pinObservers(t, victim)

	survivor := l.clientAt(t, c.Replicas[1].URL, l.users[0])
	online := func(on map[int64]bool, us []*user) int {
		n := 0
		for _, u := range us {
			if on[u.ID] {
				n++
			}
		}
		return n
	}
	observers := []*user{l.obs[0].u, l.obs[1].u}
	if err := testkit.WaitFor(10*time.Second, func() bool {
		on, err := presence(context.Background(), survivor, l.group)
		return err == nil && online(on, observers) == len(observers) && online(on, l.users) == len(l.users)
	}); err != nil {
		t.Fatalf("observers and users not all online before the kill: %v", err)
	}

	l.start()
	time.Sleep(3 * time.Second)
	victimName := victim.Name()
	moving := l.on(victimName)
	killedAt := l.markFault()
	victim.Signal(syscall.SIGKILL)
	if !victim.Wait(5 * time.Second) {
		t.Fatal("the killed replica did not exit")
	}

	// Presence, from a survivor: the observers go when the dead replica's
	// entries expire; the users, whose devices moved, stay.
	type presenceResult struct {
		after  time.Duration
		users  int
		err    error
		polled int
	}
	presc := make(chan presenceResult, 1)
	go func() {
		var pr presenceResult
		for {
			pr.polled++
			on, err := presence(context.Background(), survivor, l.group)
			if err == nil && online(on, observers) == 0 {
				pr.after, pr.users = time.Since(killedAt), online(on, l.users)
				presc <- pr
				return
			}
			if time.Since(killedAt) > 60*time.Second {
				pr.after, pr.err = time.Since(killedAt), fmt.Errorf("observers still online 60 s after the kill (last answer %v, %v)", on, err)
				presc <- pr
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()

	var pr presenceResult
	res, recovery := l.finish(t, ending{recoverWithin: 20 * time.Second, sendUntil: killedAt.Add(6 * time.Second), beforeClose: func() {
		for _, d := range moving {
			if r, ready := d.currentReplica(); !ready || r == victimName {
				t.Errorf("%s: still not moved off the killed replica (on %q, ready %v)", d.name, r, ready)
			}
		}
		pr = <-presc // the devices stay connected meanwhile: their users must stay online
	}})
	l.mu.Lock()
	offline := 0
	for _, u := range observers {
		for _, at := range l.offline[u.ID] {
			if at.After(killedAt) {
				offline++
			}
		}
	}
	l.mu.Unlock()
	if pr.err != nil {
		t.Error(pr.err)
	} else if pr.users != len(l.users) {
		t.Errorf("when the observers went offline, %d of the %d users with devices on survivors were online, want all", pr.users, len(l.users))
	}
	report(t, "kill-9", start, res,
		fmt.Sprintf("killed 1 of 3 replicas holding %d of %d devices", len(moving), len(l.devices)),
		"recovery "+secs(recovery),
		fmt.Sprintf("killed replica's observers left presence after %s (bound 60s, TTL 45s); presence frames online:false for them since the kill: %d", secs(pr.after), offline),
		c.NginxStats())
	res.check(t)
}

// TestRedisRestart restarts Redis (no persistence: every key is gone)
// while every device sends. Messages published while it was down are
// missed by the other replica and refilled from the database once its
// subscriptions are back; a send repeated after the restart collapses
// onto the original through the database's unique key (the Redis dedup
// key is gone); presence, wiped with the keys, comes back through the
// replicas' heartbeat (every TTL/3 = 15 s).
func TestRedisRestart(t *testing.T) {
	requireFaults(t)
	start := time.Now()
	c := startCluster(t, testkit.Options{Replicas: 2, Nginx: true})
	l := newLoad(t, c, loadOptions{})
	l.spread(t, 2)
	l.start()
	time.Sleep(2 * time.Second)

	// The same client_msg_id before the restart (from u0's /ws/{chat_id}
	// device) and after it (from u0's /ws device).
	first, again := l.devices[1], l.devices[0]
	dupID := l.run + "-dedup"
	before, err := first.sendAndWait(dupID, l.group)
	if err != nil || before.code != "" || before.dup {
		t.Fatalf("first send of %s: %+v, %v", dupID, before, err)
	}

	faultAt := time.Now()
	if err := testkit.RedisStop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := testkit.RedisStart(); err != nil {
		t.Fatal(err)
	}
	upAt := l.markFault() // recovery counts from Redis being back
	outage := upAt.Sub(faultAt)

	// Presence right after the restart, then until every user is back,
	// on every replica.
	presenceRight := -1
	if on, err := presence(context.Background(), l.clientAt(t, c.Replicas[0].URL, l.users[0]), l.group); err == nil {
		presenceRight = len(on)
	}
	ready, err := c.WaitReady(http.StatusOK, 20*time.Second)
	if err != nil {
		t.Error(err)
	}

	after, err := again.sendAndWait(dupID, l.group)
	switch {
	case err != nil:
		t.Errorf("repeat of %s after the restart: %v", dupID, err)
	case after.code != "" || !after.dup || after.seq != before.seq || after.id != before.id:
		t.Errorf("repeat of %s after the restart: got %+v, want duplicate:true of seq %d id %d", dupID, after, before.seq, before.id)
	}
	code, body, viaREST, err := sendREST(context.Background(), l.users[0].c, l.group, dupID, "the same send, over REST")
	switch {
	case err != nil:
		t.Errorf("REST repeat of %s: %v", dupID, err)
	case code != http.StatusOK || viaREST == nil:
		t.Errorf("REST repeat of %s: got status %d %s, want 200 with the original message", dupID, code, body)
	case viaREST.ID != before.id || viaREST.Seq != before.seq:
		t.Errorf("REST repeat of %s: got id %d seq %d, want the original id %d seq %d", dupID, viaREST.ID, viaREST.Seq, before.id, before.seq)
	}

	var presenceBack time.Duration
	perReplica := make([]*client.Client, len(c.Replicas))
	for i, r := range c.Replicas {
		perReplica[i] = l.clientAt(t, r.URL, l.users[0])
	}
	err = testkit.WaitFor(30*time.Second, func() bool {
		for _, rc := range perReplica {
			on, err := presence(context.Background(), rc, l.group)
			if err != nil {
				return false
			}
			for _, u := range l.users {
				if !on[u.ID] {
					return false
				}
			}
		}
		return true
	})
	presenceBack = time.Since(upAt)
	if err != nil {
		t.Errorf("presence not rebuilt on every replica %s after Redis came back", secs(presenceBack))
	}

	res, recovery := l.finish(t, ending{recoverWithin: 20 * time.Second, sendUntil: faultAt.Add(8 * time.Second)})
	report(t, "redis-restart", start, res,
		fmt.Sprintf("Redis down %s", secs(outage)),
		"replicas ready again after "+secs(ready),
		"recovery "+secs(recovery)+" after Redis was back",
		fmt.Sprintf("the same client_msg_id before and after: one row (seq %d), duplicate ack over WebSocket and 200 over REST", before.seq),
		fmt.Sprintf("%d publishes failed while Redis was down (delivered on their own replica), %d broker resubscriptions refilled the other replica from the database",
			c.LogCount(`"event":"broker.error"`, `"op":"publish"`), c.LogCount(`"event":"broker.resubscribed"`)),
		fmt.Sprintf("presence right after the restart %d of %d users, all back on every replica after %s", presenceRight, len(l.users), secs(presenceBack)),
		c.NginxStats())
	res.check(t)
}

// TestPostgresOutage stops Postgres for a few seconds while every device
// sends. Sends meanwhile get error frames with code unavailable and no
// ack, and none of them is stored; /readyz answers 503 on every replica
// and 200 again after; sending resumes by itself; history holds exactly
// the acknowledged messages, with no gap in seq.
func TestPostgresOutage(t *testing.T) {
	requireFaults(t)
	start := time.Now()
	c := startCluster(t, testkit.Options{Replicas: 2, Nginx: true})
	l := newLoad(t, c, loadOptions{})
	l.spread(t, 2)

	// A send cut off by Postgres's shutdown (SQLSTATE 57P01) must be
	// answered "unavailable", never "internal": no tolerance here.
	var stopBegan, stopEnded time.Time
	l.start()
	time.Sleep(2 * time.Second)

	// /readyz, polled from the start of the stop until every replica says 503.
	notReadyc := make(chan string, 1)
	l.mu.Lock()
	stopBegan = time.Now()
	l.mu.Unlock()
	go func() {
		d, err := c.WaitReady(http.StatusServiceUnavailable, 20*time.Second)
		if err != nil {
			notReadyc <- err.Error()
			return
		}
		notReadyc <- secs(d)
	}()
	if err := testkit.PostgresStop(); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	stopEnded = time.Now()
	stoppedAt := stopEnded
	l.mu.Unlock()
	notReady := <-notReadyc
	if !strings.HasSuffix(notReady, "s") {
		t.Error(notReady)
	}
	sleepUntil(stoppedAt.Add(1500 * time.Millisecond))
	upAt := l.markFault()
	if err := testkit.PostgresStart(); err != nil {
		t.Fatal(err)
	}
	startedAt := time.Now()
	readyAgain, err := c.WaitReady(http.StatusOK, 30*time.Second)
	if err != nil {
		t.Error(err)
	}
	res, recovery := l.finish(t, ending{recoverWithin: 30 * time.Second, sendUntil: startedAt.Add(4 * time.Second)})

	// Sends first made while the database was down: refused with
	// unavailable, none acked; every device's sends go through again.
	l.mu.Lock()
	var during, refused, ackedAnyway int
	resumed := map[*device]bool{}
	for cmid, r := range l.sent {
		a, acked := l.acked[cmid]
		if r.first.After(stoppedAt) && r.first.Before(upAt) {
			during++
			if f, ok := l.failed[cmid]; ok && f.code == "unavailable" {
				refused++
			}
			if acked {
				ackedAnyway++
			}
		}
		if acked && r.first.After(startedAt) {
			resumed[a.dev] = true
		}
	}
	l.mu.Unlock()
	if during == 0 || refused != during {
		t.Errorf("of %d sends made while the database was down, %d were refused with unavailable, want all", during, refused)
	}
	if ackedAnyway > 0 {
		t.Errorf("%d sends made while the database was down were acked", ackedAnyway)
	}
	for _, d := range l.devices {
		if !resumed[d] {
			t.Errorf("%s: no send acked after the database came back", d.name)
		}
	}
	report(t, "postgres-outage", start, res,
		fmt.Sprintf("Postgres unavailable %s (pg_ctlcluster stop -m fast took %s, then down %s, start took %s)",
			secs(startedAt.Sub(stopBegan)), secs(stoppedAt.Sub(stopBegan)), secs(upAt.Sub(stoppedAt)), secs(startedAt.Sub(upAt))),
		fmt.Sprintf("%d sends while down: %d refused with unavailable, %d acked", during, refused, ackedAnyway),
		fmt.Sprintf("/readyz 503 on every replica %s after the stop began, 200 again %s after the start", notReady, secs(readyAgain)),
		"recovery "+secs(recovery)+" after the start",
		fmt.Sprintf("sending resumed on %d of %d devices", len(resumed), len(l.devices)),
		// Batches whose COMMIT answer the shutdown cut off: settled from the
		// database once it answered (stored sends acked, the rest refused).
		fmt.Sprintf("%d batches' commit answers lost, settled from the database", c.LogCount(`"event":"message.in_doubt"`, `outcome known`)),
		c.NginxStats())
	res.check(t)
}

// TestRollingRestart restarts both replicas one after the other with
// SIGTERM, as a deployment does. Each closes its WebSockets with 1001; the
// devices reconnect through nginx to the other replica and resume with
// since_seq; the replica drains and exits, starts again on its port, and
// takes the connections of the next one.
func TestRollingRestart(t *testing.T) {
	requireFaults(t)
	start := time.Now()
	c := startCluster(t, testkit.Options{Replicas: 2, Nginx: true})
	l := newLoad(t, c, loadOptions{})
	l.spread(t, 3)
	l.start()
	time.Sleep(2 * time.Second)

	var steps []string
	var worst time.Duration
	for _, r := range c.Replicas {
		name := r.Name()
		moving := l.on(name)
		faultAt := l.markFault()
		r.Signal(syscall.SIGTERM)
		if !r.Wait(30 * time.Second) {
			t.Fatalf("windi-%d did not exit within 30 s of SIGTERM", r.Index)
		}
		exited := time.Since(faultAt)
		recovery, err := l.waitRecovered(20 * time.Second)
		if err != nil {
			t.Error(err)
		}
		worst = max(worst, recovery)
		var with1001 int
		for _, d := range moving {
			cl := d.closesOn(name, faultAt)
			if len(cl) == 1 && cl[0].code == 1001 {
				with1001++
			} else {
				t.Errorf("%s: its connections to windi-%d ended with %+v, want one close with 1001", d.name, r.Index, cl)
			}
		}
		restartAt := time.Now()
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		restarted := time.Since(restartAt)
		// nginx marked the replica failed (its 503s while draining, its
		// refused connects while down) and tries it again only after
		// fail_timeout (10 s); a rollout waits until the proxy sends it
		// traffic again before it stops the next replica.
		routed, err := c.WaitRouted(r, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, fmt.Sprintf("windi-%d: %d/%d connections closed with 1001, exited after %s, devices recovered in %s, restarted in %s, back in nginx's rotation after %s",
			r.Index, with1001, len(moving), secs(exited), secs(recovery), secs(restarted), secs(routed)))
		time.Sleep(time.Second)
	}
	res, _ := l.finish(t, ending{})
	report(t, "rolling-restart", start, res, append(steps, "recovery "+secs(worst)+" (worst step)", c.NginxStats())...)
	res.check(t)
}
