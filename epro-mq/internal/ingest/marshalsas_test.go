package ingest

import (
	"bytes"
	"encoding/json"
	"testing"
)

var marshalsAsCases = []string{
	`{}`, `{"a":1}`, " { \"a\" :\t[ 1 , 2 ]\n,\r\"b\" : \"x y\" } ", `{"n":"a <b> & c"}`, `{"n":"\u003c\u0026"}`,
	"{\"n\":\"\u2028\u2029\u2027\u202a\"}", `{"n":"\" \\ \/ \n \u00e9 é 😀"}`, `{"a":"\\","b":"\""}`, `[1,true,null,"<"]`,
	`"x"`, `1.50`, ` 2 `, `{"a b":{"c\"d":[" ",  "\t"]}}`,
}

// marshalsAs says what comparing with json.Marshal's output says, for every written text.
func TestMarshalsAs(t *testing.T) {
	for _, raw := range marshalsAsCases {
		written, err := json.Marshal(json.RawMessage(raw))
		if err != nil {
			t.Fatal(err)
		}
		if !marshalsAs(json.RawMessage(raw), written) {
			t.Errorf("%q: json.Marshal's own output %q refused", raw, written)
		}
		for _, other := range [][]byte{[]byte(raw), written[:len(written)-1], append(bytes.Clone(written), ' '), nil,
			bytes.ReplaceAll(written, []byte(`\u003c`), []byte(`\u003C`)), bytes.ReplaceAll(written, []byte(`1`), []byte(`1.0`))} {
			if got, want := marshalsAs(json.RawMessage(raw), other), bytes.Equal(other, written); got != want {
				t.Errorf("%q against %q: %v, want %v", raw, other, got, want)
			}
		}
	}
	if !marshalsAs(nil, []byte("null")) || marshalsAs(nil, []byte("")) {
		t.Error("a nil RawMessage is written null")
	}
}

func FuzzMarshalsAs(f *testing.F) {
	for _, raw := range marshalsAsCases {
		written, _ := json.Marshal(json.RawMessage(raw))
		f.Add([]byte(raw), written)
		f.Add([]byte(raw), []byte(raw))
	}
	f.Fuzz(func(t *testing.T, raw, other []byte) {
		if !json.Valid(raw) {
			return
		}
		written, err := json.Marshal(json.RawMessage(raw))
		if err != nil {
			t.Fatal(err)
		}
		if !marshalsAs(raw, written) {
			t.Fatalf("%q: json.Marshal's own output %q refused", raw, written)
		}
		if got, want := marshalsAs(raw, other), bytes.Equal(other, written); got != want {
			t.Fatalf("%q against %q: %v, want %v", raw, other, got, want)
		}
	})
}
