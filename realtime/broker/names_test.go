package broker

import "testing"

func TestKeyspace(t *testing.T) {
	single := keyspace{prefix: "w:"}
	cluster := keyspace{prefix: "w:", tagged: true}
	for _, c := range []struct{ got, want string }{
		{single.channel("chat:12"), "w:chat:12"},
		{single.claim("dedup:12:7:abc"), "w:dedup:12:7:abc"},
		{single.presence(7), "w:presence:7"},
		{single.hit("login:email:x", 3), "w:rl:login:email:x:3"},
		{cluster.channel("chat:12"), "w:{chat:12}"},
		{cluster.channel("user:7"), "w:{user:7}"},
		{cluster.channel("session:ab"), "w:{session:ab}"},
		{cluster.claim("dedup:12:7:abc"), "w:dedup:{chat:12}:7:abc"},
		{cluster.claim("dedup:12:7:a:b"), "w:dedup:{chat:12}:7:a:b"},
		{cluster.claim("dedup::x"), "w:dedup::x"},
		{cluster.claim("other"), "w:other"},
		{cluster.presence(7), "w:presence:{user:7}"},
		{cluster.hit("login:email:x", 3), "w:rl:{login:email:x}:3"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	// A chat's channel and dedup keys share a slot; a user's channel and
	// presence key too.
	if keySlot(cluster.channel("chat:12")) != keySlot(cluster.claim("dedup:12:7:abc")) {
		t.Error("chat channel and dedup key in different slots")
	}
	if keySlot(cluster.channel("user:7")) != keySlot(cluster.presence(7)) {
		t.Error("user channel and presence key in different slots")
	}
	// Reference values (CLUSTER KEYSLOT on Redis 7.0).
	for key, want := range map[string]int{"123456789": 12739, "{chat:1}": 11659, "foo{bar}{zap}": keySlot("bar"), "a{}b": keySlot("a{}b")} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
}
