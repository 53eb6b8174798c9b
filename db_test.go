package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/heapkv/heapkv"
)

func TestPutGetDeleteReopen(t *testing.T) {
	dir := t.TempDir()
	db := openTestDB(t, dir, nil)
	vals := map[string][]byte{}
	for i := 0; i < 200; i++ {
		k := fmt.Sprintf("key-%03d", i)
		v := bytes.Repeat([]byte{byte(i)}, i*97)
		if err := db.Put([]byte(k), v); err != nil {
			t.Fatal(err)
		}
		vals[k] = v
	}
	for i := 0; i < 200; i += 3 {
		k := fmt.Sprintf("key-%03d", i)
		if err := db.Delete([]byte(k)); err != nil {
			t.Fatal(err)
		}
		delete(vals, k)
	}
	verify := func(db *heapkv.DB) {
		for i := 0; i < 200; i++ {
			k := fmt.Sprintf("key-%03d", i)
			got, err := db.Get([]byte(k))
			if want, ok := vals[k]; ok {
				if err != nil {
					t.Fatalf("%v: %v", k, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%v: got = %.64q, want %.64q", k, got, want)
				}
			} else {
				if !errors.Is(err, heapkv.ErrNotFound) {
					t.Fatalf("%v: err = %v, want %v", k, err, heapkv.ErrNotFound)
				}
			}
		}
		rep, err := db.Check(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Keys != int64(len(vals)) {
			t.Fatalf("rep.Keys = %v, want %v", rep.Keys, int64(len(vals)))
		}
	}
	verify(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("db.Close() = %v, want %v", err, heapkv.ErrClosed)
	}
	if _, err := db.Get([]byte("x")); !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("Get after Close: %v, want %v", err, heapkv.ErrClosed)
	}

	db = openTestDB(t, dir, nil)
	verify(db)
	if _, err := heapkv.Open(dir, nil); !errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("second Open: %v, want %v", err, heapkv.ErrLocked)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBadInput(t *testing.T) {
	db := openTestDB(t, t.TempDir(), nil)
	if err := db.Put(nil, []byte("v")); !errors.Is(err, heapkv.ErrEmptyKey) {
		t.Fatalf("db.Put(nil, []byte(\"v\")) = %v, want %v", err, heapkv.ErrEmptyKey)
	}
	if err := db.Put(make([]byte, heapkv.MaxKeySize+1), nil); !errors.Is(err, heapkv.ErrKeyTooLarge) {
		t.Fatalf("db.Put(make([]byte, heapkv.MaxKeySize+1), nil) = %v, want %v", err, heapkv.ErrKeyTooLarge)
	}
	if err := db.Put([]byte("k"), make([]byte, heapkv.MaxValueSize+1)); !errors.Is(err, heapkv.ErrValueTooLarge) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrValueTooLarge)
	}
	if _, err := db.Get(nil); !errors.Is(err, heapkv.ErrEmptyKey) {
		t.Fatalf("Get(nil): %v, want %v", err, heapkv.ErrEmptyKey)
	}
	big := make([]byte, heapkv.MaxValueSize)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if err := db.Put([]byte("big"), big); err != nil {
		t.Fatal(err)
	}
	got, err := db.Get([]byte("big"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(big, got) {
		t.Fatalf("Get(big) returned %d bytes that differ from the %d put", len(got), len(big))
	}
	if _, err := heapkv.Open(t.TempDir(), &heapkv.Options{BlockSize: 1000}); !errors.Is(err, heapkv.ErrInvalidOptions) {
		t.Fatalf("Open with BlockSize 1000: %v, want ErrInvalidOptions", err)
	}
}

func TestBatchTooLarge(t *testing.T) {
	db := openTestDB(t, t.TempDir(), &heapkv.Options{NoSync: true, InlineThreshold: 2048})
	b := db.NewBatch()
	v := bytes.Repeat([]byte("x"), 2000) // inline
	for i := 0; i < 50_000; i++ {
		b.Put([]byte(fmt.Sprintf("k%06d", i)), v)
	}
	if err := db.Apply(b, nil); !errors.Is(err, heapkv.ErrBatchTooLarge) {
		t.Fatalf("db.Apply(b, nil) = %v, want %v", err, heapkv.ErrBatchTooLarge)
	}
	// The database is not failed by it.
	if err := db.Put([]byte("after"), []byte("ok")); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	for i := 0; i < heapkv.MaxBatchOps+1; i++ {
		b.Delete([]byte(fmt.Sprintf("k%06d", i)))
	}
	if err := db.Apply(b, nil); !errors.Is(err, heapkv.ErrBatchTooLarge) {
		t.Fatalf("db.Apply(b, nil) = %v, want %v", err, heapkv.ErrBatchTooLarge)
	}
}
