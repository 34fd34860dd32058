package nkv

import (
	"context"
	"errors"
	"sort"
	"strings"
)

// The ephemeral keys a client holds, and how it takes them back after a
// reconnection.
//
// An ephemeral key belongs to the connection that wrote it; when that
// connection ends, the server deletes the key after the grace period the
// PUT gave, unless an ephemeral PUT of the key comes first (protocol.md
// section 7). So on every new connection, before anything else is sent on
// it (subscriptions resume after), the client puts each key it holds again:
// the same value and grace, with the condition "revision equals the
// revision of my last ephemeral PUT", so that it never overwrites a write
// someone else made meanwhile. A key whose re-assertion the server refuses
// (someone wrote or deleted it, the grace period ran out, the server
// restarted) is no longer held; nor is a key the program writes or deletes
// plainly (Put, Delete, a DeletePrefix or Txn covering it), which makes it
// an ordinary key on the server too.
//
// A key is recorded when its PUT_OK is handled, on the reader goroutine
// under conn.mu (call.onAnswer): the connection cannot be declared lost,
// and so no reconnection can take its snapshot of the holdings, between
// the two. Forgetting after a plain write happens once its caller has the
// answer; a reconnection in between is harmless, because the
// re-assertion's revision condition then fails on the server.

// heldKey is an ephemeral key the client holds.
type heldKey struct {
	value   []byte
	graceMs uint32
	// revision of the client's last ephemeral PUT of the key.
	revision uint64
}

// claim returns the onAnswer hook of an ephemeral PUT of key: on PUT_OK
// the client holds the key.
func (c *Client) claim(key string, value []byte, graceMs uint32) func(callResult) {
	return func(r callResult) {
		if r.err != nil {
			return
		}
		c.hmu.Lock()
		defer c.hmu.Unlock()
		if c.held == nil {
			c.held = make(map[string]heldKey)
		}
		c.held[key] = heldKey{value: value, graceMs: graceMs, revision: r.val.(uint64)}
	}
}

// disownKey: the program wrote or deleted key plainly.
func (c *Client) disownKey(key string) {
	c.hmu.Lock()
	delete(c.held, key)
	c.hmu.Unlock()
}

// disownPrefix: the program deleted prefix and every key it covers.
func (c *Client) disownPrefix(prefix string) {
	c.hmu.Lock()
	for key := range c.held {
		if covers(prefix, key) {
			delete(c.held, key)
		}
	}
	c.hmu.Unlock()
}

// disownAll: the client closed, or lost its connection with reconnection
// off; the server deletes its ephemeral keys. Called once the connection
// is dead (so no PUT_OK of it can be recorded after).
func (c *Client) disownAll() {
	c.hmu.Lock()
	c.held = nil
	c.hmu.Unlock()
}

// covers reports whether a prefix delete of prefix deletes key: the prefix
// key itself and the keys below it, segment by segment ("a" covers "a" and
// "a.x", not "ab"); "" covers every key.
func covers(prefix, key string) bool {
	if prefix == "" || key == prefix {
		return true
	}
	return strings.HasPrefix(key, prefix) && key[len(prefix)] == '.'
}

// EphemeralKeys returns the keys this client holds as ephemeral keys, in
// key order: written with PutEphemeral and not given up since (see
// PutEphemeral). Empty once the client is closed.
func (c *Client) EphemeralKeys() []string {
	c.hmu.Lock()
	keys := make([]string, 0, len(c.held))
	for k := range c.held {
		keys = append(keys, k)
	}
	c.hmu.Unlock()
	sort.Strings(keys)
	return keys
}

// reassert puts every held key again on cn, a new connection not yet
// handed to callers (so these PUTs go before anything else on it), in key
// order. The answers are handled by reclaimed. It stops early when cn
// died meanwhile or ctx ended (the client is closing); the keys not sent
// stay held, for the next connection.
func (c *Client) reassert(ctx context.Context, cn *conn) {
	type item struct {
		key string
		h   heldKey
	}
	c.hmu.Lock()
	items := make([]item, 0, len(c.held))
	for k, h := range c.held {
		items = append(items, item{k, h})
	}
	c.hmu.Unlock()
	sort.Slice(items, func(i, j int) bool { return items[i].key < items[j].key })
	for _, it := range items {
		key, h := it.key, it.h
		cl := &call{typ: typePut, cb: func(callResult) {}}
		cl.onAnswer = func(r callResult) { c.reclaimed(key, h.revision, r) }
		cn.mu.Lock()
		if cn.dead {
			cn.mu.Unlock()
			return
		}
		id := cn.allocID()
		cn.pending[id] = cl
		cn.mu.Unlock()
		_, err := cn.queue(ctx, id, typePut, func(e *encoder) {
			e.u8(condRevision)
			e.u64(h.revision)
			e.str16(key)
			e.bytes32(h.value)
			e.u8(putFlagEphemeral)
			e.u32(h.graceMs)
		})
		switch {
		case err == nil:
		case errors.Is(err, errConnDead) || ctx.Err() != nil:
			return
		default:
			// It cannot be sent to this server (a smaller max_frame):
			// the key cannot be taken back.
			c.forgetHeld(key, h.revision)
		}
	}
}

// reclaimed handles the answer to a re-assertion of key made with the
// condition revision == rev (reader goroutine, under conn.mu).
func (c *Client) reclaimed(key string, rev uint64, r callResult) {
	if r.err != nil {
		// CONDITION_FAILED: someone else wrote or deleted it, or it is
		// gone. Any other refusal also means the key is not ours.
		c.forgetHeld(key, rev)
		return
	}
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if h, ok := c.held[key]; ok && h.revision == rev {
		h.revision = r.val.(uint64)
		c.held[key] = h
	}
}

// forgetHeld forgets key if the client still holds it from the ephemeral
// PUT at rev (not from a later one).
func (c *Client) forgetHeld(key string, rev uint64) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if h, ok := c.held[key]; ok && h.revision == rev {
		delete(c.held, key)
	}
}
