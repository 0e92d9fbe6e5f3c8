// Command bot answers in a WinDI Chat chat: to every message from someone
// else that starts with "!ping" it replies "pong", and to "!echo TEXT" it
// replies TEXT. It runs until interrupted, riding out reconnects and the
// loss of a replica; it stops when the server ends the session for good
// (4401 revoked, 4403 removed from the chat, or an expired token it cannot
// renew).
//
//	go run ./examples/bot -url http://localhost:8000 -email bob@windi.test -password bob-demo-pass -chat 2
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

func main() {
	base := flag.String("url", "http://localhost:8000", "server base URL")
	email := flag.String("email", "", "the bot's account email")
	password := flag.String("password", "", "the bot's account password")
	chatID := flag.Int64("chat", 0, "the chat to answer in")
	flag.Parse()
	if *email == "" || *password == "" || *chatID == 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *base, *email, *password, *chatID); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, base, email, password string, chatID int64) error {
	// The TokenFunc logs in again when the server says the token expired
	// (4501), so the bot outlives its tokens.
	login := func(ctx context.Context) (string, error) {
		c, err := client.New(base)
		if err != nil {
			return "", err
		}
		tok, err := c.Login(ctx, email, password)
		if err != nil {
			return "", err
		}
		return tok.AccessToken, nil
	}
	first, err := login(ctx)
	if err != nil {
		return err
	}
	var mu sync.Mutex // guards current: the Conn and REST calls ask for tokens
	current := first
	c, err := client.New(base, client.WithTokenFunc(func(ctx context.Context, expired bool) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if expired {
			tok, err := login(ctx)
			if err != nil {
				return "", err
			}
			current = tok
		}
		return current, nil
	}))
	if err != nil {
		return err
	}
	me, err := c.Me(ctx)
	if err != nil {
		return err
	}

	replies := make(chan rest.Message, 100)
	conn, err := c.Dial(ctx, client.Config{
		ChatID: chatID,
		OnMessage: func(m rest.Message) {
			if m.SenderID == me.ID {
				return // our own replies come back too
			}
			select {
			case replies <- m:
			default:
				log.Printf("too busy: not answering seq %d", m.Seq)
			}
		},
		OnState: func(s client.State, err error) {
			if err != nil {
				log.Printf("%s: %v", s, err)
			} else {
				log.Printf("%s", s)
			}
		},
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	log.Printf("%s answers in chat %d", me.Name, chatID)

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-conn.Done():
			return conn.Err() // e.g. "windi: connection closed with 4403 removed from the chat"
		case m := <-replies:
			answer, ok := reply(m.Text)
			if !ok {
				continue
			}
			p, err := conn.Send(chatID, answer)
			if err != nil {
				return err
			}
			// Wait for the ack off the loop so one slow answer holds up nothing.
			go func(seq int64) {
				wctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				ack, err := p.Wait(wctx)
				var fe *client.FrameError
				switch {
				case errors.As(err, &fe):
					log.Printf("reply to seq %d refused: %s", seq, fe.Code)
				case err != nil:
					log.Printf("reply to seq %d: %v", seq, err)
				default:
					log.Printf("replied to seq %d with seq %d", seq, ack.Message.Seq)
				}
			}(m.Seq)
		}
	}
}

// reply is the bot's answer to text, if any.
func reply(text string) (string, bool) {
	switch {
	case strings.HasPrefix(text, "!ping"):
		return "pong", true
	case strings.HasPrefix(text, "!echo "):
		if s := strings.TrimSpace(strings.TrimPrefix(text, "!echo ")); s != "" {
			return s, true
		}
	}
	return "", false
}
