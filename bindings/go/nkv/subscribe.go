package nkv

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// EventKind tells what an Event is.
type EventKind uint8

// The kinds of Event.
const (
	// EventUpdate: Key has Value, written at Revision. Coalesced counts
	// the earlier updates of the key the server folded into this one.
	EventUpdate EventKind = iota + 1
	// EventDelete: Key was deleted at Revision.
	EventDelete
	// EventSynced: the view (what the events so far built) is the store's
	// state of the subtree at Revision. Sent after the snapshot, and after
	// each catch-up (following EventDisconnected, EventLagged or EventReset).
	EventSynced
	// EventReset: forget every key held for this subscription; a full
	// snapshot and EventSynced follow.
	EventReset
	// EventGroup (grouped subscriptions): the next Count update and delete
	// events form one group; applied together they give the store's state
	// at Revision. The client delivers a group only once all its events
	// have arrived.
	EventGroup
	// EventDisconnected: the connection was lost (Err says why). After the
	// reconnection the missed changes follow (or EventReset and a
	// snapshot), then EventSynced.
	EventDisconnected
	// EventLagged: the consumer read too slowly and the subscription's
	// buffer filled (WithSubscriptionBuffer). Once the consumer has read
	// everything before this event, the changes it missed follow (or
	// EventReset and a snapshot), then EventSynced.
	EventLagged
	// EventClosed: the subscription ended (Err says why: the server's
	// CLOSED code, or the connection loss with reconnection off); the
	// channel closes after it.
	EventClosed
)

var kindNames = [...]string{"", "UPDATE", "DELETE", "SYNCED", "RESET", "GROUP", "DISCONNECTED", "LAGGED", "CLOSED"}

