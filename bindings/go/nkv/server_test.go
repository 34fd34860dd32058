package nkv_test

// Test servers: every test here talks to a real nkv-server. The binary is
// $NKV_SERVER_BIN (what `cargo test --test go_client` passes); else
// $CARGO_TARGET_DIR/debug/nkv-server or target/debug/nkv-server of this
// repository if one exists; else it is built with `cargo build --bin
// nkv-server`. TestMain starts one shared server (NKV_ADDR points at it,
// which is how the examples find it); tests that stop, freeze or
// reconfigure a server start their own.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nkv-project/nkv/bindings/go/nkv"
)

var serverBin string

// shared is the server of the tests that need nothing special.
var shared *server

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	bin, err := findServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	serverBin = bin
	os.Unsetenv("NKV_TOKEN_FILE")
	shared, err = startServer(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer shared.remove()
	os.Setenv("NKV_ADDR", shared.addr)
	return m.Run()
}

func findServer() (string, error) {
	if b := os.Getenv("NKV_SERVER_BIN"); b != "" {
		return b, nil
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		return "", err
	}
	var candidates []string
	if t := os.Getenv("CARGO_TARGET_DIR"); t != "" {
		candidates = append(candidates, filepath.Join(t, "debug", "nkv-server"))
	}
	candidates = append(candidates, filepath.Join(root, "target", "debug", "nkv-server"))
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	if _, err := exec.LookPath("cargo"); err != nil {
		return "", errors.New("no nkv-server: set NKV_SERVER_BIN, or build it with `cargo build --bin nkv-server`")
	}
	fmt.Fprintln(os.Stderr, "building nkv-server with cargo (set NKV_SERVER_BIN to skip)")
	cmd := exec.Command("cargo", "build", "--bin", "nkv-server")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cargo build --bin nkv-server: %w", err)
	}
	return candidates[len(candidates)-1], nil
}

// server is one nkv-server process with its own socket and data directory.
type server struct {
	dir  string // temporary directory holding the socket, data and log
	sock string
	data string
	addr string
	args []string // extra arguments
	cmd  *exec.Cmd
}

func startServer(extra []string) (*server, error) {
	dir, err := os.MkdirTemp("", "nkvgo")
	if err != nil {
		return nil, err
	}
	s := &server{
		dir:  dir,
		sock: filepath.Join(dir, "nkv.sock"),
		data: filepath.Join(dir, "data"),
		args: extra,
	}
	s.addr = "unix:" + s.sock
	if err := s.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// newServer starts a server for one test, removed when the test ends.
func newServer(t *testing.T, extra ...string) *server {
	t.Helper()
	s, err := startServer(extra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.remove)
	return s
}

// start runs the server on s.sock (and whatever s.args add) and waits
// until it accepts connections.
func (s *server) start() error {
	return s.startOn(s.addr)
}

func (s *server) startOn(addr string) error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"--data-dir", s.data, "--shutdown-grace", "1", "--log", "warn"}
	if addr != "" {
		args = append(args, "--listen", addr)
	}
	args = append(args, s.args...)
	cmd := exec.Command(serverBin, args...)
	cmd.Env = withoutEnv(os.Environ(), "NKV_ADDR", "NKV_DATA_DIR")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", serverBin, err)
	}
	s.cmd = cmd
	listen := addr
	for _, a := range append([]string{listen}, s.args...) {
		if strings.HasPrefix(a, "unix:") || strings.HasPrefix(a, "tcp:") {
			listen = a
		}
	}
	network, target := "unix", strings.TrimPrefix(listen, "unix:")
	if strings.HasPrefix(listen, "tcp:") {
		network, target = "tcp", strings.TrimPrefix(listen, "tcp:")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout(network, target, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			s.kill()
			log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
			return fmt.Errorf("nkv-server did not start on %s: %v\n%s", listen, err, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
next:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// kill stops the server with SIGKILL (a crash) and waits for it.
func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// terminate stops the server with SIGTERM (a clean shutdown).
func (s *server) terminate(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("nkv-server did not stop on SIGTERM")
	}
	s.cmd = nil
}

func (s *server) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// freeze stops the server with SIGSTOP and waits until every thread of it
// has stopped (the signal takes effect asynchronously).
func (s *server) freeze(t *testing.T) {
	t.Helper()
	s.signal(t, syscall.SIGSTOP)
	pid := s.cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(tasks) > 0
		for _, task := range tasks {
			b, err := os.ReadFile(task)
			// The state follows the parenthesised command name.
			if i := bytes.LastIndexByte(b, ')'); err != nil || i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				stopped = false
			}
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nkv-server did not stop on SIGSTOP")
		}
		time.Sleep(time.Millisecond)
	}
}

