package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Config is one load run.
type Config struct {
	URLs     []string // server base URLs; connections and users round-robin over them
	Scenario string   // private, group or idle

	Chats   int // private: number of private chats (pairs of users)
	Members int // group: members of the one group, creator included
	Senders int // sending connections; 0 = scenario default
	Users   int // idle: users the connections belong to; 0 = min(conns, 100)
	Conns   int // idle: connections to open
	Devices int // private, group: connections per user

	AllChatsRatio float64 // share of connections on /ws (the rest on /ws/{chat_id})

	Rate     float64       // messages/s in total; 0 = as fast as acks allow
	Open     bool          // open loop: sends on a fixed schedule, latency from the scheduled time
	CPUPIDs  []int         // processes whose CPU time the send phase is charged (servers, their database and broker)
	Window   int           // sends in flight per sender
	Duration time.Duration // send (or hold) phase
	Size     int           // message text bytes
	Mix      float64       // share of operations that edit or react to an own message instead of sending
	Grace    time.Duration // longest wait for outstanding acks and deliveries

	SetupConcurrency int
	DialConcurrency  int
	AllowErrors      bool // error frames do not fail the run

	// Log receives progress lines; nil discards them.
	Log func(format string, args ...any) `json:"-"`
}

// DefaultConfig is what the flags default to.
func DefaultConfig() Config {
	return Config{
		URLs: []string{"http://127.0.0.1:8000"}, Scenario: "group",
		Chats: 10, Members: 10, Devices: 1, Conns: 1000,
		AllChatsRatio: 0.5, Rate: 100, Window: 1, Duration: 10 * time.Second,
		Size: 100, Grace: 5 * time.Second, SetupConcurrency: 8, DialConcurrency: 32,
	}
}

// minSize fits the two send timestamps (nanoseconds, up to 19 digits
// each) and their spaces.
const minSize = 40

// normalize checks cfg and fills scenario defaults.
func (c *Config) normalize() error {
	if len(c.URLs) == 0 {
		return errors.New("-url: at least one base URL")
	}
	for i, u := range c.URLs {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("-url: %q is not an http(s) base URL", u)
		}
		c.URLs[i] = strings.TrimRight(p.String(), "/")
	}
	switch c.Scenario {
	case "private":
		if c.Chats < 1 {
			return errors.New("-chats: at least 1")
		}
		if c.Senders == 0 {
			c.Senders = c.Chats
		}
	case "group":
		if c.Members < 2 || c.Members > 1000 {
			return errors.New("-members: 2..1000 (SPEC §5 caps a group at 1000)")
		}
		if c.Senders == 0 {
			c.Senders = min(10, c.Members)
		}
	case "idle":
		if c.Conns < 1 {
			return errors.New("-conns: at least 1")
		}
		if c.Users == 0 {
			c.Users = min(c.Conns, 100)
		}
		if c.Users < 1 || c.Users > 1000 {
			return errors.New("-users: 1..1000 (the idle users share one group)")
		}
		c.Senders = 0
	default:
		return fmt.Errorf("-scenario: %q is not private, group or idle", c.Scenario)
	}
	if c.Scenario != "idle" {
		if c.Devices < 1 {
			return errors.New("-devices: at least 1")
		}
		if c.Senders < 0 || c.Senders > c.conns() {
			return fmt.Errorf("-senders: 0..%d (the connections of this scenario)", c.conns())
		}
	}
	if c.AllChatsRatio < 0 || c.AllChatsRatio > 1 {
		return errors.New("-ws-all: a share between 0 and 1")
	}
	if c.Rate < 0 {
		return errors.New("-rate: not negative")
	}
	if c.Open && c.Rate <= 0 {
		return errors.New("-open: needs -rate (the schedule's messages/s)")
	}
	if c.Window < 1 {
		return errors.New("-window: at least 1")
	}
	if c.Duration <= 0 {
		return errors.New("-duration: positive")
	}
	if c.Mix < 0 || c.Mix > 0.5 {
		return errors.New("-mix: a share between 0 and 0.5")
	}
	if c.Mix > 0 && c.Scenario == "idle" {
		return errors.New("-mix: not for the idle scenario")
	}
	if c.Size < minSize || c.Size > 4096 {
		return fmt.Errorf("-size: %d..4096 bytes", minSize)
	}
	if c.Grace < 0 {
		return errors.New("-grace: not negative")
	}
	c.SetupConcurrency = max(c.SetupConcurrency, 1)
	c.DialConcurrency = max(c.DialConcurrency, 1)
	return nil
}

// users is how many users the scenario registers.
func (c *Config) users() int {
	switch c.Scenario {
	case "private":
		return 2 * c.Chats
	case "group":
		return c.Members
	}
	return c.Users
}

// conns is how many WebSocket connections the scenario opens.
func (c *Config) conns() int {
	if c.Scenario == "idle" {
		return c.Conns
	}
	return c.users() * c.Devices
}

// reportConfig is the configuration as the JSON report shows it.
type reportConfig struct {
	URLs             []string `json:"urls"`
	Scenario         string   `json:"scenario"`
	Chats            int      `json:"chats,omitempty"`
	Members          int      `json:"members,omitempty"`
	Users            int      `json:"users"`
	Conns            int      `json:"conns"`
	Devices          int      `json:"devices,omitempty"`
	Senders          int      `json:"senders"`
	AllChatsRatio    float64  `json:"ws_all"`
	Rate             float64  `json:"rate"`
	Open             bool     `json:"open_loop"`
	CPUPIDs          []int    `json:"cpu_pids,omitempty"`
	Window           int      `json:"window"`
	DurationS        float64  `json:"duration_s"`
	Size             int      `json:"size"`
	Mix              float64  `json:"mix,omitempty"`
	GraceS           float64  `json:"grace_s"`
	SetupConcurrency int      `json:"setup_concurrency"`
	DialConcurrency  int      `json:"dial_concurrency"`
	AllowErrors      bool     `json:"allow_errors"`
}

func (c *Config) report() reportConfig {
	r := reportConfig{
		URLs: c.URLs, Scenario: c.Scenario, Users: c.users(), Conns: c.conns(), Senders: c.Senders,
		AllChatsRatio: c.AllChatsRatio, Rate: c.Rate, Open: c.Open, CPUPIDs: c.CPUPIDs, Window: c.Window, DurationS: c.Duration.Seconds(),
		Size: c.Size, Mix: c.Mix, GraceS: c.Grace.Seconds(), SetupConcurrency: c.SetupConcurrency,
		DialConcurrency: c.DialConcurrency, AllowErrors: c.AllowErrors,
	}
	switch c.Scenario {
	case "private":
		r.Chats, r.Devices = c.Chats, c.Devices
	case "group":
		r.Members, r.Devices = c.Members, c.Devices
	}
	return r
}
