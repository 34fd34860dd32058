package nkv

import (
	"context"
	"fmt"
	"time"
)

// Entry is a key with its value and the revision of its last write.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
}

// WriteResult is the answer to DeletePrefix and Txn.
type WriteResult struct {
	// Revision of the write; the current store revision when it changed
	// nothing.
	Revision uint64
	// Deleted counts the keys deleted.
	Deleted int
}

// CompactResult is the answer to Compact: the bytes of the store's data
// files before and after.
type CompactResult struct {
	BytesBefore uint64
	BytesAfter  uint64
}

type listOK struct {
	revision uint64
	count    uint32
}

// WriteOption is a condition on a Put, PutEphemeral or Delete
// (protocol.md section 7). A failed condition gives an *Error with
// CodeConditionFailed and the key's current Revision (0 when absent), and
// nothing is written.
type WriteOption func(*writeOpts)

type writeOpts struct {
	cond uint8
	rev  uint64
}

// IfAbsent makes the write happen only if the key does not exist.
func IfAbsent() WriteOption {
	return func(o *writeOpts) { o.cond, o.rev = condAbsent, 0 }
}

// IfRevision makes the write happen only if the key exists with this
// revision.
func IfRevision(rev uint64) WriteOption {
	return func(o *writeOpts) { o.cond, o.rev = condRevision, rev }
}

func writeOptions(opts []WriteOption) writeOpts {
	var o writeOpts
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Ping asks the server for a PONG. Since answers come in request order, a
// nil error also means every earlier request of this client has been
// answered.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.roundTrip(ctx, typePing, func(*encoder) {})
	return err
}

// Get returns the key's value and revision. An absent key gives an error
// matching ErrNotFound.
func (c *Client) Get(ctx context.Context, key string) (Entry, error) {
	r, err := c.roundTrip(ctx, typeGet, func(e *encoder) { e.str16(key) })
	if err != nil {
		return Entry{}, err
	}
	en := r.val.(Entry)
	en.Key = key
	return en, nil
}

// Put writes the key's value and returns the revision of the write. It
// makes an ephemeral key ordinary again: once it succeeds, this client no
// longer holds the key (see PutEphemeral).
func (c *Client) Put(ctx context.Context, key string, value []byte, opts ...WriteOption) (uint64, error) {
	o := writeOptions(opts)
	r, err := c.roundTrip(ctx, typePut, func(e *encoder) {
		e.u8(o.cond)
		e.u64(o.rev)
		e.str16(key)
		e.bytes32(value)
	})
	if err != nil {
		return 0, err
	}
	c.disownKey(key)
	return r.val.(uint64), nil
}

// PutEphemeral writes the key as an ephemeral key owned by this client's
// connection: when the connection ends (Close, a crash, a lost network),
// the server deletes the key after grace (rounded up to milliseconds; at
// most 10 minutes), unless an ephemeral put of the key takes it over
// within the grace period. With IfAbsent it is a leader claim.
//
// Once the server has applied the put, the client holds the key (as
// EphemeralKeys lists): after a reconnection it takes the key back by
// itself, before anything else on the new connection (subscriptions resume
// after), with an ephemeral put of the same value and grace on the
// condition that the key's revision is still the one of its last
// ephemeral put, so never over someone else's write. A grace period longer
// than the outage is what lets that work. The client stops holding the key
// when taking it back fails (someone else wrote or deleted it, the grace
// period ran out, the server restarted), when a Put, Delete, DeletePrefix
// or Txn of this client writes or deletes the key and succeeds (the key is
// then an ordinary one), and when the client closes or, with reconnection
// off, loses its connection.
func (c *Client) PutEphemeral(ctx context.Context, key string, value []byte, grace time.Duration, opts ...WriteOption) (uint64, error) {
	if grace < 0 {
		return 0, &Error{Code: CodeInvalidArgument, Message: "negative grace period"}
	}
	ms := (grace + time.Millisecond - 1) / time.Millisecond
	if ms > 0xFFFFFFFF {
		return 0, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("grace period %v is over %d ms", grace, maxGraceMs)}
	}
	o := writeOptions(opts)
	held := append([]byte{}, value...) // the caller may reuse value
	r, err := c.roundTripWith(ctx, typePut, c.claim(key, held, uint32(ms)), func(e *encoder) {
		e.u8(o.cond)
		e.u64(o.rev)
		e.str16(key)
		e.bytes32(value)
		e.u8(putFlagEphemeral)
		e.u32(uint32(ms))
	})
	if err != nil {
		return 0, err
	}
	return r.val.(uint64), nil
}

