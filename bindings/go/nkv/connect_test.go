package nkv_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkv-project/nkv/bindings/go/nkv"
)

// With no address given, the client uses $XDG_RUNTIME_DIR/nkv.sock, after
// checking that directory as protocol.md section 1 requires, even when the
// same socket is named explicitly.
func TestDefaultSocketDirectoryIsChecked(t *testing.T) {
	runtime, err := os.MkdirTemp("", "nkvrt")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(runtime)
	if err := os.Chmod(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, "--listen", "unix:"+filepath.Join(runtime, "nkv.sock"))
	t.Setenv("NKV_ADDR", "")
	t.Setenv("XDG_RUNTIME_DIR", runtime)
	if got := nkv.DefaultAddress(); got != "unix:"+filepath.Join(runtime, "nkv.sock") {
		t.Fatalf("default address %q", got)
	}
	connectDefault := func(opts ...nkv.Option) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := nkv.Connect(ctx, opts...)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := connectDefault(); err != nil {
		t.Fatalf("a private default directory: %v", err)
	}
	refused := func(what, wantInMessage string, opts ...nkv.Option) {
		t.Helper()
		err := connectDefault(opts...)
		if !errors.Is(err, nkv.ErrUnsafeSocketDir) {
			t.Fatalf("%s: connected (%v), want ErrUnsafeSocketDir", what, err)
		}
		if !strings.Contains(err.Error(), wantInMessage) {
			t.Fatalf("%s: message %q does not say %q", what, err, wantInMessage)
		}
	}

	// Writable by the group: refused, however the address was given.
	os.Chmod(runtime, 0o770)
	refused("group-writable", "chmod 700 "+runtime)
	refused("group-writable, named explicitly", "chmod 700 "+runtime, nkv.WithAddress("unix:"+filepath.Join(runtime, "nkv.sock")))
	os.Chmod(runtime, 0o702)
	refused("writable by others", runtime)
	os.Chmod(runtime, 0o700)

	// A symbolic link to the right directory: refused.
	link := runtime + "-link"
	if err := os.Symlink(runtime, link); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(link)
	t.Setenv("XDG_RUNTIME_DIR", link)
	refused("a symbolic link", "symbolic link")

	// Missing, or not a directory: refused.
	t.Setenv("XDG_RUNTIME_DIR", runtime+"-missing")
	refused("missing", "does not exist")
	file := filepath.Join(runtime, "file")
	os.WriteFile(file, nil, 0o600)
	t.Setenv("XDG_RUNTIME_DIR", file)
	refused("a file", "not a directory")

	// Owned by another user (only root can arrange that here).
	t.Setenv("XDG_RUNTIME_DIR", runtime)
	if os.Geteuid() == 0 {
		os.Chown(runtime, 65534, 65534)
		refused("another user's", "belongs to uid 65534")
		os.Chown(runtime, os.Geteuid(), os.Getegid())
	}
	if err := connectDefault(); err != nil {
		t.Fatalf("back to private: %v", err)
	}

	// A socket outside the default directory is used as given.
	os.Chmod(s.dir, 0o777)
	defer os.Chmod(s.dir, 0o700)
	c := connect(t, s.addr)
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Over TCP to a server with a token file, HELLO carries the token from
// WithToken, WithTokenFile or $NKV_TOKEN_FILE; without it the server
// refuses the handshake.
func TestTokenOverTCP(t *testing.T) {
	dir := t.TempDir()
	secret := "5f0c3e2a9b7d41e68a2c4b1d9e0f7a36"
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("# for the test\nbackup "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("tcp:127.0.0.1:%d", freePort(t))
	newServer(t, "--listen", addr, "--token-file", tokens)
	t.Setenv("NKV_TOKEN_FILE", "")

	dial := func(opts ...nkv.Option) error {
		c, err := nkv.Connect(ctxT(t), append([]nkv.Option{nkv.WithAddress(addr)}, opts...)...)
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Ping(ctxT(t))
	}
	if err := dial(nkv.WithTokenFile(tokens)); err != nil {
		t.Fatalf("with the token file: %v", err)
	}
	if err := dial(nkv.WithToken(secret)); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	if err := dial(); !errors.Is(err, nkv.ErrUnauthorized) {
		t.Fatalf("without a token: %v, want ErrUnauthorized", err)
	}
	if err := dial(nkv.WithToken("0000000000000000000000000000000")); !errors.Is(err, nkv.ErrUnauthorized) {
		t.Fatalf("with a wrong token: %v, want ErrUnauthorized", err)
	}
	t.Setenv("NKV_TOKEN_FILE", tokens)
	if err := dial(); err != nil {
		t.Fatalf("with NKV_TOKEN_FILE: %v", err)
	}
	if err := dial(nkv.WithTokenFile(filepath.Join(dir, "missing"))); err == nil {
		t.Fatal("a missing token file was ignored")
	}
}

// Connect fails at once, with a connection error, when nothing listens.
func TestConnectWithoutServer(t *testing.T) {
	_, err := nkv.Connect(ctxT(t), nkv.WithAddress("unix:"+filepath.Join(t.TempDir(), "none.sock")))
	if !errors.Is(err, nkv.ErrConnection) {
		t.Fatalf("connect to nothing: %v, want ErrConnection", err)
	}
	if _, err := nkv.Connect(ctxT(t), nkv.WithAddress("nkv.sock")); err == nil {
		t.Fatal("an address without unix: or tcp: was accepted")
	}
}
