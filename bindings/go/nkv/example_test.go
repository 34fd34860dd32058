package nkv_test

// The examples of README.md, run by `go test` against the test server
// (TestMain points NKV_ADDR at it).

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/nkv-project/nkv/bindings/go/nkv"
)

func Example() {
	ctx := context.Background()
	client, err := nkv.Connect(ctx) // $NKV_ADDR, else the default socket
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	rev, err := client.Put(ctx, "net.eth0.state", []byte("up"))
	if err != nil {
		log.Fatal(err)
	}
	entry, err := client.Get(ctx, "net.eth0.state")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s = %s\n", entry.Key, entry.Value)

	// A compare-and-set that lost: the error has the current revision.
	_, err = client.Put(ctx, "net.eth0.state", []byte("down"), nkv.IfRevision(rev-1))
	var e *nkv.Error
	if errors.As(err, &e) && e.Code == nkv.CodeConditionFailed {
		fmt.Println("not written; current revision is rev:", e.Revision == rev)
	}

	_, err = client.Get(ctx, "net.eth9.state")
	fmt.Println("eth9 absent:", errors.Is(err, nkv.ErrNotFound))
	// Output:
	// net.eth0.state = up
	// not written; current revision is rev: true
	// eth9 absent: true
}

func ExampleClient_Subscribe() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends the subscription: the channel closes
	client, err := nkv.Connect(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	client.Put(ctx, "router.wan.state", []byte("up"))
	client.Put(ctx, "router.lan.state", []byte("up"))

	events, err := client.Subscribe(ctx, "router")
	if err != nil {
		log.Fatal(err)
	}
	for ev := range events {
		switch ev.Kind {
		case nkv.EventUpdate:
			fmt.Println("update", ev.Key, string(ev.Value))
		case nkv.EventDelete:
			fmt.Println("delete", ev.Key)
		case nkv.EventSynced:
			// The snapshot is complete; what follows is live.
			fmt.Println("synced")
			client.Put(ctx, "router.wan.state", []byte("down"))
		case nkv.EventDisconnected, nkv.EventLagged:
			// Changes missed meanwhile follow, then EventSynced.
		case nkv.EventReset:
			// Forget what you hold: a full snapshot follows.
		}
		if ev.Kind == nkv.EventUpdate && string(ev.Value) == "down" {
			break
		}
	}
	// Output:
	// update router.lan.state up
	// update router.wan.state up
	// synced
	// update router.wan.state down
}

func ExampleClient_Txn() {
	ctx := context.Background()
	client, err := nkv.Connect(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	rev, _ := client.Put(ctx, "cfg.version", []byte("1"))

	// Move to version 2 only if nobody else did, and nobody holds the lock.
	res, err := client.Txn(ctx,
		[]nkv.Condition{nkv.KeyRevision("cfg.version", rev), nkv.KeyAbsent("cfg.lock")},
		[]nkv.Op{
			nkv.OpPut("cfg.version", []byte("2")),
			nkv.OpPut("cfg.net.mtu", []byte("1500")),
			nkv.OpDeletePrefix("cfg.old"),
		})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("applied above the old revision:", res.Revision > rev)

	// The same transaction again: its first condition no longer holds.
	_, err = client.Txn(ctx,
		[]nkv.Condition{nkv.KeyRevision("cfg.version", rev), nkv.KeyAbsent("cfg.lock")},
		[]nkv.Op{nkv.OpPut("cfg.version", []byte("3"))})
	var e *nkv.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code, e.Key, e.Revision == res.Revision)
	}
	// Output:
	// applied above the old revision: true
	// CONDITION_FAILED cfg.version true
}

func ExampleClient_PutEphemeral() {
	ctx := context.Background()
	client, err := nkv.Connect(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// Claim leadership: the key exists while this client is connected,
	// and for 2 s after it goes.
	_, err = client.PutEphemeral(ctx, "svc.netd.leader", []byte("pid 42"), 2*time.Second, nkv.IfAbsent())
	fmt.Println("leader:", err == nil)

	other, err := nkv.Connect(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer other.Close()
	_, err = other.PutEphemeral(ctx, "svc.netd.leader", []byte("pid 43"), 2*time.Second, nkv.IfAbsent())
	fmt.Println("second claim:", errors.Is(err, nkv.ErrConditionFailed))

	client.Close() // the claim ends 2 s later
	// Output:
	// leader: true
	// second claim: true
}