// Delete deletes one key and returns the revision of the delete. The
// condition, if any, is checked first (CodeConditionFailed); then an absent
// key gives an error matching ErrNotFound. Once it succeeds, this client
// no longer holds the key as an ephemeral key.
func (c *Client) Delete(ctx context.Context, key string, opts ...WriteOption) (uint64, error) {
	o := writeOptions(opts)
	r, err := c.roundTrip(ctx, typeDel, func(e *encoder) {
		e.u8(0)
		e.u8(o.cond)
		e.u64(o.rev)
		e.str16(key)
	})
	if err != nil {
		return 0, err
	}
	c.disownKey(key)
	return r.val.(WriteResult).Revision, nil
}

// DeletePrefix deletes the prefix key and every key below it ("" = every
// key) atomically, as one write with one revision. Matching nothing is not
// an error: Deleted is then 0 and Revision the current store revision.
// This client no longer holds the ephemeral keys it deleted ("a" covers "a"
// and "a.x", not "ab").
func (c *Client) DeletePrefix(ctx context.Context, prefix string) (WriteResult, error) {
	r, err := c.roundTrip(ctx, typeDel, func(e *encoder) {
		e.u8(delFlagPrefix)
		e.u8(0)
		e.u64(0)
		e.str16(prefix)
	})
	if err != nil {
		return WriteResult{}, err
	}
	c.disownPrefix(prefix)
	return r.val.(WriteResult), nil
}

// List returns every key the prefix covers ("" = every key), sorted by key
// (bytewise), with the store revision the listing is consistent at.
func (c *Client) List(ctx context.Context, prefix string) ([]Entry, uint64, error) {
	r, err := c.roundTrip(ctx, typeList, func(e *encoder) { e.str16(prefix) })
	if err != nil {
		return nil, 0, err
	}
	return r.items, r.val.(listOK).revision, nil
}

// Stats returns the server's statistics by name (protocol.md section 11),
// names this client does not know included.
func (c *Client) Stats(ctx context.Context) (map[string]uint64, error) {
	r, err := c.roundTrip(ctx, typeStats, func(*encoder) {})
	if err != nil {
		return nil, err
	}
	return r.val.(map[string]uint64), nil
}

// Compact asks the server to compact its store now.
func (c *Client) Compact(ctx context.Context) (CompactResult, error) {
	r, err := c.roundTrip(ctx, typeCompact, func(*encoder) {})
	if err != nil {
		return CompactResult{}, err
	}
	return r.val.(CompactResult), nil
}

// Condition is a condition of a transaction: KeyAbsent, KeyPresent or
// KeyRevision.
type Condition struct {
	kind uint8
	key  string
	rev  uint64
}

// KeyAbsent holds when the key does not exist.
func KeyAbsent(key string) Condition { return Condition{kind: 1, key: key} }

// KeyPresent holds when the key exists.
func KeyPresent(key string) Condition { return Condition{kind: 2, key: key} }

// KeyRevision holds when the key exists with this revision.
func KeyRevision(key string, rev uint64) Condition { return Condition{kind: 3, key: key, rev: rev} }

// Op is an operation of a transaction: OpPut, OpDelete or OpDeletePrefix.
type Op struct {
	kind  uint8
	key   string
	value []byte
}

