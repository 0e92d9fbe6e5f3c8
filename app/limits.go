package app

import (
	"fmt"
	"strconv"
)

// Limits are the abuse limits (SPEC §7). Zero turns a limit off.
type Limits struct {
	LoginPerEmail   int     // WINDI_LOGIN_LIMIT_EMAIL: login attempts per email per minute
	LoginPerIP      int     // WINDI_LOGIN_LIMIT_IP: login attempts per client IP per minute
	RegisterPerIP   int     // WINDI_REGISTER_LIMIT_IP: registrations per client IP per minute
	SendRate        float64 // WINDI_SEND_RATE: message.send frames per second per connection
	SendBurst       int     // WINDI_SEND_BURST: burst allowance of the above
	UserSendRate    int     // WINDI_USER_SEND_RATE: REST sends per second per user
	MaxConnsPerUser int     // WINDI_MAX_CONNS_PER_USER: open WebSockets per user on one replica
	MaxConns        int     // WINDI_MAX_CONNS: open WebSockets on one replica, all users together
}

// limitVars document the limits for --help; they follow EnvVars there.
var limitVars = []EnvVar{
	{"WINDI_LOGIN_LIMIT_EMAIL", "10", "login attempts per email per minute, shared by replicas (0: off)"},
	{"WINDI_LOGIN_LIMIT_IP", "120", "login attempts per client IP (IPv6: per /64) per minute, shared by replicas (0: off)"},
	{"WINDI_REGISTER_LIMIT_IP", "20", "registrations per client IP (IPv6: per /64) per minute, shared by replicas (0: off)"},
	{"WINDI_SEND_RATE", "20", "message.send frames per second per WebSocket connection (0: off)"},
	{"WINDI_SEND_BURST", "200", "burst of message.send frames per connection"},
	{"WINDI_USER_SEND_RATE", "200", "REST message sends per second per user, shared by replicas (0: off)"},
	{"WINDI_MAX_CONNS_PER_USER", "64", "open WebSocket connections per user on one replica (0: off)"},
	{"WINDI_MAX_CONNS", "10000", "open WebSocket connections on one replica, all users together (0: off)"},
}

func init() { EnvVars = append(EnvVars, limitVars...) }

func loadLimits(get func(string) string) (Limits, error) {
	ints := map[string]*int{}
	var l Limits
	ints["WINDI_LOGIN_LIMIT_EMAIL"] = &l.LoginPerEmail
	ints["WINDI_LOGIN_LIMIT_IP"] = &l.LoginPerIP
	ints["WINDI_REGISTER_LIMIT_IP"] = &l.RegisterPerIP
	ints["WINDI_MAX_CONNS"] = &l.MaxConns
	ints["WINDI_SEND_BURST"] = &l.SendBurst
	ints["WINDI_USER_SEND_RATE"] = &l.UserSendRate
	ints["WINDI_MAX_CONNS_PER_USER"] = &l.MaxConnsPerUser
	for _, v := range limitVars {
		raw := get(v.Name)
		if p, ok := ints[v.Name]; ok {
			n, err := strconv.Atoi(raw)
			if err != nil || n < 0 {
				return Limits{}, fmt.Errorf("%s: %q is not a non-negative integer", v.Name, raw)
			}
			*p = n
			continue
		}
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil || f < 0 {
			return Limits{}, fmt.Errorf("%s: %q is not a non-negative number", v.Name, raw)
		}
		l.SendRate = f
	}
	if l.SendRate > 0 && l.SendBurst < 1 {
		return Limits{}, fmt.Errorf("WINDI_SEND_BURST: must be at least 1 when WINDI_SEND_RATE is on")
	}
	return l, nil
}