func (k EventKind) String() string {
	if int(k) < len(kindNames) && k != 0 {
		return kindNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is one event of a subscription.
type Event struct {
	Kind      EventKind
	Key       string // EventUpdate, EventDelete
	Value     []byte // EventUpdate
	Revision  uint64 // EventUpdate, EventDelete, EventSynced, EventGroup
	Coalesced uint32 // EventUpdate, EventDelete
	Count     int    // EventGroup
	Err       error  // EventDisconnected, EventClosed
}

func (e Event) String() string {
	switch e.Kind {
	case EventUpdate:
		return fmt.Sprintf("UPDATE %s=%q @%d", e.Key, e.Value, e.Revision)
	case EventDelete:
		return fmt.Sprintf("DELETE %s @%d", e.Key, e.Revision)
	case EventSynced:
		return fmt.Sprintf("SYNCED @%d", e.Revision)
	case EventGroup:
		return fmt.Sprintf("GROUP %d @%d", e.Count, e.Revision)
	case EventDisconnected, EventClosed:
		return fmt.Sprintf("%s (%v)", e.Kind, e.Err)
	}
	return e.Kind.String()
}

// SubscribeOption configures Subscribe.
type SubscribeOption func(*subOpts)

type subOpts struct {
	resume  bool
	since   uint64
	grouped bool
}

// ResumeFrom resumes from a revision the caller's view is complete at (the
// Revision of the last EventSynced, say, kept across a restart of the
// program): the server sends only the keys changed after it (updates with
// their current values, deletes), then EventSynced; or, when it no longer
// knows that far back, EventReset and a full snapshot.
func ResumeFrom(since uint64) SubscribeOption {
	return func(o *subOpts) { o.resume, o.since = true, since }
}

// Grouped asks for EventGroup announcements of events that belong together
// (the keys of one transaction or prefix delete).
func Grouped() SubscribeOption { return func(o *subOpts) { o.grouped = true } }

// Subscription states.
const (
	subIdle    = iota // not registered: (re)subscribe once drained and connected
	subPending        // SUB sent on conn as id, no SUB_OK yet
	subActive         // SUB_OK received
	subClosed         // ended by the server or the connection; EventClosed queued
	subDone           // the pump has ended
)

// subscription is the client side of one Subscribe. The reader goroutine
// appends events to queue (never blocking); the pump goroutine moves them
// to the consumer's channel and, once the queue is empty, resubscribes
// after a disconnection or a lag.
//
// The queue is bounded (see WithSubscriptionBuffer): the bound is checked
// before a live stand-alone event or a GROUP is accepted; snapshot and
// catch-up events (at most one per covered key) and the events of a group
// already announced are not counted against it. A queue at the bound makes
// the subscription lag: UNSUB at the server, an EventLagged marker, and a
// resumed SUB once the consumer has read the queue.
type subscription struct {
	client  *Client
	ctx     context.Context
	prefix  string
	grouped bool
	ch      chan Event
	wake    chan struct{}

	maxEvents int
	maxBytes  int

	mu    sync.Mutex
	state int
	conn  *conn  // registration, in subPending and subActive
	id    uint32 // its subscription id
	// closedOn is a connection whose server sent CLOSED SHUTTING_DOWN: no
	// resubscription there.
	closedOn *conn
	started  bool        // Subscribe returned: events have a consumer
	first    func(error) // the first SUB's waiter
	queue    []Event     // queue[:ready] deliverable; the rest a group in progress
	ready    int
	bytes    int
	groupAt  int    // index of the GROUP marker of the group in progress
	groupN   int    // its events still to come (0: none in progress)
	groupRev uint64 // its revision

	// syncing: between SUB_OK and SYNCED (snapshot, catch-up).
	syncing bool
	// The resume point: every event up to resume is in the queue or
	// delivered.
	haveResume bool
	resume     uint64
	// edgeKeys: keys of stand-alone live events at edgeRev, the revision
	// above the resume point; a catch-up from edgeRev-1 repeats them, and
	// dedup (set from them at resubscription) skips the repetition.
	edgeRev   uint64
	edgeKeys  map[string]struct{}
	dedupRev  uint64
	dedup     map[string]struct{}
	partial   bool // snapshot events (not a catch-up) queued since SUB_OK
	needReset bool // a partial snapshot was cut short: Reset before the next
}

// Subscribe watches every key the prefix covers ("" = every key). The
// channel first carries the snapshot (one EventUpdate per key, in key
// order), then EventSynced, then live events as writes are committed; with
// ResumeFrom, only the changes after that revision (or EventReset and a
// snapshot) before EventSynced. Per key, events come in revision order.
//
// The channel is closed when ctx ends, when the client is closed, or after
// an EventClosed. Subscribe itself returns once the server accepted the
// subscription (SUB_OK), or with its error (ErrInvalidKey, ErrLimit,
// ErrUnauthorized, ...).
//
// After a lost connection the subscriber sees EventDisconnected; after the
// reconnection, the client resumes from the last revision it knows complete
// (the last EventSynced's, a complete group's, or R-1 after a live event
// at revision R, since other keys of R may still be missing), so the
// subscriber then sees the missed changes, or EventReset and a new
// snapshot, and then EventSynced. Events the client had already delivered
// are not repeated, except after a catch-up or snapshot that was itself
// cut short, which is sent again (a snapshot cut short is preceded by an
// EventReset).
//
// A consumer that reads slowly costs bounded memory (WithSubscriptionBuffer)
// and never holds up the client's other calls: past the bound the
// subscription lags (EventLagged) and catches up once the consumer has
// read what was buffered, receiving each changed key's latest state.
func (c *Client) Subscribe(ctx context.Context, prefix string, opts ...SubscribeOption) (<-chan Event, error) {
	var o subOpts
	for _, f := range opts {
		f(&o)
	}
	s := &subscription{
		client:     c,
		ctx:        ctx,
		prefix:     prefix,
		grouped:    o.grouped,
		ch:         make(chan Event),
		wake:       make(chan struct{}, 1),
		maxEvents:  c.opts.subEvents,
		maxBytes:   c.opts.subBytes,
		haveResume: o.resume,
		resume:     o.since,
	}
	rctx := ctx
	if c.opts.requestTimeout > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, c.opts.requestTimeout)
		defer cancel()
	}
	for {
		cn, err := c.getConn(rctx)
		if err != nil {
			return nil, err
		}
		answer := make(chan error, 1)
		s.mu.Lock()
		s.first = func(err error) { answer <- err }
		id, build, ok := s.attach(cn)
		s.mu.Unlock()
		if !ok {
			continue
		}
		if _, err := cn.queue(rctx, id, typeSub, build); err != nil {
			if errors.Is(err, errConnDead) {
				continue
			}
			return nil, err
		}
		select {
		case err := <-answer:
			if err == nil {
				c.mu.Lock()
				if c.closed {
					c.mu.Unlock()
					return nil, ErrClosed
				}
				c.wg.Add(1) // under c.mu: Close waits for every pump
				c.mu.Unlock()
				go s.pump()
				return s.ch, nil
			}
			if isConnLoss(err) && !errors.Is(err, ErrClosed) {
				continue // the SUB died with its connection: try the next
			}
			return nil, err
		case <-rctx.Done():
			s.mu.Lock()
			cn, id, registered := s.conn, s.id, s.state == subPending || s.state == subActive
			s.state, s.conn = subDone, nil
			s.mu.Unlock()
			if registered {
				cn.unsubscribe(id)
			}
			return nil, rctx.Err()
		}
	}
}

