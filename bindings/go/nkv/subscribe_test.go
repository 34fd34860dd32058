package nkv_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nkv-project/nkv/bindings/go/nkv"
)

func TestSubscribeSnapshotSyncedLive(t *testing.T) {
	c := connect(t, shared.addr)
	p := prefixFor(t)
	mustPut(t, c, p+".b", "2")
	mustPut(t, c, p+".a", "1")
	last := mustPut(t, c, p+".c.d", "3")
	mustPut(t, c, p+"x", "outside") // not below p on a segment boundary

	events, err := c.Subscribe(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	snap, synced := untilSynced(t, events)
	var keys []string
	for _, ev := range snap {
		if ev.Kind != nkv.EventUpdate || ev.Revision > synced.Revision || ev.Coalesced != 0 {
			t.Fatalf("snapshot event %v (synced at %d)", ev, synced.Revision)
		}
		keys = append(keys, strings.TrimPrefix(ev.Key, p))
	}
	if strings.Join(keys, " ") != ".a .b .c.d" {
		t.Fatalf("snapshot keys %v, want .a .b .c.d in key order", keys)
	}
	if synced.Revision < last+1 { // the outside put came after
		t.Fatalf("synced at %d, before the last write %d", synced.Revision, last+1)
	}

	rev := mustPut(t, c, p+".a", "one")
	ev := expectKind(t, events, nkv.EventUpdate)
	if ev.Key != p+".a" || string(ev.Value) != "one" || ev.Revision != rev || rev <= synced.Revision {
		t.Fatalf("live event %v, want %s.a=one at %d", ev, p, rev)
	}
	mustPut(t, c, p+"x", "still outside")
	drev, err := c.Delete(ctxT(t), p+".b")
	if err != nil {
		t.Fatal(err)
	}
	if ev := expectKind(t, events, nkv.EventDelete); ev.Key != p+".b" || ev.Revision != drev {
		t.Fatalf("delete event %v", ev)
	}
	res, err := c.DeletePrefix(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		ev := expectKind(t, events, nkv.EventDelete)
		if ev.Revision != res.Revision {
			t.Fatalf("prefix delete event %v, want revision %d", ev, res.Revision)
		}
		got[ev.Key] = true
	}
	if !got[p+".a"] || !got[p+".c.d"] {
		t.Fatalf("prefix delete events for %v", got)
	}
	noEvent(t, events, 100*time.Millisecond)
}

func TestSubscribeGrouped(t *testing.T) {
	c := connect(t, shared.addr)
	p := prefixFor(t)
	mustPut(t, c, p+".old", "x")
	grouped, err := c.Subscribe(ctxT(t), p, nkv.Grouped())
	if err != nil {
		t.Fatal(err)
	}
	plain, err := c.Subscribe(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	untilSynced(t, grouped)
	untilSynced(t, plain)

	res, err := c.Txn(ctxT(t), nil, []nkv.Op{
		nkv.OpPut(p+".a", []byte("1")),
		nkv.OpPut(p+".b", []byte("2")),
		nkv.OpDelete(p + ".old"),
	})
	if err != nil {
		t.Fatal(err)
	}
	g := expectKind(t, grouped, nkv.EventGroup)
	if g.Count != 3 || g.Revision != res.Revision {
		t.Fatalf("group %v, want 3 events at %d", g, res.Revision)
	}
	v := view{p + ".old": "x"}
	for i := 0; i < 3; i++ {
		ev := next(t, grouped)
		if (ev.Kind != nkv.EventUpdate && ev.Kind != nkv.EventDelete) || ev.Revision != res.Revision {
			t.Fatalf("group member %v", ev)
		}
		v.apply(ev)
	}
	if v.String() != fmt.Sprintf("%s.a=1 %s.b=2 ", p, p) {
		t.Fatalf("after the group: %v", v)
	}
	// Without the flag the same events come, without GROUP.
	for i := 0; i < 3; i++ {
		if ev := next(t, plain); ev.Kind == nkv.EventGroup || ev.Revision != res.Revision {
			t.Fatalf("plain subscription got %v", ev)
		}
	}
	// A single write stands alone.
	mustPut(t, c, p+".a", "again")
	expectKind(t, grouped, nkv.EventUpdate)
	noEvent(t, grouped, 100*time.Millisecond)
}

func TestSubscribeResumeFrom(t *testing.T) {
	c := connect(t, shared.addr)
	p := prefixFor(t)
	mustPut(t, c, p+".same", "1")
	mustPut(t, c, p+".gone", "1")
	since := mustPut(t, c, p+".changed", "1")
	mustPut(t, c, p+".changed", "2")
	mustPut(t, c, p+".new", "1")
	if _, err := c.Delete(ctxT(t), p+".gone"); err != nil {
		t.Fatal(err)
	}

	events, err := c.Subscribe(ctxT(t), p, nkv.ResumeFrom(since))
	if err != nil {
		t.Fatal(err)
	}
	changes, _ := untilSynced(t, events)
	got := map[string]string{}
	for _, ev := range changes {
		got[strings.TrimPrefix(ev.Key, p)] = ev.Kind.String() + " " + string(ev.Value)
	}
	want := map[string]string{".changed": "UPDATE 2", ".new": "UPDATE 1", ".gone": "DELETE "}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resume from %d gave %v, want %v", since, got, want)
	}

	// From a revision the store never reached: RESET, the full snapshot.
	events, err = c.Subscribe(ctxT(t), p, nkv.ResumeFrom(1<<60))
	if err != nil {
		t.Fatal(err)
	}
	expectKind(t, events, nkv.EventReset)
	snap, _ := untilSynced(t, events)
	v := view{}
	for _, ev := range snap {
		v.apply(ev)
	}
	if v.String() != stored(t, c, p).String() {
		t.Fatalf("snapshot after RESET %v, store %v", v, stored(t, c, p))
	}
}

// The channel closes when the context ends, and the server forgets the
// subscription.
func TestSubscribeEndsWithContext(t *testing.T) {
	s := newServer(t)
	c := connect(t, s.addr)
	ctx, cancel := context.WithCancel(context.Background())
	events, err := c.Subscribe(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	untilSynced(t, events)
	if st, _ := c.Stats(ctxT(t)); st["subscriptions"] != 1 {
		t.Fatalf("%d subscriptions at the server, want 1", st["subscriptions"])
	}
	cancel()
	select {
	case ev, ok := <-events:
		if ok {
			t.Fatalf("event %v after cancel", ev)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("channel not closed after the context ended")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := c.Stats(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if st["subscriptions"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server still has the subscription: no UNSUB?")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Subscribing again on the same connection works.
	again, err := c.Subscribe(ctxT(t), "")
	if err != nil {
		t.Fatal(err)
	}
	untilSynced(t, again)
}

func TestSubscribeEndsWhenClientCloses(t *testing.T) {
	c, err := nkv.Connect(ctxT(t), nkv.WithAddress(shared.addr))
	if err != nil {
		t.Fatal(err)
	}
	events, err := c.Subscribe(context.Background(), prefixFor(t))
	if err != nil {
		t.Fatal(err)
	}
	c.Close() // nobody reads: Close must not wait for a reader
	for range events {
	}
	if _, err := c.Subscribe(context.Background(), prefixFor(t)); !errors.Is(err, nkv.ErrClosed) {
		t.Fatalf("subscribe after close: %v", err)
	}
}

// A consumer that does not read costs a bounded queue: past it the
// subscription lags, and once the consumer reads, it catches up to the
// stored state.
func TestSlowConsumerLagsAndCatchesUp(t *testing.T) {
	const bound = 5
	c := connect(t, shared.addr, nkv.WithSubscriptionBuffer(bound, 1<<20))
	p := prefixFor(t)
	mustPut(t, c, p+".k0", "start")
	events, err := c.Subscribe(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	v := view{}
	snap, _ := untilSynced(t, events)
	for _, ev := range snap {
		v.apply(ev)
	}
	for i := 0; i < 60; i++ {
		key := fmt.Sprintf("%s.k%d", p, i%7)
		if i%11 == 10 {
			if _, err := c.Delete(ctxT(t), key); err != nil && !errors.Is(err, nkv.ErrNotFound) {
				t.Fatal(err)
			}
			continue
		}
		mustPut(t, c, key, fmt.Sprint(i))
	}
	time.Sleep(300 * time.Millisecond) // let every event reach the client

	before := 0
	for {
		ev := next(t, events)
		if ev.Kind == nkv.EventLagged {
			break
		}
		if ev.Kind != nkv.EventUpdate && ev.Kind != nkv.EventDelete {
			t.Fatalf("before LAGGED: %v", ev)
		}
		v.apply(ev)
		before++
	}
	if before > bound {
		t.Fatalf("%d events were queued, over the bound of %d", before, bound)
	}
	catchUp, _ := untilSynced(t, events)
	for _, ev := range catchUp {
		if ev.Kind == nkv.EventReset {
			t.Fatalf("catch-up began with RESET: %v", catchUp)
		}
		v.apply(ev)
	}
	if want := stored(t, c, p); v.String() != want.String() {
		t.Fatalf("view after catching up: %v\nstored: %v", v, want)
	}
	// Live again.
	rev := mustPut(t, c, p+".k1", "live")
	if ev := expectKind(t, events, nkv.EventUpdate); ev.Revision != rev {
		t.Fatalf("after catching up: %v", ev)
	}
}

// A lag that falls between two events of one transaction (a subscription
// without the grouped flag sees them stand alone) loses neither half: the
// catch-up resumes from below the transaction, and repeats none of the
// events already queued.
func TestLagInsideTransactionLosesNothing(t *testing.T) {
	c := connect(t, shared.addr, nkv.WithSubscriptionBuffer(3, 1<<20))
	p := prefixFor(t)
	events, err := c.Subscribe(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	untilSynced(t, events)
	var ops []nkv.Op
	for i := 0; i < 6; i++ {
		ops = append(ops, nkv.OpPut(fmt.Sprintf("%s.k%d", p, i), []byte("x")))
	}
	res, err := c.Txn(ctxT(t), nil, ops)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // all six events reach the client
	v := view{}
	seen := map[string]int{}
	lagged := false
	for len(v) < 6 {
		ev := next(t, events)
		switch ev.Kind {
		case nkv.EventLagged:
			lagged = true
		case nkv.EventUpdate:
			if ev.Revision != res.Revision {
				t.Fatalf("event %v, want the txn's revision %d", ev, res.Revision)
			}
			seen[ev.Key]++
			if seen[ev.Key] > 1 {
				t.Fatalf("%s delivered twice", ev.Key)
			}
			v.apply(ev)
		case nkv.EventSynced:
			if len(v) < 6 {
				t.Fatalf("synced at %d with %d of the txn's 6 keys: %v", ev.Revision, len(v), v)
			}
		default:
			t.Fatalf("unexpected %v", ev)
		}
	}
	if !lagged {
		t.Fatal("6 queued events did not overflow a bound of 3")
	}
	expectKind(t, events, nkv.EventSynced)
}

// Groups stay whole and true when a grouped subscriber lags: every state
// the subscriber shows after a group or a SYNCED is one the store had.
func TestSlowGroupedConsumerSeesOnlyRealStates(t *testing.T) {
	// A bound of 3 is below a group's 4 queue entries (GROUP and three
	// events): the bound must not cut a group.
	c := connect(t, shared.addr, nkv.WithSubscriptionBuffer(3, 1<<20))
	p := prefixFor(t)
	events, err := c.Subscribe(ctxT(t), p, nkv.Grouped())
	if err != nil {
		t.Fatal(err)
	}
	untilSynced(t, events)
	// Every transaction writes the same generation to a, b and c, so a
	// real state has all three equal.
	for i := 0; i < 30; i++ {
		gen := []byte(fmt.Sprint(i))
		if _, err := c.Txn(ctxT(t), nil, []nkv.Op{
			nkv.OpPut(p+".a", gen), nkv.OpPut(p+".b", gen), nkv.OpPut(p+".c", gen),
		}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	v := view{}
	consistent := func(when string) {
		if v[p+".a"] != v[p+".b"] || v[p+".b"] != v[p+".c"] {
			t.Fatalf("%s: a state the store never had: %v", when, v)
		}
	}
	lagged, groups := false, 0
	for v[p+".a"] != "29" || v[p+".b"] != "29" || v[p+".c"] != "29" {
		ev := next(t, events)
		switch ev.Kind {
		case nkv.EventGroup:
			groups++
			for i := 0; i < ev.Count; i++ {
				m := next(t, events)
				if m.Revision != ev.Revision || m.Kind != nkv.EventUpdate {
					t.Fatalf("group member %v of %v", m, ev)
				}
				v.apply(m)
			}
			consistent("after a group")
		case nkv.EventLagged:
			lagged = true
		case nkv.EventSynced:
			consistent("at SYNCED")
		case nkv.EventUpdate:
			if !lagged {
				t.Fatalf("update outside a group before any lag: %v", ev)
			}
			v.apply(ev) // catch-up: consistent at the SYNCED that follows
		default:
			t.Fatalf("unexpected %v", ev)
		}
	}
	if !lagged || groups == 0 || groups > 3 {
		t.Fatalf("lagged %v after %d groups, want a lag after at most 3", lagged, groups)
	}
}

// The subscriber sees DISCONNECTED, then only what it missed (not RESET, not
// what it had), then SYNCED, when the server stops (a clean SIGTERM, then
// a kill -9) and comes back on the same socket and data directory.
func TestResumeAcrossServerRestart(t *testing.T) {
	s := newServer(t)
	c := connect(t, s.addr, nkv.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	p := "svc"
	mustPut(t, c, p+".a", "a1")
	mustPut(t, c, p+".b", "b1")
	mustPut(t, c, p+".c", "c1")
	events, err := c.Subscribe(context.Background(), p, nkv.Grouped())
	if err != nil {
		t.Fatal(err)
	}
	v := view{}
	snap, _ := untilSynced(t, events)
	for _, ev := range snap {
		v.apply(ev)
	}

	for round, stop := range []string{"SIGTERM", "SIGKILL"} {
		// Live events just before the stop: the client resumes from
		// below the last, and must not show any of them twice.
		var rev uint64
		for _, k := range []string{".b", ".a"} {
			rev = mustPut(t, c, p+k, fmt.Sprintf("%s-live-%d", k, round))
			if ev := expectKind(t, events, nkv.EventUpdate); ev.Revision != rev {
				t.Fatalf("live event %v", ev)
			} else {
				v.apply(ev)
			}
		}
		if stop == "SIGTERM" {
			s.terminate(t)
		} else {
			s.kill()
		}
		ev := expectKind(t, events, nkv.EventDisconnected)
		if stop == "SIGTERM" && !errors.Is(ev.Err, nkv.ErrShuttingDown) {
			t.Fatalf("disconnected by SIGTERM: %v, want SHUTTING_DOWN", ev.Err)
		}

		// Meanwhile the store changes, through a server on another
		// socket, so the changes are certainly made while the client is
		// away.
		if err := s.startOn("unix:" + s.dir + "/other.sock"); err != nil {
			t.Fatal(err)
		}
		w := connect(t, "unix:"+s.dir+"/other.sock")
		mustPut(t, w, p+".b", fmt.Sprintf("b%d", round+2))
		if _, err := w.Delete(ctxT(t), p+".c"); err != nil && !errors.Is(err, nkv.ErrNotFound) {
			t.Fatal(err)
		}
		mustPut(t, w, fmt.Sprintf("%s.new%d", p, round), "n")
		mustPut(t, w, "elsewhere", "x")
		w.Close()
		s.kill()
		if err := s.start(); err != nil {
			t.Fatal(err)
		}

		missed, synced := untilSynced(t, events)
		seen := map[string]bool{}
		for _, ev := range missed {
			if ev.Kind == nkv.EventReset || ev.Kind == nkv.EventGroup {
				t.Fatalf("round %d: catch-up has %v: %v", round, ev, missed)
			}
			if ev.Revision <= rev {
				t.Fatalf("round %d: %v was delivered before the restart", round, ev)
			}
			if seen[ev.Key] {
				t.Fatalf("round %d: %s twice in %v", round, ev.Key, missed)
			}
			seen[ev.Key] = true
			v.apply(ev)
		}
		if len(missed) == 0 {
			t.Fatalf("round %d: nothing missed?", round)
		}
		if want := stored(t, c, p); v.String() != want.String() {
			t.Fatalf("round %d: view %v after resuming, stored %v", round, v, want)
		}
		if st, err := c.Stats(ctxT(t)); err != nil || synced.Revision != st["revision"] {
			t.Fatalf("round %d: synced at %d, store at %d (%v)", round, synced.Revision, st["revision"], err)
		}
	}
	// Live events flow again.
	rev := mustPut(t, c, p+".a", "after")
	if ev := expectKind(t, events, nkv.EventUpdate); ev.Revision != rev {
		t.Fatalf("live after restart: %v", ev)
	}
}

// Without reconnection, a server shutdown ends the subscription with
// EventClosed carrying the server's code, and later calls fail.
func TestShutdownWithoutReconnect(t *testing.T) {
	s := newServer(t)
	c := connect(t, s.addr, nkv.WithReconnect(false))
	events, err := c.Subscribe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	untilSynced(t, events)
	s.signal(t, syscall.SIGTERM)
	ev := expectKind(t, events, nkv.EventClosed)
	if !errors.Is(ev.Err, nkv.ErrShuttingDown) {
		t.Fatalf("closed with %v, want SHUTTING_DOWN", ev.Err)
	}
	if ev, ok := <-events; ok {
		t.Fatalf("event %v after CLOSED", ev)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := c.Ping(ctxT(t))
		if errors.Is(err, nkv.ErrConnection) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping after the server stopped: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
