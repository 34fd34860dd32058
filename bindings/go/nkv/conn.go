package nkv

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// errConnDead: the connection ended before the request was handed to it;
// the request was not sent and may be retried on the next connection.
var errConnDead = errors.New("nkv: connection ended before the request was sent")

// handshakeMaxFrame bounds the one frame read before HELLO_OK: the server
// limits itself to HELLO_OK or an ERROR there, both far smaller.
const handshakeMaxFrame = 64 << 10

// conn is one connection: a reader goroutine that owns the read side and
// dispatches every frame, and a writer goroutine that batches frames queued
// by callers into as few writes as possible (that is what makes
// pipelining cheap).
type conn struct {
	client  *Client
	nc      net.Conn
	limits  Limits
	started time.Time

	// out carries encoded frames to the writer. Senders block (within
	// their context) when it is full.
	out  chan []byte
	done chan struct{} // closed when the connection ends

	mu      sync.Mutex
	dead    bool
	err     error // why it ended
	nextID  uint32
	pending map[uint32]*call         // requests waiting for their final answer
	subs    map[uint32]*subscription // subscriptions registered on this connection
	retired map[uint32]struct{}      // subscriptions between UNSUB and UNSUB_OK

	failOnce sync.Once
}

// dial connects and completes the handshake (protocol.md section 4).
func (c *Client) dial(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.dialTimeout)
	defer cancel()
	if c.network == "unix" {
		if err := checkSocketDir(c.target); err != nil {
			return nil, err
		}
	}
	token, haveToken, err := readToken(&c.opts)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, c.network, c.target)
	if err != nil {
		return nil, connError("cannot connect to "+c.opts.addr, err)
	}
	limits, err := handshake(ctx, nc, c.opts.name, token, haveToken)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &conn{
		client:  c,
		nc:      nc,
		limits:  limits,
		started: time.Now(),
		out:     make(chan []byte, 256),
		done:    make(chan struct{}),
		nextID:  1, // HELLO used id 1
		pending: make(map[uint32]*call),
		subs:    make(map[uint32]*subscription),
		retired: make(map[uint32]struct{}),
	}, nil
}

