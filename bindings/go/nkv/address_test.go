package nkv

// Internal tests of the address rules; the rest of the suite is in package
// nkv_test and uses only the public API.

import (
	"fmt"
	"os"
	"testing"
)

func TestParseAddress(t *testing.T) {
	ok := []struct{ in, network, target string }{
		{"unix:/run/user/1000/nkv.sock", "unix", "/run/user/1000/nkv.sock"},
		{"unix:rel/nkv.sock", "unix", "rel/nkv.sock"},
		{"tcp:localhost:4222", "tcp", "localhost:4222"},
		{"tcp:127.0.0.1:7411", "tcp", "127.0.0.1:7411"},
		{"tcp:[::1]:4222", "tcp", "[::1]:4222"},
	}
	for _, c := range ok {
		n, tg, err := parseAddress(c.in)
		if err != nil || n != c.network || tg != c.target {
			t.Errorf("parseAddress(%q) = %q, %q, %v; want %q, %q", c.in, n, tg, err, c.network, c.target)
		}
	}
	for _, bad := range []string{"", "nkv.sock", "unix:", "tcp:host", "tcp::80", "tcp:host:", "tcp:host:0", "tcp:host:x", "tcp:host:70000", "tcp:::1:80", "udp:host:1"} {
		if _, _, err := parseAddress(bad); err == nil {
			t.Errorf("parseAddress(%q) accepted", bad)
		}
	}
}

func TestDefaultAddressRules(t *testing.T) {
	t.Setenv("NKV_ADDR", "tcp:example:1")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/42")
	if got := DefaultAddress(); got != "tcp:example:1" {
		t.Fatalf("with NKV_ADDR: %q", got)
	}
	t.Setenv("NKV_ADDR", "")
	if got := DefaultAddress(); got != "unix:/run/user/42/nkv.sock" {
		t.Fatalf("with XDG_RUNTIME_DIR: %q", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	if got, want := DefaultAddress(), fmt.Sprintf("unix:/tmp/nkv-%d/nkv.sock", os.Getuid()); got != want {
		t.Fatalf("with neither: %q, want %q", got, want)
	}
}

func TestParseTokenFile(t *testing.T) {
	cases := []struct{ text, want string }{
		{"5f0c3e2a9b7d41e68a2c4b1d9e0f7a36\n", "5f0c3e2a9b7d41e68a2c4b1d9e0f7a36"},
		{"5f0c3e2a9b7d41e68a2c4b1d9e0f7a36", "5f0c3e2a9b7d41e68a2c4b1d9e0f7a36"},
		{"# tokens\n\nbackup 0123456789abcdef0123  # the backup job\nother fedcba9876543210fedc\n", "0123456789abcdef0123"},
		{"  spaced-secret-0123456789  \r\n", "spaced-secret-0123456789"},
	}
	for _, c := range cases {
		got, err := parseTokenFile(c.text)
		if err != nil || got != c.want {
			t.Errorf("parseTokenFile(%q) = %q, %v; want %q", c.text, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "# only a comment\n", "a b c\n"} {
		if _, err := parseTokenFile(bad); err == nil {
			t.Errorf("parseTokenFile(%q) accepted", bad)
		}
	}
}
