package nkv

import (
	"context"
	"errors"
	"math/rand"
	"sync"
	"time"
)

// Version of this client, sent in HELLO as part of the default client name.
const Version = "0.1.0"

// Limits are the server's limits and identity, from HELLO_OK.
type Limits struct {
	Version    uint16 // protocol version in use (1)
	MaxFrame   uint32 // largest frame length either side may send
	MaxKey     uint32 // largest key, in bytes
	MaxValue   uint32 // largest value, in bytes
	ServerName string
}

type options struct {
	addr           string
	token          string
	haveToken      bool
	tokenFile      string
	name           string
	dialTimeout    time.Duration
	requestTimeout time.Duration
	reconnect      bool
	backoffMin     time.Duration
	backoffMax     time.Duration
	subEvents      int
	subBytes       int
}

// Option configures Connect.
type Option func(*options)

// WithAddress sets the server's address, "unix:PATH" or "tcp:HOST:PORT"
// (an IPv6 HOST in brackets). Default: DefaultAddress().
func WithAddress(addr string) Option { return func(o *options) { o.addr = addr } }

// WithToken sets the token sent in HELLO (protocol.md section 4). Over TCP
// to a server with a token file it is required; over a Unix socket it is
// optional, but must be right if sent.
func WithToken(token string) Option {
	return func(o *options) { o.token, o.haveToken = token, true }
}

// WithTokenFile names a token file (docs/security.md: one secret per line,
// "NAME SECRET" or a lone "SECRET", "#" starts a comment); the first secret
// in it is sent. The file is read at every (re)connection. Default:
// $NKV_TOKEN_FILE, if set. WithToken takes precedence.
func WithTokenFile(path string) Option { return func(o *options) { o.tokenFile = path } }

// WithClientName sets the client name sent in HELLO, shown in the server's
// logs. Default: "nkv-go <Version>".
func WithClientName(name string) Option { return func(o *options) { o.name = name } }

// WithDialTimeout bounds connecting and the handshake, for Connect and for
// every reconnection attempt. Default 5 s.
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithRequestTimeout bounds every call (including the time spent waiting
// for a reconnection) in addition to the call's context. Default 30 s; 0
// leaves it to the context alone. For Subscribe it bounds the wait for the
// server's SUB_OK, not the life of the subscription.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) { o.requestTimeout = d }
}

// WithReconnect turns automatic reconnection on (the default) or off.
// Without it, a lost connection fails every later call with ErrConnection
// and ends every subscription with an EventClosed.
func WithReconnect(on bool) Option { return func(o *options) { o.reconnect = on } }

// WithBackoff sets the delay before the first reconnection attempt (min)
// and the most it grows to, doubling after each failed attempt (max), with
// up to 25% random jitter. Default 50 ms and 5 s.
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = min, max }
}

// WithSubscriptionBuffer bounds what a subscription holds for a consumer
// that reads its channel slowly: at most events live events and bytes bytes
// of keys and values, not counting a snapshot (at most one event per key)
// or one transaction group in progress. Past the bound the client stops
// the subscription at the server, lets the consumer drain what it holds,
// then delivers EventLagged's catch-up (see Subscribe). Default 1024
// events, 4 MiB.
func WithSubscriptionBuffer(events, bytes int) Option {
	return func(o *options) { o.subEvents, o.subBytes = events, bytes }
}

func defaultOptions() options {
	return options{
		name:           "nkv-go " + Version,
		dialTimeout:    5 * time.Second,
		requestTimeout: 30 * time.Second,
		reconnect:      true,
		backoffMin:     50 * time.Millisecond,
		backoffMax:     5 * time.Second,
		subEvents:      1024,
		subBytes:       4 << 20,
	}
}

// Client is a connection to an nkv server, safe for use by many goroutines
// at once: their requests are pipelined over one connection and each answer
// is matched to its request by id. When the connection is lost the client
// reconnects in the background (see WithReconnect); calls made meanwhile
// wait for it, within their context and the request timeout.
type Client struct {
	opts    options
	network string
	target  string

	mu       sync.Mutex
	conn     *conn         // the live connection; nil while reconnecting
	connWait chan struct{} // closed and replaced whenever conn changes
	closed   bool
	lost     error // with reconnection off: why the connection ended
	limits   Limits
	backoff  time.Duration // next reconnection delay

	// held: the ephemeral keys this client holds (ephemeral.go). hmu is
	// taken last: under conn.mu or c.mu, never the other way round.
	hmu  sync.Mutex
	held map[string]heldKey

	done chan struct{} // closed by Close
	wg   sync.WaitGroup
}

// Connect connects to an nkv server and completes the handshake. It does
// not retry: an error means no connection was made (an *Error with the
// server's code when the server refused the HELLO, ErrUnsafeSocketDir when
// the default socket directory failed the safety check).
func Connect(ctx context.Context, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, f := range opts {
		f(&o)
	}
	if o.addr == "" {
		o.addr = DefaultAddress()
	}
	if o.backoffMin <= 0 {
		o.backoffMin = time.Millisecond
	}
	if o.backoffMax < o.backoffMin {
		o.backoffMax = o.backoffMin
	}
	if o.subEvents <= 0 {
		o.subEvents = 1
	}
	network, target, err := parseAddress(o.addr)
	if err != nil {
		return nil, err
	}
	c := &Client{
		opts:     o,
		network:  network,
		target:   target,
		connWait: make(chan struct{}),
		done:     make(chan struct{}),
		backoff:  o.backoffMin,
	}
	cn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.conn = cn
	c.limits = cn.limits
	cn.start()
	return c, nil
}

