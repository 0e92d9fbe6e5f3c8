package app_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
)

// metricValue returns the value of the sample whose line starts with name
// (including labels), or -1.
func metricValue(body, name string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func scrape(t *testing.T, s *apptest.Server) string {
	t.Helper()
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(b)
}

// TestMetricsMoveWithTraffic drives real traffic and checks the counters.
func TestMetricsMoveWithTraffic(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		before := scrape(t, s)
		for _, name := range []string{"windi_messages_stored_total", "windi_deliveries_total", "windi_duplicates_total", "windi_ws_connections"} {
			if metricValue(before, name) != 0 {
				t.Errorf("%s starts at %v, want 0", name, metricValue(before, name))
			}
		}
		if !strings.Contains(before, "go_goroutines") || !strings.Contains(before, "process_resident_memory_bytes") {
			t.Error("Go runtime or process metrics missing")
		}
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		var body rest.CreateChatRequest
		_ = body.FromCreatePrivateChat(rest.CreatePrivateChat{Type: rest.CreatePrivateChatTypePrivate, UserID: bob.ID})
		cr, _ := s.Client.CreateChatWithResponse(t.Context(), body, alice.Auth())
		chatID := cr.JSON201.ID
		w := s.DialWS(t, fmt.Sprintf("/ws/%d", chatID), bob.Token)
		time.Sleep(200 * time.Millisecond)
		for i := range 3 {
			s.Client.SendMessageWithResponse(t.Context(), chatID, rest.SendMessageRequest{ClientMsgID: fmt.Sprintf("m%d", i), Text: "hi"}, alice.Auth())
		}
		s.Client.SendMessageWithResponse(t.Context(), chatID, rest.SendMessageRequest{ClientMsgID: "m0", Text: "hi"}, alice.Auth())
		for range 3 {
			w.Until(t, "message.new", 5*time.Second)
		}
		after := scrape(t, s)
		for name, want := range map[string]float64{
			"windi_messages_stored_total":          3,
			"windi_duplicates_total":               1,
			"windi_deliveries_total":               3,
			"windi_ws_connections":                 1,
			"windi_ws_connections_opened_total":    1,
			"windi_delivery_latency_seconds_count": 3,
			`windi_http_requests_total{method="POST",route="/chats/:chat_id/messages",status="201"}`: 3,
			`windi_http_requests_total{method="POST",route="/chats/:chat_id/messages",status="200"}`: 1,
			`windi_http_requests_total{method="POST",route="/register",status="201"}`:                2,
		} {
			if got := metricValue(after, name); got != want {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
		}
		if got := metricValue(after, `windi_broker_errors_total{op="publish"}`); got != 0 {
			t.Errorf("broker publish errors = %v, want 0 exported", got)
		}
		w.Close()
		deadline := time.Now().Add(5 * time.Second)
		for metricValue(scrape(t, s), "windi_ws_connections") != 0 {
			if time.Now().After(deadline) {
				t.Fatal("connection gauge did not return to 0 after close")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// TestLogsHoldNoSecrets runs the key events with distinctive secrets and
// checks that no token, password or message text reaches the logs, while
// the events themselves are logged with their ids.
func TestLogsHoldNoSecrets(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		secretText := "TOP-SECRET-TEXT-" + apptest.RandomID()
		s.Do(t, "POST", "/login", "application/x-www-form-urlencoded", apptest.Form("username", alice.Email, "password", "WRONG-PASSWORD-"+apptest.RandomID()), "")
		var body rest.CreateChatRequest
		_ = body.FromCreatePrivateChat(rest.CreatePrivateChat{Type: rest.CreatePrivateChatTypePrivate, UserID: bob.ID})
		cr, _ := s.Client.CreateChatWithResponse(t.Context(), body, alice.Auth())
		chatID := cr.JSON201.ID
		w := s.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token) // token in ?token=
		w.Send(t, map[string]any{"type": "message.send", "client_msg_id": "c1", "text": secretText})
		w.Until(t, "message.ack", 5*time.Second)
		s.Client.SendMessageWithResponse(t.Context(), chatID, rest.SendMessageRequest{ClientMsgID: "c2", Text: secretText}, alice.Auth())
		s.Do(t, "GET", "/chats?token="+alice.Token, "", nil, alice.Token)
		w.Close()
		time.Sleep(200 * time.Millisecond)

		logs := s.Logs.String()
		for what, secret := range map[string]string{
			"token": alice.Token, "token signature": alice.Token[strings.LastIndex(alice.Token, ".")+1:],
			"password": alice.Password, "wrong password": "WRONG-PASSWORD-", "message text": secretText,
		} {
			if strings.Contains(logs, secret) {
				t.Errorf("the logs contain the %s", what)
			}
		}
		for _, event := range []string{"user.registered", "login.ok", "login.failed", "chat.created", "message.stored",
			"ws.opened", "ws.closed", "http.request"} {
			if !strings.Contains(logs, `"event":"`+event+`"`) {
				t.Errorf("event %s not logged", event)
			}
		}
		if !strings.Contains(logs, `"request_id":"`) || !strings.Contains(logs, `"message_id":`) || !strings.Contains(logs, `"conn_id":`) {
			t.Error("logs lack request_id, message_id or conn_id")
		}
	})
}
