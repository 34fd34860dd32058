package nkv_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nkv-project/nkv/bindings/go/nkv"
)

// relay forwards connections from its own Unix socket to a server's, so a
// test can cut a client's connection (the server sees it end, as with a
// lost network) and keep the client from reconnecting for a while.
type relay struct {
	ln     net.Listener
	addr   string
	target string

	mu     sync.Mutex
	conns  []net.Conn
	refuse bool
}

func newRelay(t *testing.T, s *server) *relay {
	t.Helper()
	dir, err := os.MkdirTemp("", "nkvrelay") // short: a socket path is at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "relay.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, addr: "unix:" + path, target: s.sock}
	go r.accept()
	t.Cleanup(func() {
		ln.Close()
		r.cut(true)
		os.RemoveAll(dir)
	})
	return r
}

func (r *relay) accept() {
	for {
		a, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.refuse {
			r.mu.Unlock()
			a.Close() // the client's handshake fails: it tries again later
			continue
		}
		b, err := net.Dial("unix", r.target)
		if err != nil {
			r.mu.Unlock()
			a.Close()
			continue
		}
		r.conns = append(r.conns, a, b)
		r.mu.Unlock()
		go pipe(a, b)
		go pipe(b, a)
	}
}

func pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut closes every relayed connection, both sides; with refuse, new
// connections are closed at once until open.
func (r *relay) cut(refuse bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse = refuse
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

func (r *relay) open() {
	r.mu.Lock()
	r.refuse = false
	r.mu.Unlock()
}

// reconnected waits until c answers a PING again, so on a new connection
// (a cut one answers nothing). Answers come in request order, so the
// answers to what the client sent first on it are in too.
func reconnected(t *testing.T, c *nkv.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconnection within 10 s: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func heldKeys(t *testing.T, c *nkv.Client, want ...string) {
	t.Helper()
	got := c.EphemeralKeys()
	if len(want) == 0 {
		want = []string{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("EphemeralKeys() = %q, want %q", got, want)
	}
}

func fastBackoff() nkv.Option { return nkv.WithBackoff(5*time.Millisecond, 50*time.Millisecond) }

// After its connection is cut, the client puts its ephemeral key again on
// the new connection: the key outlives the old connection's grace period,
// and now belongs to the new connection (cut that one off for longer than
// the grace period and the server deletes the key).
func TestEphemeralKeyTakenBackAfterReconnect(t *testing.T) {
	r := newRelay(t, shared)
	c := connect(t, r.addr, fastBackoff())
	watcher := connect(t, shared.addr)
	key := prefixFor(t) + ".alive"
	const grace = time.Second
	rev, err := c.PutEphemeral(ctxT(t), key, []byte("pid 7"), grace)
	if err != nil {
		t.Fatal(err)
	}
	heldKeys(t, c, key)

	r.cut(false)
	cutAt := time.Now()
	reconnected(t, c)
	e, err := watcher.Get(ctxT(t), key)
	if err != nil || string(e.Value) != "pid 7" || e.Revision <= rev {
		t.Fatalf("after the reconnection: %q at %d, %v; want pid 7 put again (after revision %d)", e.Value, e.Revision, err, rev)
	}
	heldKeys(t, c, key)
	time.Sleep(time.Until(cutAt.Add(grace + 500*time.Millisecond)))
	e2, err := watcher.Get(ctxT(t), key)
	if err != nil || string(e2.Value) != "pid 7" || e2.Revision != e.Revision {
		t.Fatalf("past the old connection's grace period: %q at %d, %v; want pid 7 at %d", e2.Value, e2.Revision, err, e.Revision)
	}

	// The new connection owns it: cut it off for longer than the grace.
	r.cut(true)
	deadline := time.Now().Add(grace + 5*time.Second)
	for {
		_, err := watcher.Get(ctxT(t), key)
		if errors.Is(err, nkv.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the key outlived its new connection's grace period")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Gone: taking it back fails, and the client forgets it.
	r.open()
	reconnected(t, c)
	heldKeys(t, c)
	if _, err := watcher.Get(ctxT(t), key); !errors.Is(err, nkv.ErrNotFound) {
		t.Fatalf("a key that was gone came back: %v", err)
	}
}

// Someone else writes the key while the owner is cut off: the owner does
// not take it back over that write, forgets it, and the other value stays
// (past the grace period too, the key being an ordinary one now).
func TestEphemeralKeyNotTakenBackOverAnotherWrite(t *testing.T) {
	r := newRelay(t, shared)
	c := connect(t, r.addr, fastBackoff())
	other := connect(t, shared.addr)
	key := prefixFor(t) + ".leader"
	const grace = 700 * time.Millisecond
	if _, err := other.DeletePrefix(ctxT(t), prefixFor(t)); err != nil { // from an earlier -count
		t.Fatal(err)
	}
	if _, err := c.PutEphemeral(ctxT(t), key, []byte("mine"), grace, nkv.IfAbsent()); err != nil {
		t.Fatal(err)
	}
	heldKeys(t, c, key)

	r.cut(true)
	rev, err := other.Put(ctxT(t), key, []byte("theirs"))
	if err != nil {
		t.Fatal(err)
	}
	r.open()
	reconnected(t, c)
	e, err := other.Get(ctxT(t), key)
	if err != nil || string(e.Value) != "theirs" || e.Revision != rev {
		t.Fatalf("after the owner reconnected: %q at %d, %v; want theirs at %d", e.Value, e.Revision, err, rev)
	}
	heldKeys(t, c)
	time.Sleep(grace + 300*time.Millisecond)
	e, err = other.Get(ctxT(t), key)
	if err != nil || string(e.Value) != "theirs" || e.Revision != rev {
		t.Fatalf("past the grace period: %q at %d, %v; want theirs at %d", e.Value, e.Revision, err, rev)
	}
}

// A plain write of a held key by this client ends the holding: Put,
// Delete, a DeletePrefix covering it (segment by segment), a Txn that
// writes or deletes it; one that fails does not.
func TestPlainWriteEndsEphemeralHolding(t *testing.T) {
	r := newRelay(t, shared)
	c := connect(t, r.addr, fastBackoff())
	p := prefixFor(t)
	eph := func(keys ...string) {
		t.Helper()
		for _, k := range keys {
			if _, err := c.PutEphemeral(ctxT(t), p+k, []byte("e"), 2*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Put: the key is an ordinary one, and stays so across a reconnection
	// (nothing puts it again as an ephemeral key).
	eph(".put")
	heldKeys(t, c, p+".put")
	rev, err := c.Put(ctxT(t), p+".put", []byte("plain"))
	if err != nil {
		t.Fatal(err)
	}
	heldKeys(t, c)
	r.cut(false)
	reconnected(t, c)
	heldKeys(t, c)
	e, err := c.Get(ctxT(t), p+".put")
	if err != nil || string(e.Value) != "plain" || e.Revision != rev {
		t.Fatalf("after the reconnection: %q at %d, %v; want plain at %d", e.Value, e.Revision, err, rev)
	}

	// A Put whose condition fails changes nothing.
	eph(".put")
	if _, err := c.Put(ctxT(t), p+".put", []byte("x"), nkv.IfAbsent()); !errors.Is(err, nkv.ErrConditionFailed) {
		t.Fatalf("conditional put: %v", err)
	}
	heldKeys(t, c, p+".put")

	// Delete.
	eph(".del")
	if _, err := c.Delete(ctxT(t), p+".del"); err != nil {
		t.Fatal(err)
	}
	heldKeys(t, c, p+".put")

	// DeletePrefix covers the prefix key and the keys below it, not a key
	// that merely starts with the same bytes.
	eph(".a", ".a.x", ".ab")
	if _, err := c.DeletePrefix(ctxT(t), p+".a"); err != nil {
		t.Fatal(err)
	}
	heldKeys(t, c, p+".ab", p+".put")

	// Txn: a write and a delete end the holding; a failed Txn does not.
	eph(".t1", ".t2")
	_, err = c.Txn(ctxT(t), []nkv.Condition{nkv.KeyAbsent(p + ".t1")}, []nkv.Op{nkv.OpDelete(p + ".t1")})
	if !errors.Is(err, nkv.ErrConditionFailed) {
		t.Fatalf("failing txn: %v", err)
	}
	heldKeys(t, c, p+".ab", p+".put", p+".t1", p+".t2")
	if _, err := c.Txn(ctxT(t), nil, []nkv.Op{nkv.OpPut(p+".t1", []byte("v")), nkv.OpDelete(p + ".t2")}); err != nil {
		t.Fatal(err)
	}
	heldKeys(t, c, p+".ab", p+".put")

	// Close: the server deletes them; the client holds nothing.
	c.Close()
	heldKeys(t, c)
}
