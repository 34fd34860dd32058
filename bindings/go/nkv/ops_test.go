package nkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkv-project/nkv/bindings/go/nkv"
)

func TestPingAndLimits(t *testing.T) {
	c := connect(t, shared.addr)
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	l := c.Limits()
	if l.Version != 1 || l.MaxFrame != 2097152 || l.MaxKey != 1024 || l.MaxValue != 1048576 || l.ServerName == "" {
		t.Fatalf("limits %+v, want the defaults of protocol.md", l)
	}
}

func TestPutGet(t *testing.T) {
	c := connect(t, shared.addr)
	key := prefixFor(t) + ".k"
	r1 := mustPut(t, c, key, "one")
	e, err := c.Get(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if e.Key != key || string(e.Value) != "one" || e.Revision != r1 {
		t.Fatalf("got %+v, want one at revision %d", e, r1)
	}
	r2 := mustPut(t, c, key, "")
	if r2 <= r1 {
		t.Fatalf("second put got revision %d, not above %d", r2, r1)
	}
	e, err = c.Get(ctxT(t), key)
	if err != nil || len(e.Value) != 0 || e.Revision != r2 {
		t.Fatalf("after an empty put: %+v, %v", e, err)
	}
	// Binary values come back byte for byte.
	bin := []byte{0, 1, 2, 0xFF, 0xFE, '\n'}
	if _, err := c.Put(ctxT(t), key, bin); err != nil {
		t.Fatal(err)
	}
	if e, _ := c.Get(ctxT(t), key); !bytes.Equal(e.Value, bin) {
		t.Fatalf("binary value came back as %v", e.Value)
	}
}

func TestGetNotFound(t *testing.T) {
	c := connect(t, shared.addr)
	_, err := c.Get(ctxT(t), prefixFor(t)+".absent")
	if !errors.Is(err, nkv.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	var e *nkv.Error
	if !errors.As(err, &e) || e.Code != nkv.CodeNotFound || e.Message == "" {
		t.Fatalf("got %#v, want an *nkv.Error with CodeNotFound and the server's message", err)
	}
	if errors.Is(err, nkv.ErrConditionFailed) {
		t.Fatal("a NOT_FOUND error matches ErrConditionFailed")
	}
}

// conditionFailed checks err is CONDITION_FAILED with this current
// revision (and key, for a transaction).
func conditionFailed(t *testing.T, err error, rev uint64, key string) {
	t.Helper()
	var e *nkv.Error
	if !errors.Is(err, nkv.ErrConditionFailed) || !errors.As(err, &e) {
		t.Fatalf("got %v, want ErrConditionFailed", err)
	}
	if e.Revision != rev {
		t.Fatalf("condition failed with current revision %d, want %d (%v)", e.Revision, rev, err)
	}
	if e.HasKey != (key != "") || e.Key != key {
		t.Fatalf("condition failed naming key %q (HasKey %v), want %q", e.Key, e.HasKey, key)
	}
}

func TestPutConditions(t *testing.T) {
	c := connect(t, shared.addr)
	key := prefixFor(t) + ".k"
	r1, err := c.Put(ctxT(t), key, []byte("a"), nkv.IfAbsent())
	if err != nil {
		t.Fatalf("put-if-absent of a new key: %v", err)
	}
	_, err = c.Put(ctxT(t), key, []byte("b"), nkv.IfAbsent())
	conditionFailed(t, err, r1, "")
	r2, err := c.Put(ctxT(t), key, []byte("c"), nkv.IfRevision(r1))
	if err != nil {
		t.Fatalf("put at the right revision: %v", err)
	}
	_, err = c.Put(ctxT(t), key, []byte("d"), nkv.IfRevision(r1))
	conditionFailed(t, err, r2, "")
	_, err = c.Put(ctxT(t), prefixFor(t)+".absent", []byte("e"), nkv.IfRevision(r2))
	conditionFailed(t, err, 0, "")
	if e, _ := c.Get(ctxT(t), key); string(e.Value) != "c" || e.Revision != r2 {
		t.Fatalf("failed conditions wrote something: %+v", e)
	}
	if _, err := c.Get(ctxT(t), prefixFor(t)+".absent"); !errors.Is(err, nkv.ErrNotFound) {
		t.Fatalf("a failed conditional put created the key: %v", err)
	}
}

func TestDelete(t *testing.T) {
	c := connect(t, shared.addr)
	key := prefixFor(t) + ".k"
	r1 := mustPut(t, c, key, "v")
	_, err := c.Delete(ctxT(t), key, nkv.IfRevision(r1+1000))
	conditionFailed(t, err, r1, "")
	_, err = c.Delete(ctxT(t), key, nkv.IfAbsent())
	conditionFailed(t, err, r1, "")
	rd, err := c.Delete(ctxT(t), key, nkv.IfRevision(r1))
	if err != nil || rd <= r1 {
		t.Fatalf("conditional delete: revision %d, %v", rd, err)
	}
	if _, err := c.Get(ctxT(t), key); !errors.Is(err, nkv.ErrNotFound) {
		t.Fatalf("deleted key still there: %v", err)
	}
	if _, err := c.Delete(ctxT(t), key); !errors.Is(err, nkv.ErrNotFound) {
		t.Fatalf("delete of an absent key: %v, want ErrNotFound", err)
	}
	// The condition is checked before existence.
	_, err = c.Delete(ctxT(t), key, nkv.IfRevision(5))
	conditionFailed(t, err, 0, "")
	mustPut(t, c, key, "again")
	if _, err := c.Delete(ctxT(t), key); err != nil {
		t.Fatal(err)
	}
}

func TestDeletePrefix(t *testing.T) {
	c := connect(t, shared.addr)
	p := prefixFor(t)
	for _, k := range []string{p + ".x", p + ".x.a", p + ".x.b.c", p + ".xy"} {
		mustPut(t, c, k, "v")
	}
	res, err := c.DeletePrefix(ctxT(t), p+".x")
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 3 {
		t.Fatalf("deleted %d keys, want 3 (x, x.a, x.b.c; not xy)", res.Deleted)
	}
	left := stored(t, c, p)
	if len(left) != 1 || left[p+".xy"] != "v" {
		t.Fatalf("left %v, want only %s.xy", left, p)
	}
	stats, err := c.Stats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	none, err := c.DeletePrefix(ctxT(t), p+".nothing")
	if err != nil || none.Deleted != 0 || none.Revision != stats["revision"] {
		t.Fatalf("prefix delete of nothing: %+v, %v; want 0 deleted at the current revision %d", none, err, stats["revision"])
	}
}

func TestList(t *testing.T) {
	c := connect(t, shared.addr)
	p := prefixFor(t)
	var last uint64
	for _, k := range []string{"c", "a", "b.z", "b"} {
		last = mustPut(t, c, p+"."+k, "val-"+k)
	}
	mustPut(t, c, p+"x.outside", "no")
	entries, rev, err := c.List(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "b", "b.z", "c"}
	if len(entries) != len(want) {
		t.Fatalf("listed %v, want %v", entries, want)
	}
	for i, e := range entries {
		if e.Key != p+"."+want[i] || string(e.Value) != "val-"+want[i] || e.Revision == 0 || e.Revision > rev {
			t.Fatalf("item %d: %+v (listing at %d), want %s", i, e, rev, want[i])
		}
	}
	if rev < last {
		t.Fatalf("listing revision %d is below the last write %d", rev, last)
	}
	empty, _, err := c.List(ctxT(t), p+".none")
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty listing: %v, %v", empty, err)
	}
	all, _, err := c.List(ctxT(t), "")
	if err != nil || len(all) < 5 {
		t.Fatalf("listing everything: %d entries, %v", len(all), err)
	}
}

func TestStats(t *testing.T) {
	c := connect(t, shared.addr)
	rev := mustPut(t, c, prefixFor(t)+".k", "v")
	stats, err := c.Stats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"keys", "revision", "connections", "ops.put", "tombstone_floor"} {
		if _, ok := stats[name]; !ok {
			t.Fatalf("no %q in %v", name, stats)
		}
	}
	if stats["revision"] < rev || stats["keys"] == 0 || stats["connections"] == 0 {
		t.Fatalf("stats %v after a put at revision %d", stats, rev)
	}
}