func isConnLoss(err error) bool {
	return errors.Is(err, ErrClosed) || errors.Is(err, ErrConnection)
}

// attach registers s on cn and returns the SUB's id and payload. Callers
// hold s.mu and queue the frame.
func (s *subscription) attach(cn *conn) (uint32, func(*encoder), bool) {
	var flags uint8
	var since uint64
	if s.grouped {
		flags |= subFlagGrouped
	}
	if s.haveResume {
		flags |= subFlagResume
		since = s.resume
	}
	var id uint32
	cl := &call{typ: typeSub}
	cl.cb = func(r callResult) { s.onSubAnswer(cn, id, r) }
	cn.mu.Lock()
	if cn.dead {
		cn.mu.Unlock()
		return 0, nil, false
	}
	id = cn.allocID()
	cn.pending[id] = cl
	cn.subs[id] = s
	cn.mu.Unlock()
	s.conn, s.id, s.state, s.closedOn = cn, id, subPending, nil
	s.dedup, s.dedupRev = nil, 0
	if s.haveResume && s.edgeRev > 0 && s.resume == s.edgeRev-1 {
		s.dedup, s.dedupRev = make(map[string]struct{}, len(s.edgeKeys)), s.edgeRev
		for k := range s.edgeKeys {
			s.dedup[k] = struct{}{}
		}
	}
	prefix := s.prefix
	return id, func(e *encoder) {
		e.u8(flags)
		e.u64(since)
		e.str16(prefix)
	}, true
}

// onSubAnswer handles the answer to a SUB (reader goroutine), or the loss
// of its connection.
func (s *subscription) onSubAnswer(cn *conn, id uint32, r callResult) {
	s.mu.Lock()
	if s.conn != cn || s.id != id || s.state != subPending {
		s.mu.Unlock()
		return // stale: the subscription ended or moved on meanwhile
	}
	first := s.first
	switch {
	case r.err == nil:
		s.state = subActive
		s.syncing = true
		s.partial = false
		s.first = nil
		s.started = true
		if s.needReset {
			s.needReset = false
			s.appendReady(Event{Kind: EventReset})
		}
	case isConnLoss(r.err):
		// onDisconnect follows; the first SUB is retried by Subscribe.
	default:
		// The server refused the SUB (a resubscription may meet a LIMIT,
		// or access rules reloaded meanwhile): the subscription ends.
		s.conn = nil
		s.first = nil
		if s.started {
			s.state = subClosed
			s.appendReady(Event{Kind: EventClosed, Err: r.err})
		} else {
			s.state = subDone
		}
	}
	s.mu.Unlock()
	if first != nil {
		first(r.err)
	}
}

// onDisconnect: the connection of the registration ended.
func (s *subscription) onDisconnect(cn *conn, id uint32, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != cn || s.id != id || (s.state != subPending && s.state != subActive) {
		return
	}
	s.lost(err)
}

// lost handles the end of the registration (already removed from its
// connection). Callers hold s.mu.
func (s *subscription) lost(err error) {
	s.dropGroup()
	if s.syncing && !s.haveResume && s.partial {
		s.needReset = true // the next snapshot replaces a partial one
	}
	s.conn = nil
	if !s.started {
		s.state = subIdle
		return
	}
	if !s.client.opts.reconnect {
		s.state = subClosed
		s.appendReady(Event{Kind: EventClosed, Err: err})
		return
	}
	s.state = subIdle
	if n := len(s.queue); n == 0 || s.queue[n-1].Kind != EventDisconnected {
		s.appendReady(Event{Kind: EventDisconnected, Err: err})
	}
	s.kick()
}

