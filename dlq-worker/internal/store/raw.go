package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// RawRecord is a Kafka record exactly as read: what a degraded dead letter keeps in raw_record.
type RawRecord struct {
	Key     []byte // nil: the record had no key
	Value   []byte // nil: the record had no value (a tombstone)
	Headers []RawHeader
}

// RawHeader is one header as read, its key included, which Kafka does not require to be UTF-8.
type RawHeader struct {
	Key   []byte
	Value []byte // nil: the header had no value
}

// rawMagic starts every framed record, so a reader can tell the format and its version.
var rawMagic = []byte("EPRORAW1")

// Marshal frames r as: "EPRORAW1", key, value, the header count (uint32), then each header's key and value.
// A byte string is an int32 length followed by its bytes, -1 for nil; integers are big-endian. The framing
// is documented here and in ARCHITECTURE.md so the bytes can be read without this code.
func (r RawRecord) Marshal() []byte {
	n := len(rawMagic) + 4 + len(r.Key) + 4 + len(r.Value) + 4
	for _, h := range r.Headers {
		n += 8 + len(h.Key) + len(h.Value)
	}
	b := make([]byte, 0, n)
	b = append(b, rawMagic...)
	b = appendBytes(b, r.Key)
	b = appendBytes(b, r.Value)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Headers)))
	for _, h := range r.Headers {
		b = appendBytes(b, h.Key)
		b = appendBytes(b, h.Value)
	}
	return b
}

// Sum returns the SHA-256 of the record's framing, kept beside it (and instead of it when even the framed
// bytes could not be stored).
func (r RawRecord) Sum() []byte {
	s := sha256.Sum256(r.Marshal())
	return s[:]
}

func appendBytes(b, v []byte) []byte {
	if v == nil {
		return binary.BigEndian.AppendUint32(b, 0xFFFFFFFF) // int32 -1
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// errRawFraming is returned for bytes that are not a framed record.
var errRawFraming = errors.New("not a framed raw record")

// UnmarshalRawRecord reads bytes written by RawRecord.Marshal.
func UnmarshalRawRecord(b []byte) (RawRecord, error) {
	if !bytes.HasPrefix(b, rawMagic) {
		return RawRecord{}, errRawFraming
	}
	b = b[len(rawMagic):]
	var r RawRecord
	var err error
	if r.Key, b, err = readBytes(b); err != nil {
		return RawRecord{}, err
	}
	if r.Value, b, err = readBytes(b); err != nil {
		return RawRecord{}, err
	}
	if len(b) < 4 {
		return RawRecord{}, fmt.Errorf("%w: header count cut short", errRawFraming)
	}
	count := binary.BigEndian.Uint32(b)
	b = b[4:]
	if uint64(count)*8 > uint64(len(b)) {
		return RawRecord{}, fmt.Errorf("%w: %d headers cannot fit in %d bytes", errRawFraming, count, len(b))
	}
	r.Headers = make([]RawHeader, 0, count)
	for i := uint32(0); i < count; i++ {
		var h RawHeader
		if h.Key, b, err = readBytes(b); err != nil {
			return RawRecord{}, err
		}
		if h.Value, b, err = readBytes(b); err != nil {
			return RawRecord{}, err
		}
		r.Headers = append(r.Headers, h)
	}
	if len(b) != 0 {
		return RawRecord{}, fmt.Errorf("%w: %d bytes after the last header", errRawFraming, len(b))
	}
	return r, nil
}

func readBytes(b []byte) (v, rest []byte, err error) {
	if len(b) < 4 {
		return nil, nil, fmt.Errorf("%w: length cut short", errRawFraming)
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if n == 0xFFFFFFFF {
		return nil, b, nil
	}
	if uint64(n) > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: %d bytes announced, %d left", errRawFraming, n, len(b))
	}
	return append([]byte{}, b[:n]...), b[n:], nil
}