func TestCompact(t *testing.T) {
	c := connect(t, shared.addr)
	key := prefixFor(t) + ".k"
	for i := 0; i < 20; i++ {
		mustPut(t, c, key, fmt.Sprint(i))
	}
	res, err := c.Compact(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.BytesBefore == 0 {
		t.Fatalf("compact reported %+v: no data files before?", res)
	}
	if e, err := c.Get(ctxT(t), key); err != nil || string(e.Value) != "19" {
		t.Fatalf("after compaction: %+v, %v", e, err)
	}
}

func TestTxn(t *testing.T) {
	c := connect(t, shared.addr)
	p := prefixFor(t)
	rState := mustPut(t, c, p+".state", "down")
	mustPut(t, c, p+".old.a", "1")
	mustPut(t, c, p+".old.b", "2")
	mustPut(t, c, p+".gone", "3")

	res, err := c.Txn(ctxT(t),
		[]nkv.Condition{nkv.KeyRevision(p+".state", rState), nkv.KeyAbsent(p + ".lock"), nkv.KeyPresent(p + ".gone")},
		[]nkv.Op{
			nkv.OpPut(p+".state", []byte("up")),
			nkv.OpPut(p+".lock", []byte("me")),
			nkv.OpDelete(p + ".gone"),
			nkv.OpDelete(p + ".never"),
			nkv.OpDeletePrefix(p + ".old"),
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 3 || res.Revision <= rState {
		t.Fatalf("txn result %+v, want 3 deleted above revision %d", res, rState)
	}
	got := stored(t, c, p)
	if got.String() != fmt.Sprintf("%s.lock=me %s.state=up ", p, p) {
		t.Fatalf("after the txn: %v", got)
	}
	for _, k := range []string{".state", ".lock"} {
		if e, _ := c.Get(ctxT(t), p+k); e.Revision != res.Revision {
			t.Fatalf("%s has revision %d, want the txn's %d", k, e.Revision, res.Revision)
		}
	}

	// The first failing condition is named, with its key's revision, and
	// nothing is written.
	_, err = c.Txn(ctxT(t),
		[]nkv.Condition{nkv.KeyPresent(p + ".state"), nkv.KeyAbsent(p + ".lock"), nkv.KeyPresent(p + ".none")},
		[]nkv.Op{nkv.OpPut(p+".state", []byte("changed"))})
	conditionFailed(t, err, res.Revision, p+".lock")
	_, err = c.Txn(ctxT(t),
		[]nkv.Condition{nkv.KeyRevision(p+".state", res.Revision), nkv.KeyPresent(p + ".none")},
		[]nkv.Op{nkv.OpDeletePrefix(p)})
	conditionFailed(t, err, 0, p+".none")
	if after := stored(t, c, p); after.String() != got.String() {
		t.Fatalf("a failed txn changed %v into %v", got, after)
	}

	// A transaction that changes nothing writes nothing.
	empty, err := c.Txn(ctxT(t), nil, []nkv.Op{nkv.OpDelete(p + ".never")})
	if err != nil || empty.Deleted != 0 || empty.Revision < res.Revision {
		t.Fatalf("empty txn: %+v, %v", empty, err)
	}
}

func TestInvalidKeys(t *testing.T) {
	c := connect(t, shared.addr)
	for _, key := range []string{"", "a..b", ".a", "a.", "with space", "star*", "tab\tkey", "bad\xffutf8", string(make([]byte, 1025))} {
		if _, err := c.Get(ctxT(t), key); !errors.Is(err, nkv.ErrInvalidKey) {
			t.Errorf("get %q: %v, want ErrInvalidKey", key, err)
		}
		if _, err := c.Put(ctxT(t), key, []byte("v")); !errors.Is(err, nkv.ErrInvalidKey) {
			t.Errorf("put %q: %v, want ErrInvalidKey", key, err)
		}
	}
	if _, err := c.Subscribe(ctxT(t), "a..b"); !errors.Is(err, nkv.ErrInvalidKey) {
		t.Errorf("subscribe to a..b: %v, want ErrInvalidKey", err)
	}
	if _, err := c.Txn(ctxT(t), nil, []nkv.Op{nkv.OpPut("ok.key", nil), nkv.OpPut("bad key", nil)}); !errors.Is(err, nkv.ErrInvalidKey) {
		t.Errorf("txn with a bad key: %v, want ErrInvalidKey", err)
	}
	// A key no str16 can carry is refused without a round trip.
	if _, err := c.Get(ctxT(t), string(make([]byte, 70000))); !errors.Is(err, nkv.ErrInvalidKey) {
		t.Errorf("70000-byte key: %v", err)
	}
	// The connection survived all of it.
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctxT(t), "ok.key"); err != nil && !errors.Is(err, nkv.ErrNotFound) {
		t.Fatal(err)
	}
}

func TestTooLargeAndInvalidArgument(t *testing.T) {
	c := connect(t, shared.addr)
	key := prefixFor(t) + ".k"
	big := make([]byte, c.Limits().MaxValue+1)
	if _, err := c.Put(ctxT(t), key, big); !errors.Is(err, nkv.ErrTooLarge) {
		t.Fatalf("value over max_value: %v, want ErrTooLarge", err)
	}
	huge := make([]byte, c.Limits().MaxFrame)
	if _, err := c.Put(ctxT(t), key, huge); !errors.Is(err, nkv.ErrTooLarge) {
		t.Fatalf("frame over max_frame: %v, want ErrTooLarge (not sent)", err)
	}
	if _, err := c.PutEphemeral(ctxT(t), key, nil, 601*time.Second); !errors.Is(err, nkv.ErrInvalidArgument) {
		t.Fatalf("grace over 600 s: %v, want ErrInvalidArgument", err)
	}
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// Many goroutines share one connection; each gets its own answers.
func TestPipeliningFromManyGoroutines(t *testing.T) {
	c := connect(t, shared.addr)
	p := prefixFor(t)
	const workers, rounds = 32, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; i < rounds; i++ {
				key := fmt.Sprintf("%s.w%d", p, w)
				val := fmt.Sprintf("%d/%d", w, i)
				rev, err := c.Put(ctx, key, []byte(val))
				if err != nil {
					errs <- err
					return
				}
				e, err := c.Get(ctx, key)
				if err != nil {
					errs <- err
					return
				}
				if string(e.Value) != val || e.Revision != rev {
					errs <- fmt.Errorf("worker %d got %q@%d, want %q@%d", w, e.Value, e.Revision, val, rev)
					return
				}
				if _, err := c.Get(ctx, key+".absent"); !errors.Is(err, nkv.ErrNotFound) {
					errs <- fmt.Errorf("worker %d: absent key gave %v", w, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := stored(t, c, p); len(got) != workers {
		t.Fatalf("%d keys stored, want %d", len(got), workers)
	}
}

// Requests are sent without waiting for earlier answers: with the server
// frozen, a hundred requests from a hundred goroutines all reach the
// server's socket (its receive queue holds every one of their bytes), and
// once it thaws each gets its own answer.
func TestRequestsInFlightTogether(t *testing.T) {
	port := freePort(t)
	s := newServer(t, "--listen", fmt.Sprintf("tcp:127.0.0.1:%d", port))
	c := connect(t, fmt.Sprintf("tcp:127.0.0.1:%d", port))
	const n = 100
	want := 0 // bytes of the n GET frames
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("k.%d", i)
		mustPut(t, c, key, fmt.Sprintf("v%d", i))
		want += 4 + 1 + 4 + 2 + len(key)
	}
	s.freeze(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			e, err := c.Get(context.Background(), fmt.Sprintf("k.%d", i))
			if err == nil && string(e.Value) != fmt.Sprintf("v%d", i) {
				err = fmt.Errorf("get k.%d answered %q", i, e.Value)
			}
			if err != nil {
				errs <- err
			}
		}(i)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		queued := serverRecvQueue(t, port)
		if queued >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d bytes of %d requests reached the frozen server: not pipelined", queued, want, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.thaw(t)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// serverRecvQueue returns the bytes waiting in the receive queue of the
// server's end of the established loopback TCP connection on port, from
// /proc/net/tcp.
func serverRecvQueue(t *testing.T, port int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// sl local rem st tx_queue:rx_queue ...; st 01 is ESTABLISHED.
		if len(f) > 4 && f[1] == local && f[3] == "01" {
			q := strings.SplitN(f[4], ":", 2)
			rx, err := strconv.ParseInt(q[1], 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(rx)
		}
	}
	return 0
}

// A call blocked on a server that does not answer returns when its
// context ends (or the client's request timeout passes); its late answer
// is not given to the next call.
func TestContextCancelsBlockedCall(t *testing.T) {
	s := newServer(t)
	c := connect(t, s.addr, nkv.WithRequestTimeout(0))
	timed := connect(t, s.addr, nkv.WithRequestTimeout(150*time.Millisecond))
	mustPut(t, c, "k.one", "one")
	mustPut(t, c, "k.two", "two")
	s.freeze(t)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		e, err := c.Get(ctx, "k.one")
		if err == nil {
			err = fmt.Errorf("an answer: %+v", e)
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("get returned from a frozen server: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled get returned %v, want context.Canceled", err)
		}
	case <-time.After(time.Second):
		t.Fatal("cancelling the context did not unblock the call")
	}

	dctx, dcancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer dcancel()
	if _, err := c.Get(dctx, "k.one"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get past its deadline returned %v", err)
	}
	if _, err := timed.Get(context.Background(), "k.one"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get past the client's request timeout returned %v", err)
	}

	s.thaw(t)
	e, err := c.Get(ctxT(t), "k.two")
	if err != nil || string(e.Value) != "two" {
		t.Fatalf("after the thaw, get k.two answered %q, %v (an abandoned answer leaked?)", e.Value, err)
	}
	e, err = timed.Get(ctxT(t), "k.two")
	if err != nil || string(e.Value) != "two" {
		t.Fatalf("after the thaw, get k.two answered %q, %v (an abandoned answer leaked?)", e.Value, err)
	}
}

func TestEphemeralKeyGoneWhenOwnerCloses(t *testing.T) {
	watcher := connect(t, shared.addr)
	p := prefixFor(t)
	owner, err := nkv.Connect(ctxT(t), nkv.WithAddress(shared.addr))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.PutEphemeral(ctxT(t), p+".alive", []byte("1"), 0, nkv.IfAbsent()); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.PutEphemeral(ctxT(t), p+".grace", []byte("1"), 700*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// A leader claim: a second claimant loses while the owner lives.
	if _, err := watcher.PutEphemeral(ctxT(t), p+".alive", []byte("2"), 0, nkv.IfAbsent()); !errors.Is(err, nkv.ErrConditionFailed) {
		t.Fatalf("second claim: %v, want ErrConditionFailed", err)
	}
	events, err := watcher.Subscribe(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := untilSynced(t, events)
	if len(snap) != 2 {
		t.Fatalf("snapshot %v, want both ephemeral keys", snap)
	}
	owner.Close()
	closed := time.Now()
	ev := expectKind(t, events, nkv.EventDelete)
	if ev.Key != p+".alive" {
		t.Fatalf("first delete is %v, want %s.alive (no grace)", ev, p)
	}
	if _, err := watcher.Get(ctxT(t), p+".grace"); err != nil {
		t.Fatalf("the key with a grace period is gone at once: %v", err)
	}
	ev = expectKind(t, events, nkv.EventDelete)
	if ev.Key != p+".grace" {
		t.Fatalf("second delete is %v", ev)
	}
	if d := time.Since(closed); d < 500*time.Millisecond {
		t.Fatalf("key with a 700 ms grace deleted after %v", d)
	}
	for _, k := range []string{".alive", ".grace"} {
		if _, err := watcher.Get(ctxT(t), p+k); !errors.Is(err, nkv.ErrNotFound) {
			t.Fatalf("%s after its owner closed: %v", k, err)
		}
	}
}

func TestClosedClient(t *testing.T) {
	c, err := nkv.Connect(ctxT(t), nkv.WithAddress(shared.addr))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := c.Ping(ctxT(t)); !errors.Is(err, nkv.ErrClosed) {
		t.Fatalf("ping after close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}