// onEvent takes one event of the registration (reader goroutine; never
// blocks).
func (s *subscription) onEvent(cn *conn, id uint32, ev Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != cn || s.id != id || s.state != subActive {
		return
	}
	switch ev.Kind {
	case EventUpdate, EventDelete:
		switch {
		case s.groupN > 0:
			s.queue = append(s.queue, ev)
			s.bytes += eventSize(ev)
			s.groupN--
			if s.groupN == 0 {
				s.completeGroup()
			}
		case s.syncing:
			if s.dedup != nil && ev.Revision == s.dedupRev {
				if _, ok := s.dedup[ev.Key]; ok {
					delete(s.dedup, ev.Key)
					return // delivered before the reconnection
				}
			}
			if !s.haveResume {
				s.partial = true
			}
			s.appendReady(ev)
		default:
			if s.full() {
				s.lag(cn, id)
				return
			}
			s.appendReady(ev)
			s.noteLive(ev.Key, ev.Revision)
		}
	case EventGroup:
		s.cutGroup()
		if !s.syncing && s.full() {
			s.lag(cn, id)
			return
		}
		if ev.Count <= 0 {
			return
		}
		s.groupAt = len(s.queue)
		s.groupN = ev.Count
		s.groupRev = ev.Revision
		s.queue = append(s.queue, ev)
	case EventSynced:
		s.cutGroup()
		s.appendReady(ev)
		s.syncing = false
		s.haveResume, s.resume = true, ev.Revision
		s.edgeRev, s.edgeKeys = 0, nil
		s.dedup = nil
	case EventReset:
		s.dropGroup()
		s.appendReady(ev)
		s.syncing = true
		s.partial = false
		s.haveResume = false
		s.edgeRev, s.edgeKeys = 0, nil
		s.dedup = nil
	case EventClosed:
		cn.mu.Lock()
		delete(cn.subs, id) // CLOSED frees the id
		cn.mu.Unlock()
		var se *Error
		if errors.As(ev.Err, &se) && se.Code == CodeShuttingDown && s.client.opts.reconnect {
			// The server is stopping: resume on the next connection.
			s.closedOn = cn
			s.lost(ev.Err)
			return
		}
		s.dropGroup()
		s.conn = nil
		s.state = subClosed
		s.appendReady(ev)
	}
}

// noteLive moves the resume point past a stand-alone live event at rev:
// everything below rev is complete, rev itself maybe not (other keys of the
// same transaction may still be on their way).
func (s *subscription) noteLive(key string, rev uint64) {
	if rev > 0 && rev-1 > s.resume {
		s.resume = rev - 1
	}
	switch {
	case rev > s.edgeRev:
		s.edgeRev = rev
		s.edgeKeys = map[string]struct{}{key: {}}
	case rev == s.edgeRev:
		s.edgeKeys[key] = struct{}{}
	}
	if s.resume >= s.edgeRev {
		s.edgeRev, s.edgeKeys = 0, nil
	}
}

// completeGroup makes the group in progress deliverable and moves the
// resume point to its revision.
func (s *subscription) completeGroup() {
	s.queue[s.groupAt].Count = len(s.queue) - s.groupAt - 1
	s.ready = len(s.queue)
	s.groupN = 0
	if s.groupRev > s.resume {
		s.resume = s.groupRev
	}
	if s.resume >= s.edgeRev {
		s.edgeRev, s.edgeKeys = 0, nil
	}
	s.kick()
}

// cutGroup closes a group that other events interrupted (a server should
// not do this): it is delivered with the events it got, and only the
// revision below it counts as complete.
func (s *subscription) cutGroup() {
	if s.groupN == 0 {
		return
	}
	if len(s.queue)-s.groupAt-1 == 0 {
		s.queue = s.queue[:s.groupAt]
		s.groupN = 0
		return
	}
	s.queue[s.groupAt].Count = len(s.queue) - s.groupAt - 1
	s.ready = len(s.queue)
	s.groupN = 0
	if s.groupRev > 0 && s.groupRev-1 > s.resume {
		s.resume = s.groupRev - 1
	}
	s.kick()
}