// thaw resumes a frozen server.
func (s *server) thaw(t *testing.T) { s.signal(t, syscall.SIGCONT) }

func (s *server) remove() {
	if s.cmd != nil {
		// A frozen server must be thawed to die promptly.
		s.cmd.Process.Signal(syscall.SIGCONT)
	}
	s.kill()
	os.RemoveAll(s.dir)
}

// connect connects to s with options for tests; closed at the end.
func connect(t *testing.T, addr string, opts ...nkv.Option) *nkv.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nkv.Connect(ctx, append([]nkv.Option{nkv.WithAddress(addr)}, opts...)...)
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ctxT is a context for one step of a test.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// prefixFor gives each test its own key space on the shared server.
func prefixFor(t *testing.T) string {
	name := strings.NewReplacer("/", "_", " ", "_", ".", "_").Replace(t.Name())
	return "test." + name
}

// next reads one event or fails the test after a timeout.
func next(t *testing.T, events <-chan nkv.Event) nkv.Event {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("event channel closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	panic("unreachable")
}

// expectKind reads one event and checks its kind.
func expectKind(t *testing.T, events <-chan nkv.Event, kind nkv.EventKind) nkv.Event {
	t.Helper()
	ev := next(t, events)
	if ev.Kind != kind {
		t.Fatalf("got %v, want a %v event", ev, kind)
	}
	return ev
}

// untilSynced reads events up to and including the next SYNCED.
func untilSynced(t *testing.T, events <-chan nkv.Event) (before []nkv.Event, synced nkv.Event) {
	t.Helper()
	for {
		ev := next(t, events)
		if ev.Kind == nkv.EventSynced {
			return before, ev
		}
		before = append(before, ev)
	}
}

// noEvent checks that nothing arrives for a short while.
func noEvent(t *testing.T, events <-chan nkv.Event, d time.Duration) {
	t.Helper()
	select {
	case ev, ok := <-events:
		if ok {
			t.Fatalf("unexpected event %v", ev)
		}
		t.Fatal("event channel closed unexpectedly")
	case <-time.After(d):
	}
}

// view applies events to a map the way a subscriber keeps state.
type view map[string]string

func (v view) apply(ev nkv.Event) {
	switch ev.Kind {
	case nkv.EventUpdate:
		v[ev.Key] = string(ev.Value)
	case nkv.EventDelete:
		delete(v, ev.Key)
	case nkv.EventReset:
		for k := range v {
			delete(v, k)
		}
	}
}

// stored lists the prefix as a view.
func stored(t *testing.T, c *nkv.Client, prefix string) view {
	t.Helper()
	entries, _, err := c.List(ctxT(t), prefix)
	if err != nil {
		t.Fatal(err)
	}
	v := view{}
	for _, e := range entries {
		v[e.Key] = string(e.Value)
	}
	return v
}

func (v view) String() string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s ", k, v[k])
	}
	return b.String()
}

func mustPut(t *testing.T, c *nkv.Client, key, value string) uint64 {
	t.Helper()
	rev, err := c.Put(ctxT(t), key, []byte(value))
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return rev
}