func handshake(ctx context.Context, nc net.Conn, name, token string, haveToken bool) (Limits, error) {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	// Cancelling ctx unblocks the reads and writes below. The watcher has
	// exited before the deadline is cleared, so it cannot set one on the
	// established connection afterwards.
	stop, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-ctx.Done():
			nc.SetDeadline(time.Unix(1, 0))
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		<-exited
		nc.SetDeadline(time.Time{})
	}()
	wrap := func(what string, err error) error {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return connError(what, err)
	}

	e := newFrame(typeHello, 1)
	e.b = append(e.b, helloMagic[:]...)
	e.u16(protocolVersion)
	e.str16(name)
	if haveToken {
		e.str16(token)
	}
	b, err := e.finish(preHelloMaxFrame)
	if err != nil {
		return Limits{}, err
	}
	if _, err := nc.Write(b); err != nil {
		return Limits{}, wrap("handshake", err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		return Limits{}, wrap("handshake: no answer to HELLO", err)
	}
	length := binary.BigEndian.Uint32(hdr[:])
	if length < minLength || length > handshakeMaxFrame {
		return Limits{}, connError("handshake", fmt.Errorf("%w: length %d", errMalformed, length))
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(nc, body); err != nil {
		return Limits{}, wrap("handshake", err)
	}
	f := frame{typ: body[0], id: binary.BigEndian.Uint32(body[1:5]), payload: body[5:]}
	switch {
	case f.typ == typeError:
		se, err := decodeError(f.payload)
		if err != nil {
			return Limits{}, connError("handshake", err)
		}
		return Limits{}, se // the server's refusal, with its code
	case f.typ == typeHelloOK && f.id == 1:
		d := &decoder{b: f.payload}
		l := Limits{
			Version:  d.u16("version"),
			MaxFrame: d.u32("max_frame"),
			MaxKey:   d.u32("max_key"),
			MaxValue: d.u32("max_value"),
		}
		l.ServerName = d.str16("server_name")
		if err := d.end(); err != nil {
			return Limits{}, connError("handshake", err)
		}
		if l.Version != protocolVersion {
			return Limits{}, &Error{Code: CodeUnsupportedVersion, Message: fmt.Sprintf("server answered with protocol version %d; this client speaks %d", l.Version, protocolVersion)}
		}
		if l.MaxFrame < minLength {
			return Limits{}, connError("handshake", fmt.Errorf("%w: max_frame %d", errMalformed, l.MaxFrame))
		}
		return l, nil
	default:
		return Limits{}, connError("handshake", fmt.Errorf("%w: frame type 0x%02X id %d in answer to HELLO", errMalformed, f.typ, f.id))
	}
}

// start runs the reader and writer goroutines.
func (c *conn) start() {
	c.client.wg.Add(2)
	go c.readLoop()
	go c.writeLoop()
}

func (c *conn) writeLoop() {
	defer c.client.wg.Done()
	w := bufio.NewWriterSize(c.nc, 64<<10)
	for {
		select {
		case b := <-c.out:
			if _, err := w.Write(b); err != nil {
				c.fail(err)
				return
			}
			// Batch whatever else is queued into the same write.
		more:
			for {
				select {
				case b := <-c.out:
					if _, err := w.Write(b); err != nil {
						c.fail(err)
						return
					}
				default:
					break more
				}
			}
			if err := w.Flush(); err != nil {
				c.fail(err)
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *conn) readLoop() {
	defer c.client.wg.Done()
	r := bufio.NewReaderSize(c.nc, 64<<10)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			c.fail(err)
			return
		}
		length := binary.BigEndian.Uint32(hdr[:])
		if length < minLength || length > c.limits.MaxFrame {
			c.fail(fmt.Errorf("%w: length %d outside 5..%d", errMalformed, length, c.limits.MaxFrame))
			return
		}
		body := make([]byte, length)
		if _, err := io.ReadFull(r, body); err != nil {
			c.fail(err)
			return
		}
		f := frame{typ: body[0], id: binary.BigEndian.Uint32(body[1:5]), payload: body[5:]}
		if err := c.dispatch(f); err != nil {
			c.fail(err)
			return
		}
	}
}

// dispatch routes one frame from the server. An error means the stream can
// no longer be trusted (protocol.md section 3) and ends the connection.
func (c *conn) dispatch(f frame) error {
	if f.typ >= typeUpdate && f.typ <= typeGroup {
		ev, err := decodeEvent(f)
		if err != nil {
			return err
		}
		c.mu.Lock()
		s := c.subs[f.id]
		_, retired := c.retired[f.id]
		c.mu.Unlock()
		if s == nil {
			if retired {
				return nil // between UNSUB and UNSUB_OK: dropped
			}
			return fmt.Errorf("%w: event 0x%02X for subscription %d, which is not active", errMalformed, f.typ, f.id)
		}
		s.onEvent(c, f.id, ev)
		return nil
	}
	if !isResponse(f.typ) {
		return fmt.Errorf("%w: unknown frame type 0x%02X", errMalformed, f.typ)
	}
	val, err := decodeResponse(f)
	if err != nil {
		return err
	}
	if f.id == 0 {
		if se, ok := val.(*Error); ok {
			// A connection-level error: the server closes the connection.
			return se
		}
		return fmt.Errorf("%w: response 0x%02X with id 0", errMalformed, f.typ)
	}
	c.mu.Lock()
	cl := c.pending[f.id]
	if cl == nil {
		c.mu.Unlock()
		return fmt.Errorf("%w: answer 0x%02X to id %d, which no request is waiting for", errMalformed, f.typ, f.id)
	}
	if f.typ != typeError && f.typ != cl.typ|0x80 && !(cl.typ == typeList && f.typ == typeListItem) {
		c.mu.Unlock()
		return fmt.Errorf("%w: answer 0x%02X to a request of type 0x%02X", errMalformed, f.typ, cl.typ)
	}
	if f.typ == typeListItem {
		if !cl.abandoned {
			cl.items = append(cl.items, val.(Entry))
		}
		cl.nitems++
		c.mu.Unlock()
		return nil
	}
	delete(c.pending, f.id)
	items, nitems, abandoned := cl.items, cl.nitems, cl.abandoned
	cl.items = nil
	if cl.typ == typeSub && f.typ == typeError {
		delete(c.subs, f.id) // the SUB failed: no subscription
	}
	if lo, ok := val.(listOK); ok && int(lo.count) != nitems {
		c.mu.Unlock()
		return fmt.Errorf("%w: LIST_OK counts %d items, %d arrived", errMalformed, lo.count, nitems)
	}
	res := callResult{val: val, items: items}
	if se, ok := val.(*Error); ok {
		res.err = se
	}
	if cl.onAnswer != nil {
		// Under c.mu: fail (which starts a reconnection) cannot come
		// between the answer and what onAnswer records.
		cl.onAnswer(res)
	}
	c.mu.Unlock()
	if !abandoned || cl.cb != nil {
		cl.deliver(res)
	}
	return nil
}

func (cl *call) deliver(r callResult) {
	if cl.cb != nil {
		cl.cb(r)
	} else {
		cl.ch <- r // buffered: never blocks
	}
}

// allocID returns a request id in 1..=2^32-1 not used by a request in
// flight or a subscription of this connection. Callers hold c.mu.
func (c *conn) allocID() uint32 {
	for {
		c.nextID++
		id := c.nextID
		if id == 0 {
			continue
		}
		if _, ok := c.pending[id]; ok {
			continue
		}
		if _, ok := c.subs[id]; ok {
			continue
		}
		if _, ok := c.retired[id]; ok {
			continue
		}
		return id
	}
}

// request registers cl, encodes its frame and queues it for the writer.
// sent reports whether the frame was queued (then its answer will come, or
// the connection's end).
func (c *conn) request(ctx context.Context, cl *call, build func(*encoder)) (sent bool, err error) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return false, errConnDead
	}
	id := c.allocID()
	c.pending[id] = cl
	c.mu.Unlock()
	return c.queue(ctx, id, cl.typ, build)
}