// dropGroup forgets a group in progress (never delivered).
func (s *subscription) dropGroup() {
	if s.groupN == 0 {
		return
	}
	for _, ev := range s.queue[s.groupAt:] {
		s.bytes -= eventSize(ev)
	}
	for i := s.groupAt; i < len(s.queue); i++ {
		s.queue[i] = Event{}
	}
	s.queue = s.queue[:s.groupAt]
	s.groupN = 0
}

// lag stops the registration because the consumer is behind.
func (s *subscription) lag(cn *conn, id uint32) {
	cn.unsubscribe(id)
	s.conn = nil
	s.state = subIdle
	s.appendReady(Event{Kind: EventLagged})
}

func (s *subscription) full() bool {
	return len(s.queue) >= s.maxEvents || s.bytes >= s.maxBytes
}

func eventSize(ev Event) int { return len(ev.Key) + len(ev.Value) + 64 }

// appendReady queues a deliverable event. No group may be in progress.
func (s *subscription) appendReady(ev Event) {
	s.queue = append(s.queue, ev)
	s.bytes += eventSize(ev)
	s.ready = len(s.queue)
	s.kick()
}

func (s *subscription) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// pump delivers the queue to the consumer and resubscribes when the queue
// is empty and the subscription has no registration.
func (s *subscription) pump() {
	defer s.client.wg.Done()
	for {
		s.mu.Lock()
		if s.ready > 0 {
			ev := s.queue[0]
			s.mu.Unlock()
			select {
			case s.ch <- ev:
			case <-s.ctx.Done():
				s.finish()
				return
			case <-s.client.done:
				s.finish()
				return
			}
			s.mu.Lock()
			s.bytes -= eventSize(ev)
			s.queue[0] = Event{}
			s.queue = s.queue[1:]
			s.ready--
			if s.groupN > 0 {
				s.groupAt--
			}
			if len(s.queue) == 0 {
				s.queue = nil // let the array go
			}
			s.mu.Unlock()
			if ev.Kind == EventClosed {
				s.finish()
				return
			}
			continue
		}
		var wait <-chan struct{}
		if s.state == subIdle {
			cn, changed := s.client.currentConn()
			wait = changed
			if cn != nil && cn != s.closedOn {
				if id, build, ok := s.attach(cn); ok {
					wait = nil
					go cn.queue(context.Background(), id, typeSub, build)
				}
			}
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-wait:
		case <-s.ctx.Done():
			s.finish()
			return
		case <-s.client.done:
			s.finish()
			return
		}
	}
}

// finish ends the subscription: UNSUB if registered, channel closed.
func (s *subscription) finish() {
	s.mu.Lock()
	cn, id := s.conn, s.id
	registered := s.state == subPending || s.state == subActive
	s.state, s.conn = subDone, nil
	s.queue, s.ready, s.groupN = nil, 0, 0
	s.mu.Unlock()
	if registered && cn != nil {
		cn.unsubscribe(id)
	}
	close(s.ch)
}

// decodeEvent decodes an event frame (0xC0-0xC5).
func decodeEvent(f frame) (Event, error) {
	d := &decoder{b: f.payload}
	var ev Event
	switch f.typ {
	case typeUpdate:
		ev.Kind = EventUpdate
		ev.Revision = d.u64("revision")
		ev.Coalesced = d.u32("coalesced")
		ev.Key = d.str16("key")
		ev.Value = d.bytes32("value")
	case typeDelete:
		ev.Kind = EventDelete
		ev.Revision = d.u64("revision")
		ev.Coalesced = d.u32("coalesced")
		ev.Key = d.str16("key")
	case typeSynced:
		ev.Kind = EventSynced
		ev.Revision = d.u64("revision")
	case typeReset:
		ev.Kind = EventReset
	case typeClosed:
		ev.Kind = EventClosed
		code := Code(d.u16("code"))
		msg := d.str16("message")
		if d.err == nil && !code.known() {
			d.fail(fmt.Sprintf("CLOSED code %d is not defined by protocol version 1", code))
		}
		ev.Err = &Error{Code: code, Message: msg}
	case typeGroup:
		ev.Kind = EventGroup
		ev.Count = int(d.u32("count"))
		ev.Revision = d.u64("revision")
	}
	if err := d.end(); err != nil {
		return Event{}, fmt.Errorf("event 0x%02X: %w", f.typ, err)
	}
	return ev, nil
}
