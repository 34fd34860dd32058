package nkv

import (
	"errors"
	"fmt"
)

// Code is an error code of the protocol (protocol.md section 9). A Code is
// also an error, so each named code works as a sentinel with errors.Is:
//
//	if errors.Is(err, nkv.ErrNotFound) { ... }
//
// Codes 6 (CodeConnection) and 12 (CodePanic) are client-side statuses that
// the server never sends; this client uses CodeConnection for a lost or
// unusable connection.
type Code uint16

// The error codes of protocol version 1.
const (
	CodeNotFound           Code = 1
	CodeConditionFailed    Code = 2
	CodeInvalidKey         Code = 3
	CodeTooLarge           Code = 4
	CodeInvalidArgument    Code = 5
	CodeConnection         Code = 6
	CodeTimeout            Code = 7
	CodeProtocol           Code = 8
	CodeUnauthorized       Code = 9
	CodeServer             Code = 10
	CodeShuttingDown       Code = 11
	CodePanic              Code = 12
	CodeUnsupported        Code = 13
	CodeLimit              Code = 14
	CodeStorage            Code = 15
	CodeUnsupportedVersion Code = 16
)

var codeNames = map[Code]string{
	CodeNotFound:           "NOT_FOUND",
	CodeConditionFailed:    "CONDITION_FAILED",
	CodeInvalidKey:         "INVALID_KEY",
	CodeTooLarge:           "TOO_LARGE",
	CodeInvalidArgument:    "INVALID_ARGUMENT",
	CodeConnection:         "CONNECTION",
	CodeTimeout:            "TIMEOUT",
	CodeProtocol:           "PROTOCOL",
	CodeUnauthorized:       "UNAUTHORIZED",
	CodeServer:             "SERVER",
	CodeShuttingDown:       "SHUTTING_DOWN",
	CodePanic:              "PANIC",
	CodeUnsupported:        "UNSUPPORTED",
	CodeLimit:              "LIMIT",
	CodeStorage:            "STORAGE",
	CodeUnsupportedVersion: "UNSUPPORTED_VERSION",
}

// String returns the protocol's name of the code, e.g. "NOT_FOUND".
func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code %d", uint16(c))
}

// Error makes a Code usable as a sentinel error. It is the same as String,
// so that printing a Code gives its name.
func (c Code) Error() string { return c.String() }

// known reports whether the server may send the code (section 9): the two
// client-side statuses and undefined numbers are not.
func (c Code) known() bool {
	_, ok := codeNames[c]
	return ok && c != CodeConnection && c != CodePanic
}

// Sentinels for errors.Is. Each is the Code itself.
var (
	ErrNotFound           error = CodeNotFound
	ErrConditionFailed    error = CodeConditionFailed
	ErrInvalidKey         error = CodeInvalidKey
	ErrTooLarge           error = CodeTooLarge
	ErrInvalidArgument    error = CodeInvalidArgument
	ErrConnection         error = CodeConnection
	ErrTimeout            error = CodeTimeout
	ErrProtocol           error = CodeProtocol
	ErrUnauthorized       error = CodeUnauthorized
	ErrServer             error = CodeServer
	ErrShuttingDown       error = CodeShuttingDown
	ErrUnsupported        error = CodeUnsupported
	ErrLimit              error = CodeLimit
	ErrStorage            error = CodeStorage
	ErrUnsupportedVersion error = CodeUnsupportedVersion
)

// ErrClosed is returned by calls on a Client after Close.
var ErrClosed = errors.New("nkv: client is closed")

// Error is an error answered by the server (an ERROR frame), or a
// client-side error with one of the protocol's codes (CodeConnection for a
// lost connection, CodeTooLarge for a frame the client must not send,
// CodeInvalidKey for a key no str16 can carry).
//
// errors.Is(err, nkv.ErrNotFound) (or any Code) matches on Code;
// errors.As(err, &e) with e *nkv.Error gives the details.
type Error struct {
	Code    Code
	Message string // human-readable, from the server: never parse it
	// Revision is, for CodeConditionFailed, the key's current revision (0
	// when the key is absent).
	Revision uint64
	// Key is, for CodeConditionFailed answering a transaction, the key of
	// the first condition that failed (HasKey is then true).
	Key    string
	HasKey bool
	// Err is the underlying cause of a client-side error (for
	// CodeConnection, the I/O error or the server's connection-level
	// ERROR), or nil.
	Err error
}

func (e *Error) Error() string {
	s := "nkv: " + e.Code.String()
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches a Code sentinel with the same code.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// Unwrap returns the cause of a client-side error.
func (e *Error) Unwrap() error { return e.Err }

func connError(msg string, cause error) *Error {
	return &Error{Code: CodeConnection, Message: msg, Err: cause}
}
