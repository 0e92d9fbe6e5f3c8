package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/windi-chat/windi/event"
	"github.com/windi-chat/windi/gen"
	"github.com/windi-chat/windi/realtime/broker"
)

// Broker is what the service needs of the broker the replicas share: it
// publishes what the service commits (package event's envelopes), holds the
// fast duplicate guard, knows who is online and counts rate-limit hits.
// broker.Broker satisfies it.
type Broker interface {
	Publish(ctx context.Context, channel string, payload []byte) error
	PublishMany(ctx context.Context, pubs []broker.Publication) error
	ClaimMany(ctx context.Context, keys []string, ttl time.Duration) ([]bool, error)
	Online(ctx context.Context, userIDs []int64) ([]int64, error)
	HitCounter
}

// publishRetry is how long a failed publication waits before its one
// retry. Receivers drop what they have delivered already, so publishing
// twice is harmless; what stays lost is repaired from the database by the
// receivers (at their next message of the chat, their periodic check, or
// the broker's resubscription).
const publishRetry = 20 * time.Millisecond

// publishMany publishes pubs, retrying once.
func (s *Service) publishMany(ctx context.Context, pubs []broker.Publication) {
	err := s.broker.PublishMany(ctx, pubs)
	if err != nil {
		s.metrics.BrokerError("publish")
		time.Sleep(publishRetry)
		err = s.broker.PublishMany(ctx, pubs)
	}
	if err != nil {
		s.metrics.BrokerError("publish")
		s.log.WarnContext(ctx, "broker publish failed; receivers repair from the database", "event", "broker.error", "op", "publish", "publications", len(pubs), "err", err)
	}
}

// publish sends one envelope to each channel.
func (s *Service) publish(ctx context.Context, env event.Envelope, channels ...string) {
	payload := env.Encode()
	pubs := make([]broker.Publication, len(channels))
	for i, ch := range channels {
		pubs[i] = broker.Publication{Channel: ch, Payload: payload}
	}
	s.publishMany(ctx, pubs)
}

// readMoved announces that userID's watermark moved to seq (userID 0: no
// reader's watermark to report) and, when chatRead is not nil, that the
// chat's lowest watermark advanced to *chatRead.
func (s *Service) readMoved(ctx context.Context, chatID, userID, seq int64, chatRead *int64) {
	var frames []json.RawMessage
	if userID != 0 {
		frames = append(frames, mustJSON(gen.MessageReadEventFrame{
			Type: gen.MessageReadEventFrameTypeMessageRead, ChatID: chatID, UserID: userID, Seq: seq,
		}))
	}
	if chatRead != nil {
		frames = append(frames, mustJSON(gen.ChatReadFrame{Type: gen.ChatRead, ChatID: chatID, Seq: *chatRead}))
	}
	if len(frames) > 0 {
		s.publish(ctx, event.Envelope{Kind: event.Forward, ChatID: chatID, Frames: frames}, event.ChatChannel(chatID))
	}
}

// memberAdded tells the chat's sockets, and the new member's all-chats
// sockets start following the chat.
func (s *Service) memberAdded(ctx context.Context, chatID, userID int64) {
	frame := mustJSON(gen.MemberAddedFrame{Type: gen.MemberAdded, ChatID: chatID, UserID: userID})
	frames := []json.RawMessage{frame}
	s.publish(ctx, event.Envelope{Kind: event.Forward, ChatID: chatID, UserID: userID, Frames: frames}, event.ChatChannel(chatID))
	s.publish(ctx, event.Envelope{Kind: event.Join, ChatID: chatID, UserID: userID, Frames: frames}, event.UserChannel(userID))
}

// memberRemoved goes to the chat's channel (every member hears of it) and
// to the removed user's own channel, so that each of the user's sockets
// hears it whichever chats it has indexed yet: one registered while the
// removal committed, or one whose join of the chat is still queued.
func (s *Service) memberRemoved(ctx context.Context, chatID, userID int64) {
	frame := mustJSON(gen.MemberRemovedFrame{Type: gen.MemberRemoved, ChatID: chatID, UserID: userID})
	env := event.Envelope{Kind: event.Removed, ChatID: chatID, UserID: userID, Frames: []json.RawMessage{frame}}
	s.publish(ctx, env, event.ChatChannel(chatID), event.UserChannel(userID))
}

// TypingEvery is how often a user's typing in a chat is relayed at most
// (SPEC §11.4); clients show the indicator for about 5 s.
const TypingEvery = 2 * time.Second

// Typing relays that userID is typing in chatID to the chat's other
// members' connections, across replicas, through the broker. Nothing is
// stored. At most one relay per user and chat every TypingEvery, shared by
// replicas (a claim in the broker that lives that long); the rest are
// dropped silently. Errors: CodeNotFound, CodeForbidden.
func (s *Service) Typing(ctx context.Context, userID, chatID int64) error {
	if _, _, err := s.authorize(ctx, userID, chatID); err != nil {
		return err
	}
	fresh, err := s.broker.ClaimMany(ctx, []string{fmt.Sprintf("typing:%d:%d", chatID, userID)}, TypingEvery)
	if err != nil {
		s.metrics.BrokerError("claim")
		return nil // typing is best effort
	}
	if !fresh[0] {
		return nil
	}
	frame := mustJSON(gen.TypingEventFrame{Type: gen.TypingEventFrameTypeTyping, ChatID: chatID, UserID: userID})
	s.publish(ctx, event.Envelope{Kind: event.Forward, ChatID: chatID, UserID: userID, Frames: []json.RawMessage{frame}}, event.ChatChannel(chatID))
	return nil
}