// queue encodes a frame with id and hands it to the writer.
func (c *conn) queue(ctx context.Context, id uint32, typ byte, build func(*encoder)) (bool, error) {
	e := newFrame(typ, id)
	build(e)
	b, err := e.finish(c.limits.MaxFrame)
	if err != nil {
		c.forget(id)
		return false, err
	}
	select {
	case c.out <- b:
		return true, nil
	case <-c.done:
		return false, errConnDead
	case <-ctx.Done():
		c.forget(id)
		return false, ctx.Err()
	}
}

// forget drops a request that was never sent.
func (c *conn) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	delete(c.subs, id)
	c.mu.Unlock()
}

// abandon marks a call whose caller stopped waiting: its answer, when it
// comes, is dropped (the id stays reserved until then, so no later request
// can be matched with it).
func (c *conn) abandon(cl *call) {
	c.mu.Lock()
	cl.abandoned = true
	cl.items = nil
	c.mu.Unlock()
}

// sendAsync sends a request nobody waits for (UNSUB, a resubscription):
// cb runs with its answer on the reader goroutine, or with the
// connection's error. It returns the request's id.
func (c *conn) sendAsync(typ byte, build func(*encoder), cb func(callResult)) (uint32, bool) {
	cl := &call{typ: typ, cb: cb}
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return 0, false
	}
	id := c.allocID()
	c.pending[id] = cl
	c.mu.Unlock()
	go c.queue(context.Background(), id, typ, build)
	return id, true
}

// unsubscribe retires subscription id: its events are dropped from now on,
// and the id is free again once the server answered the UNSUB.
func (c *conn) unsubscribe(id uint32) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	delete(c.subs, id)
	c.retired[id] = struct{}{}
	c.mu.Unlock()
	c.sendAsync(typeUnsub, func(e *encoder) { e.u32(id) }, func(callResult) {
		c.mu.Lock()
		delete(c.retired, id)
		c.mu.Unlock()
	})
}

// fail ends the connection once: every request in flight fails, every
// subscription on it hears of the loss, and the client reconnects.
func (c *conn) fail(cause error) {
	c.failOnce.Do(func() {
		var err error
		switch {
		case errors.Is(cause, ErrClosed):
			err = ErrClosed
		case errors.Is(cause, errMalformed):
			err = connError("protocol violation by the server; connection closed", cause)
		default:
			var se *Error
			if errors.As(cause, &se) && se.Code == CodeConnection {
				err = se
			} else {
				err = connError("connection lost", cause)
			}
		}
		c.mu.Lock()
		c.dead = true
		c.err = err
		pending, subs := c.pending, c.subs
		c.pending = make(map[uint32]*call)
		c.subs = make(map[uint32]*subscription)
		c.mu.Unlock()
		close(c.done)
		c.nc.Close()
		c.client.connLost(c, time.Since(c.started))
		for _, cl := range pending {
			cl.deliver(callResult{err: err})
		}
		for id, s := range subs {
			s.onDisconnect(c, id, err)
		}
	})
}
