package filehdr_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
)

// Every way a header can be bad is ErrBadHeader and, since a bad header is
// damage, base.ErrCorrupt; ErrBadHeader keeps its text.
func TestBadHeaderIsCorrupt(t *testing.T) {
	if got := filehdr.ErrBadHeader.Error(); got != "filehdr: bad file header" {
		t.Fatalf("ErrBadHeader text %q", got)
	}
	id := filehdr.DBID{7}
	good := filehdr.Header{Kind: filehdr.KindLog, Version: filehdr.Version, DBID: id}.Encode(make([]byte, filehdr.Size))
	if _, err := filehdr.Check(good, filehdr.KindLog, id); err != nil {
		t.Fatalf("good header: %v", err)
	}
	flipped := bytes.Clone(good)
	flipped[filehdr.Size-1] ^= 1
	for _, tc := range []struct {
		what string
		b    []byte
		k    filehdr.Kind
		id   filehdr.DBID
	}{
		{"short", good[:filehdr.Size-1], filehdr.KindLog, id},
		{"bad checksum", flipped, filehdr.KindLog, id},
		{"wrong kind", good, filehdr.KindHeap, id},
		{"another database", good, filehdr.KindLog, filehdr.DBID{8}},
	} {
		_, err := filehdr.Check(tc.b, tc.k, tc.id)
		if !errors.Is(err, filehdr.ErrBadHeader) || !errors.Is(err, base.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrBadHeader and base.ErrCorrupt", tc.what, err)
		}
	}
	// A failed read is not damage.
	_, err := filehdr.Read(errReader{}, filehdr.KindLog, id)
	if err == nil || base.IsCorrupt(err) {
		t.Errorf("read error: %v, want an error that is not corruption", err)
	}
}

type errReader struct{}

func (errReader) ReadAt([]byte, int64) (int, error) { return 0, errors.New("disk on fire") }
