package nkv

// The wire format of protocol.md: frame types (section 13), field encodings
// (section 2) and the frame header (section 3). Nothing here does I/O.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Frame types (protocol.md section 13).
const (
	typeHello   byte = 0x01
	typePing    byte = 0x02
	typeGet     byte = 0x10
	typePut     byte = 0x11
	typeDel     byte = 0x12
	typeList    byte = 0x13
	typeSub     byte = 0x14
	typeUnsub   byte = 0x15
	typeStats   byte = 0x16
	typeCompact byte = 0x17
	typeTxn     byte = 0x19

	typeHelloOK   byte = 0x81
	typePong      byte = 0x82
	typeGetOK     byte = 0x90
	typePutOK     byte = 0x91
	typeDelOK     byte = 0x92
	typeListOK    byte = 0x93
	typeSubOK     byte = 0x94
	typeUnsubOK   byte = 0x95
	typeStatsOK   byte = 0x96
	typeCompactOK byte = 0x97
	typeListItem  byte = 0x98
	typeTxnOK     byte = 0x99

	typeUpdate byte = 0xC0
	typeDelete byte = 0xC1
	typeSynced byte = 0xC2
	typeReset  byte = 0xC3
	typeClosed byte = 0xC4
	typeGroup  byte = 0xC5

	typeError byte = 0xFF
)

// Constants of protocol.md.
const (
	protocolVersion  = 1
	headerSize       = 9    // length (4), type (1), id (4)
	minLength        = 5    // type + id
	preHelloMaxFrame = 4096 // limit on a frame before HELLO_OK
	maxGraceMs       = 600000

	putFlagEphemeral = 0x01
	delFlagPrefix    = 0x01
	subFlagResume    = 0x01
	subFlagGrouped   = 0x02

	condNone     = 0
	condAbsent   = 1
	condRevision = 2
)

var helloMagic = [4]byte{'N', 'K', 'V', 0}

// encoder appends one frame to a byte slice; finish patches its length.
type encoder struct {
	b   []byte
	err error
}

func newFrame(typ byte, id uint32) *encoder {
	e := &encoder{b: make([]byte, headerSize, 64)}
	e.b[4] = typ
	binary.BigEndian.PutUint32(e.b[5:], id)
	return e
}

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }

// str16 writes a key, prefix or name. A string longer than a u16 length can
// say cannot be sent; the server's own rule for such a key is INVALID_KEY,
// so that is the error the caller gets, without a round trip.
func (e *encoder) str16(s string) {
	if len(s) > 0xFFFF {
		if e.err == nil {
			e.err = &Error{Code: CodeInvalidKey, Message: fmt.Sprintf("string of %d bytes does not fit a str16 field", len(s))}
		}
		return
	}
	e.u16(uint16(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) bytes32(v []byte) {
	e.u32(uint32(len(v)))
	e.b = append(e.b, v...)
}

// finish writes the length field and checks the frame against maxFrame.
func (e *encoder) finish(maxFrame uint32) ([]byte, error) {
	if e.err != nil {
		return nil, e.err
	}
	length := len(e.b) - 4
	if uint64(length) > uint64(maxFrame) {
		return nil, &Error{Code: CodeTooLarge, Message: fmt.Sprintf("frame of %d bytes is over the server's max_frame %d", length, maxFrame)}
	}
	binary.BigEndian.PutUint32(e.b[0:], uint32(length))
	return e.b, nil
}

// frame is one decoded frame header with its payload.
type frame struct {
	typ     byte
	id      uint32
	payload []byte
}

// errMalformed marks a frame the client cannot decode: protocol.md section 3
// says the client MUST then close the connection.
var errMalformed = errors.New("malformed frame")

// decoder reads the fields of a payload in order; the first overrun sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errMalformed, what)
	}
}

func (d *decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail(what + " runs past the end of the frame")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8(what string) uint8 {
	if b := d.take(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16(what string) uint16 {
	if b := d.take(2, what); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32(what string) uint32 {
	if b := d.take(4, what); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64(what string) uint64 {
	if b := d.take(8, what); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// str16 reads a string and insists on UTF-8 (section 3: invalid UTF-8 from
// the server is a frame the client cannot trust).
func (d *decoder) str16(what string) string {
	n := int(d.u16(what + " length"))
	b := d.take(n, what)
	if d.err != nil {
		return ""
	}
	if !utf8.Valid(b) {
		d.fail(what + " is not valid UTF-8")
		return ""
	}
	return string(b)
}

// bytes32 reads a value; the result is a copy the caller may keep.
func (d *decoder) bytes32(what string) []byte {
	n := d.u32(what + " length")
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(d.b)) {
		d.fail(what + " runs past the end of the frame")
		return nil
	}
	v := make([]byte, n)
	copy(v, d.take(int(n), what))
	return v
}

// end checks that the fields filled the frame exactly.
func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d bytes left after the last field", len(d.b)))
	}
	return d.err
}

// decodeError reads an ERROR payload (section 9).
func decodeError(payload []byte) (*Error, error) {
	d := &decoder{b: payload}
	code := Code(d.u16("code"))
	msg := d.str16("message")
	e := &Error{Code: code, Message: msg}
	if d.err == nil && !code.known() {
		d.fail(fmt.Sprintf("error code %d is not defined by protocol version 1", code))
	}
	if code == CodeConditionFailed {
		e.Revision = d.u64("current_revision")
		// The key follows only for a TXN; a frame that ends here has none.
		if d.err == nil && len(d.b) > 0 {
			e.Key = d.str16("key")
			e.HasKey = true
		}
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return e, nil
}