// OpPut writes the key.
func OpPut(key string, value []byte) Op { return Op{kind: 1, key: key, value: value} }

// OpDelete deletes the key; deleting an absent key does nothing.
func OpDelete(key string) Op { return Op{kind: 2, key: key} }

// OpDeletePrefix deletes the prefix key and every key below it ("" = every
// key).
func OpDeletePrefix(prefix string) Op { return Op{kind: 3, key: prefix} }

// Txn applies ops, in order, all or nothing at one revision, if every
// condition holds against the state before it (protocol.md section 7, TXN).
// When one does not, nothing is written and the error is an *Error with
// CodeConditionFailed naming the first failing condition's Key (HasKey set)
// and its current Revision (0 when absent). Subscribers see the changed
// keys at one revision; grouped subscriptions get them as one group. Once
// it succeeds, the keys it writes or deletes are no longer ephemeral keys
// this client holds.
func (c *Client) Txn(ctx context.Context, conds []Condition, ops []Op) (WriteResult, error) {
	if len(conds) > 0xFFFF || len(ops) > 0xFFFF {
		return WriteResult{}, &Error{Code: CodeLimit, Message: "too many conditions or operations"}
	}
	r, err := c.roundTrip(ctx, typeTxn, func(e *encoder) {
		e.u16(uint16(len(conds)))
		for _, cd := range conds {
			e.u8(cd.kind)
			e.u64(cd.rev)
			e.str16(cd.key)
		}
		e.u16(uint16(len(ops)))
		for _, op := range ops {
			e.u8(op.kind)
			e.str16(op.key)
			if op.kind == 1 {
				e.bytes32(op.value)
			}
		}
	})
	if err != nil {
		return WriteResult{}, err
	}
	for _, op := range ops {
		if op.kind == 3 {
			c.disownPrefix(op.key)
		} else {
			c.disownKey(op.key)
		}
	}
	return r.val.(WriteResult), nil
}

// isResponse reports whether typ is a server → client response type.
func isResponse(typ byte) bool {
	switch typ {
	case typePong, typeGetOK, typePutOK, typeDelOK, typeListOK, typeSubOK,
		typeUnsubOK, typeStatsOK, typeCompactOK, typeListItem, typeTxnOK, typeError:
		return true
	}
	return false
}

// decodeResponse decodes a response payload: nil (PONG, SUB_OK,
// UNSUB_OK), Entry (GET_OK without its key, LIST_ITEM), uint64 (PUT_OK),
// WriteResult (DEL_OK, TXN_OK), listOK, map[string]uint64 (STATS_OK),
// CompactResult, or *Error (ERROR).
func decodeResponse(f frame) (any, error) {
	if f.typ == typeError {
		return decodeError(f.payload)
	}
	d := &decoder{b: f.payload}
	var v any
	switch f.typ {
	case typePong, typeSubOK, typeUnsubOK:
	case typeGetOK:
		rev := d.u64("revision")
		v = Entry{Revision: rev, Value: d.bytes32("value")}
	case typePutOK:
		v = d.u64("revision")
	case typeDelOK, typeTxnOK:
		rev := d.u64("revision")
		v = WriteResult{Revision: rev, Deleted: int(d.u32("deleted"))}
	case typeListOK:
		rev := d.u64("revision")
		v = listOK{revision: rev, count: d.u32("count")}
	case typeListItem:
		rev := d.u64("revision")
		key := d.str16("key")
		v = Entry{Key: key, Revision: rev, Value: d.bytes32("value")}
	case typeStatsOK:
		n := int(d.u16("count"))
		m := make(map[string]uint64, n)
		for i := 0; i < n && d.err == nil; i++ {
			name := d.str16("name")
			m[name] = d.u64("value")
		}
		v = m
	case typeCompactOK:
		before := d.u64("bytes_before")
		v = CompactResult{BytesBefore: before, BytesAfter: d.u64("bytes_after")}
	}
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("frame 0x%02X: %w", f.typ, err)
	}
	return v, nil
}