// Limits returns the limits announced by the server at the latest
// handshake.
func (c *Client) Limits() Limits {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.limits
}

// Close closes the connection and ends every subscription: their channels
// are closed by the time Close returns. Ephemeral keys of this client are
// then deleted by the server (after their grace period). Calls in flight
// fail with ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.wg.Wait()
		return nil
	}
	c.closed = true
	cn := c.conn
	c.conn = nil
	close(c.done)
	close(c.connWait)
	c.mu.Unlock()
	if cn != nil {
		cn.fail(ErrClosed)
	}
	c.wg.Wait()
	c.disownAll()
	return nil
}

// getConn returns the live connection, waiting for a reconnection if need
// be.
func (c *Client) getConn(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if c.lost != nil {
			err := c.lost
			c.mu.Unlock()
			return nil, connError("connection lost (reconnection is off)", err)
		}
		if c.conn != nil {
			cn := c.conn
			c.mu.Unlock()
			return cn, nil
		}
		wait := c.connWait
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// currentConn returns the live connection and a channel closed when it
// changes, without waiting.
func (c *Client) currentConn() (*conn, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, c.done
	}
	return c.conn, c.connWait
}

// connLost is called once by a connection that ended.
func (c *Client) connLost(cn *conn, lived time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != cn {
		return
	}
	c.conn = nil
	close(c.connWait)
	c.connWait = make(chan struct{})
	if c.closed {
		return
	}
	if !c.opts.reconnect {
		c.lost = cn.err
		c.disownAll()
		return
	}
	// A connection that lived long resets the backoff; one that died at
	// once (a server that accepts and closes) keeps it growing.
	if lived > c.opts.backoffMax {
		c.backoff = c.opts.backoffMin
	}
	c.wg.Add(1)
	go c.reconnectLoop()
}

func (c *Client) reconnectLoop() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		d := c.backoff
		c.backoff *= 2
		if c.backoff > c.opts.backoffMax {
			c.backoff = c.opts.backoffMax
		}
		c.mu.Unlock()
		d += time.Duration(rand.Int63n(int64(d)/4 + 1))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.done:
			t.Stop()
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		stop := make(chan struct{})
		go func() {
			select {
			case <-c.done:
				cancel()
			case <-stop:
			}
		}()
		cn, err := c.dial(ctx)
		if err != nil {
			close(stop)
			cancel()
			continue
		}
		// The held ephemeral keys first, before the connection is handed
		// to callers and subscriptions: their grace period is running.
		cn.start()
		c.reassert(ctx, cn)
		close(stop)
		cancel()
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			cn.fail(ErrClosed)
			return
		}
		cn.mu.Lock()
		dead := cn.dead
		cn.mu.Unlock()
		if dead {
			// It ended before it was handed over (its connLost did
			// nothing): try again.
			c.mu.Unlock()
			continue
		}
		c.conn = cn
		c.limits = cn.limits
		close(c.connWait)
		c.connWait = make(chan struct{})
		c.mu.Unlock()
		return
	}
}

// call is one request waiting for its final answer.
type call struct {
	typ byte
	// ch receives the result, unless cb is set: then cb runs on the
	// reader goroutine (it must not block).
	ch chan callResult
	cb func(callResult)
	// onAnswer, if set, sees the server's answer (never a lost
	// connection's error) on the reader goroutine under conn.mu, before it
	// is delivered, even to a caller who stopped waiting. It may take
	// Client.hmu and nothing else. Ephemeral keys are recorded there, so a
	// reconnection cannot fall between a PUT_OK and the record of it.
	onAnswer func(callResult)
	// items collects LIST_ITEMs; abandoned calls drop them.
	items     []Entry
	nitems    int
	abandoned bool // guarded by conn.mu
}

// callResult is a decoded final answer (val: see decodeResponse), the
// LIST_ITEMs before it, or the error that ended the call.
type callResult struct {
	val   any
	items []Entry
	err   error
}

// roundTrip sends one request and waits for its final answer. A request
// that could not be handed to a connection before it died is retried on
// the next one; a request in flight when the connection is lost fails with
// ErrConnection (the server does not replay answers: it may or may not
// have been applied).
func (c *Client) roundTrip(ctx context.Context, typ byte, build func(*encoder)) (callResult, error) {
	return c.roundTripWith(ctx, typ, nil, build)
}

// roundTripWith is roundTrip with the call's onAnswer hook.
func (c *Client) roundTripWith(ctx context.Context, typ byte, onAnswer func(callResult), build func(*encoder)) (callResult, error) {
	if c.opts.requestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.requestTimeout)
		defer cancel()
	}
	for {
		cn, err := c.getConn(ctx)
		if err != nil {
			return callResult{}, err
		}
		cl := &call{typ: typ, ch: make(chan callResult, 1), onAnswer: onAnswer}
		sent, err := cn.request(ctx, cl, build)
		if err != nil {
			if errors.Is(err, errConnDead) {
				continue
			}
			if sent {
				// Written or queued: the answer must still be consumed.
				cn.abandon(cl)
			}
			return callResult{}, err
		}
		select {
		case r := <-cl.ch:
			if r.err != nil {
				return r, r.err
			}
			return r, nil
		case <-ctx.Done():
			cn.abandon(cl)
			return callResult{}, ctx.Err()
		}
	}
}
