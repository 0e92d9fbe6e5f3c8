// Command tail prints the last messages of a WinDI Chat chat, then every
// new one as it arrives, like tail -f. The history and the live stream
// meet without a gap or a repeat: the Conn starts at the last seq the
// history printed (Config.Since).
//
//	go run ./examples/tail -url http://localhost:8000 -email alice@windi.test -password alice-demo-pass -chat 2 -n 10
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

func main() {
	base := flag.String("url", "http://localhost:8000", "server base URL")
	email := flag.String("email", "", "account email")
	password := flag.String("password", "", "account password")
	chatID := flag.Int64("chat", 0, "chat to follow")
	n := flag.Int("n", 10, "how many earlier messages to print first (1..100)")
	flag.Parse()
	if *email == "" || *password == "" || *chatID == 0 || *n < 1 || *n > 100 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *base, *email, *password, *chatID, *n); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, base, email, password string, chatID int64, n int) error {
	c, err := client.New(base)
	if err != nil {
		return err
	}
	if _, err := c.Login(ctx, email, password); err != nil {
		return err
	}
	ch, err := c.REST.GetChatWithResponse(ctx, chatID)
	if err != nil {
		return err
	}
	if ch.JSON200 == nil {
		return client.ResponseError(ch.HTTPResponse, ch.Body) // 403 not a member, 404 no such chat
	}
	// The newest n messages: before_seq past the end pages backwards.
	var last int64
	if ch.JSON200.LastMessage != nil {
		last = ch.JSON200.LastMessage.Seq
	}
	history, err := c.History(ctx, chatID, &rest.GetHistoryParams{Limit: &n, BeforeSeq: ptr(last + 1)})
	if err != nil {
		return err
	}
	for _, m := range history {
		show(m)
	}
	if len(history) > 0 {
		last = history[len(history)-1].Seq
	}
	conn, err := c.Dial(ctx, client.Config{
		ChatID:    chatID,
		Since:     map[int64]int64{chatID: last},
		OnMessage: show,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	select {
	case <-ctx.Done():
		return nil
	case <-conn.Done():
		return conn.Err()
	}
}

func show(m rest.Message) {
	fmt.Printf("%s  #%d  user %d: %s\n", m.CreatedAt.Local().Format("15:04:05"), m.Seq, m.SenderID, m.Text)
}

func ptr[T any](v T) *T { return &v }
