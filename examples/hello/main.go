// Command hello logs in to a WinDI Chat server and sends one message
// over REST: the smallest program on the Go SDK.
//
//	go run ./examples/hello -url http://localhost:8000 -email alice@windi.test -password alice-demo-pass -chat 1 -text hello
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

func main() {
	base := flag.String("url", "http://localhost:8000", "server base URL")
	email := flag.String("email", "", "account email")
	password := flag.String("password", "", "account password")
	chatID := flag.Int64("chat", 0, "chat id to send to")
	text := flag.String("text", "hello from the Go SDK", "message text")
	flag.Parse()
	if *email == "" || *password == "" || *chatID == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*base, *email, *password, *chatID, *text); err != nil {
		log.Fatal(err)
	}
}

func run(base, email, password string, chatID int64, text string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(base)
	if err != nil {
		return err
	}
	if _, err := c.Login(ctx, email, password); err != nil {
		return err // e.g. "windi: 401 unauthorized: …"
	}
	r, err := c.REST.SendMessageWithResponse(ctx, chatID, rest.SendMessageRequest{
		ClientMsgID: client.NewClientMsgID(),
		Text:        text,
	})
	if err != nil {
		return err
	}
	m := r.JSON201 // 201: stored now; 200: a repeat of the same client_msg_id
	if m == nil {
		m = r.JSON200
	}
	if m == nil {
		return client.ResponseError(r.HTTPResponse, r.Body)
	}
	fmt.Printf("sent seq %d to chat %d\n", m.Seq, m.ChatID)
	return nil
}
