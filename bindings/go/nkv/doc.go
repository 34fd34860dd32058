// Package nkv is a client of nkv, the notify key-value store, written from
// the wire protocol specification (protocol.md) with the standard library
// only.
//
// A Client holds one connection, shared by every goroutine that uses it:
// requests are pipelined and matched to their answers by id, and
// subscriptions receive their events on channels. Every call takes a
// context for cancellation and deadlines.
//
//	client, err := nkv.Connect(ctx) // $NKV_ADDR, else the default socket
//	rev, err := client.Put(ctx, "net.eth0.state", []byte("up"))
//	entry, err := client.Get(ctx, "net.eth0.state")
//	events, err := client.Subscribe(ctx, "net")
//	for ev := range events { ... }
//
// Errors answered by the server are *Error values carrying the protocol's
// error code; errors.Is(err, nkv.ErrNotFound) (or any other Code) tests
// the code, errors.As gives the details (the current revision and key of a
// failed condition).
//
// When the connection is lost the client reconnects with backoff and
// resumes every subscription from the last revision its subscriber has
// complete: the subscriber sees EventDisconnected, the changes it missed
// (or EventReset and a new snapshot), then EventSynced.
package nkv
