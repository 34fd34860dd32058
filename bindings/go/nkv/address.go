package nkv

// Addresses (protocol.md section 1): the syntax, the default address, and
// the safety check of the default socket directory. Token files
// (protocol.md section 4, docs/security.md).

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultAddress returns the address a client connects to when none is
// given: $NKV_ADDR if set, else unix:$XDG_RUNTIME_DIR/nkv.sock if
// XDG_RUNTIME_DIR is set, else unix:/tmp/nkv-$UID/nkv.sock. An empty
// variable counts as unset.
func DefaultAddress() string {
	if a := os.Getenv("NKV_ADDR"); a != "" {
		return a
	}
	return "unix:" + filepath.Join(DefaultDir(), "nkv.sock")
}

// DefaultDir returns the directory of the default socket: $XDG_RUNTIME_DIR
// if set, else /tmp/nkv-$UID. A socket in this directory is only used after
// the directory passed the safety check of protocol.md section 1, however
// its address was given.
func DefaultDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return d
	}
	return fmt.Sprintf("/tmp/nkv-%d", os.Getuid())
}

// parseAddress splits "unix:PATH" or "tcp:HOST:PORT" into the network and
// address arguments of net.Dial. HOST may be a name, an IPv4 address, or
// an IPv6 address in brackets; the port is the text after the last colon.
func parseAddress(addr string) (network, target string, err error) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(addr, "unix:")
		if path == "" {
			return "", "", fmt.Errorf("nkv: address %q has an empty path", addr)
		}
		return "unix", path, nil
	case strings.HasPrefix(addr, "tcp:"):
		rest := strings.TrimPrefix(addr, "tcp:")
		i := strings.LastIndexByte(rest, ':')
		if i < 0 {
			return "", "", fmt.Errorf("nkv: address %q has no port (tcp:HOST:PORT)", addr)
		}
		host, port := rest[:i], rest[i+1:]
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return "", "", fmt.Errorf("nkv: address %q has no valid port", addr)
		}
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		} else if strings.Contains(host, ":") {
			return "", "", fmt.Errorf("nkv: address %q: an IPv6 host goes in brackets (tcp:[::1]:4222)", addr)
		}
		if host == "" {
			return "", "", fmt.Errorf("nkv: address %q has no host", addr)
		}
		return "tcp", net.JoinHostPort(host, port), nil
	default:
		return "", "", fmt.Errorf("nkv: address %q is neither unix:PATH nor tcp:HOST:PORT", addr)
	}
}

// checkSocketDir applies protocol.md section 1 before connecting to a Unix
// socket: when the socket's directory is the client's default directory,
// that directory must be a real directory (not a symbolic link), owned by
// the client's effective uid or root, and not writable by group or others;
// its parent must be owned by the client or root and not writable by group
// or others unless sticky. A socket elsewhere was named by the user and is
// used as given.
func checkSocketDir(path string) error {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil // cannot be the (absolute) default directory
	}
	def, err := filepath.Abs(DefaultDir())
	if err != nil || dir != def {
		return nil
	}
	euid := uint32(os.Geteuid())
	st, err := statNoFollow(dir)
	if err != nil {
		var why string
		fi, lerr := os.Lstat(dir)
		switch {
		case errors.Is(lerr, os.ErrNotExist):
			why = "it does not exist (is nkv-server running? it creates it)"
		case lerr == nil && fi.Mode()&os.ModeSymlink != 0:
			why = "it is a symbolic link; fix: remove it and let nkv-server create the directory"
		case lerr == nil && !fi.IsDir():
			why = "it is not a directory; fix: remove it and let nkv-server create the directory"
		default:
			why = err.Error()
		}
		return unsafeDir(dir, why)
	}
	if !st.isDir {
		return unsafeDir(dir, "it is not a directory; fix: remove it and let nkv-server create the directory")
	}
	if st.uid != euid && st.uid != 0 {
		return unsafeDir(dir, fmt.Sprintf("it belongs to uid %d, not to you (uid %d) or root, so another user could run a server there; fix: remove it (as its owner or root) and let nkv-server create it", st.uid, euid))
	}
	if st.mode&0o022 != 0 {
		return unsafeDir(dir, fmt.Sprintf("it is writable by group or others (mode %04o); fix: chmod 700 %s", st.mode&0o7777, dir))
	}
	parent := filepath.Dir(dir)
	pst, err := statFollow(parent)
	if err != nil {
		return unsafeDir(dir, fmt.Sprintf("its parent %s cannot be examined: %v", parent, err))
	}
	if pst.uid != euid && pst.uid != 0 {
		return unsafeDir(dir, fmt.Sprintf("its parent %s belongs to uid %d, who could rename it; fix: use a directory under one you own (XDG_RUNTIME_DIR) or an explicit address", parent, pst.uid))
	}
	if pst.mode&0o022 != 0 && pst.mode&0o1000 == 0 {
		return unsafeDir(dir, fmt.Sprintf("its parent %s is writable by group or others without the sticky bit (mode %04o); fix: chmod o-w,g-w %s or chmod +t %s", parent, pst.mode&0o7777, parent, parent))
	}
	return nil
}

// ErrUnsafeSocketDir is matched (errors.Is) by the refusal to connect
// through a default socket directory that fails the safety check.
var ErrUnsafeSocketDir = errors.New("nkv: unsafe socket directory")

func unsafeDir(dir, why string) error {
	return fmt.Errorf("%w: refusing to connect through %s: %s", ErrUnsafeSocketDir, dir, why)
}

// dirStat is what the safety check needs of a directory.
type dirStat struct {
	isDir bool
	uid   uint32
	mode  uint32 // permission bits with setuid/setgid/sticky
}

// readToken returns the token to send in HELLO: the explicit token, else
// the first secret of the token file (the explicit one, else
// $NKV_TOKEN_FILE), else none.
func readToken(o *options) (token string, have bool, err error) {
	if o.haveToken {
		return o.token, true, nil
	}
	path := o.tokenFile
	if path == "" {
		path = os.Getenv("NKV_TOKEN_FILE")
	}
	if path == "" {
		return "", false, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false, fmt.Errorf("nkv: token file: %w", err)
	}
	tok, err := parseTokenFile(string(data))
	if err != nil {
		return "", false, fmt.Errorf("nkv: token file %s: %w", path, err)
	}
	return tok, true, nil
}

// parseTokenFile reads the token file format of protocol.md section 4:
// one secret per line, "NAME SECRET" or a lone "SECRET"; "#" starts a
// comment wherever it is (as the server reads the file). The client sends
// the first secret in the file.
func parseTokenFile(text string) (string, error) {
	for n, line := range strings.Split(text, "\n") {
		if at := strings.IndexByte(line, '#'); at >= 0 {
			line = line[:at]
		}
		fields := strings.Fields(line)
		switch len(fields) {
		case 0:
			continue
		case 1:
			return fields[0], nil
		case 2:
			return fields[1], nil
		default:
			return "", fmt.Errorf("line %d: expected SECRET or NAME SECRET", n+1)
		}
	}
	return "", errors.New("no secret in the file")
}
