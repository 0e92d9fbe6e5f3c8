package broker

import (
	"strconv"
	"strings"
)

// keyspace maps the callers' logical channel and key names to Redis names.
//
// On a single server (tagged false) the names are the prefix followed by
// the logical name, as they always were, so replicas of an older version
// and of this one still meet on the same channels during a rolling
// upgrade.
//
// In cluster mode (tagged true) every name carries a hash tag, the part in
// braces that Redis Cluster hashes to pick the slot, so what belongs to one
// chat or one user lives on one slot, and so on one shard:
//
//	channel  "chat:12"            -> "<prefix>{chat:12}"
//	channel  "user:7"             -> "<prefix>{user:7}"
//	channel  any other name X     -> "<prefix>{X}"
//	claim    "dedup:12:7:abc"     -> "<prefix>dedup:{chat:12}:7:abc"
//	claim    any other key K      -> "<prefix>K" (one key, any slot)
//	presence of user 7            -> "<prefix>presence:{user:7}"
//	rate limit "login:email:x"    -> "<prefix>rl:{login:email:x}:<window>"
//
// The prefix itself must not contain braces in cluster mode, or it would
// become the hash tag of everything.
type keyspace struct {
	prefix string
	tagged bool
}

func (k keyspace) channel(c string) string {
	if k.tagged {
		return k.prefix + "{" + c + "}"
	}
	return k.prefix + c
}

func (k keyspace) claim(key string) string {
	if k.tagged {
		// "dedup:<chat>:<rest>": tag the chat so a chat's dedup keys live
		// with its channel.
		if rest, ok := strings.CutPrefix(key, "dedup:"); ok {
			if chat, tail, ok := strings.Cut(rest, ":"); ok && chat != "" {
				return k.prefix + "dedup:{chat:" + chat + "}:" + tail
			}
		}
	}
	return k.prefix + key
}

func (k keyspace) presence(userID int64) string {
	id := strconv.FormatInt(userID, 10)
	if k.tagged {
		return k.prefix + "presence:{user:" + id + "}"
	}
	return k.prefix + "presence:" + id
}

func (k keyspace) hit(key string, window int64) string {
	w := strconv.FormatInt(window, 10)
	if k.tagged {
		return k.prefix + "rl:{" + key + "}:" + w
	}
	return k.prefix + "rl:" + key + ":" + w
}

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// keySlot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of
// its hash tag, or of the whole key when it has none, modulo 16384. It is
// written here because go-redis keeps its copy in an internal package; the
// cluster tests check it against CLUSTER KEYSLOT.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % clusterSlots)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the
// checksum Redis Cluster uses for slots.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
