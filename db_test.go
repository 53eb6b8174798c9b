package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/heapkv/heapkv"
	"github.com/stretchr/testify/require"
)

func TestPutGetDeleteReopen(t *testing.T) {
	dir := t.TempDir()
	db, err := heapkv.Open(dir, nil)
	require.NoError(t, err)
	vals := map[string][]byte{}
	for i := 0; i < 200; i++ {
		k := fmt.Sprintf("key-%03d", i)
		v := bytes.Repeat([]byte{byte(i)}, i*97)
		require.NoError(t, db.Put([]byte(k), v))
		vals[k] = v
	}
	for i := 0; i < 200; i += 3 {
		k := fmt.Sprintf("key-%03d", i)
		require.NoError(t, db.Delete([]byte(k)))
		delete(vals, k)
	}
	verify := func(db *heapkv.DB) {
		for i := 0; i < 200; i++ {
			k := fmt.Sprintf("key-%03d", i)
			got, err := db.Get([]byte(k))
			if want, ok := vals[k]; ok {
				require.NoError(t, err, k)
				require.Equal(t, want, got, k)
			} else {
				require.ErrorIs(t, err, heapkv.ErrNotFound, k)
			}
		}
		rep, err := db.Check(context.Background())
		require.NoError(t, err)
		require.Equal(t, int64(len(vals)), rep.Keys)
	}
	verify(db)
	require.NoError(t, db.Close())
	require.ErrorIs(t, db.Close(), heapkv.ErrClosed)
	_, err = db.Get([]byte("x"))
	require.ErrorIs(t, err, heapkv.ErrClosed)

	db, err = heapkv.Open(dir, nil)
	require.NoError(t, err)
	verify(db)
	_, err = heapkv.Open(dir, nil)
	require.ErrorIs(t, err, heapkv.ErrLocked)
	require.NoError(t, db.Close())
}

func TestBadInput(t *testing.T) {
	db, err := heapkv.Open(t.TempDir(), nil)
	require.NoError(t, err)
	defer db.Close()
	require.ErrorIs(t, db.Put(nil, []byte("v")), heapkv.ErrEmptyKey)
	require.ErrorIs(t, db.Put(make([]byte, heapkv.MaxKeySize+1), nil), heapkv.ErrKeyTooLarge)
	require.ErrorIs(t, db.Put([]byte("k"), make([]byte, heapkv.MaxValueSize+1)), heapkv.ErrValueTooLarge)
	_, err = db.Get(nil)
	require.ErrorIs(t, err, heapkv.ErrEmptyKey)
	big := make([]byte, heapkv.MaxValueSize)
	for i := range big {
		big[i] = byte(i * 7)
	}
	require.NoError(t, db.Put([]byte("big"), big))
	got, err := db.Get([]byte("big"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(big, got))
	_, err = heapkv.Open(t.TempDir(), &heapkv.Options{BlockSize: 1000})
	require.True(t, errors.Is(err, heapkv.ErrInvalidOptions), err)
}

func TestBatchTooLarge(t *testing.T) {
	db, err := heapkv.Open(t.TempDir(), &heapkv.Options{NoSync: true})
	require.NoError(t, err)
	defer db.Close()
	b := db.NewBatch()
	v := bytes.Repeat([]byte("x"), 2000) // inline
	for i := 0; i < 50_000; i++ {
		b.Put([]byte(fmt.Sprintf("k%06d", i)), v)
	}
	require.ErrorIs(t, db.Apply(b, nil), heapkv.ErrBatchTooLarge)
	// The database is not failed by it.
	require.NoError(t, db.Put([]byte("after"), []byte("ok")))
	b.Reset()
	for i := 0; i < heapkv.MaxBatchOps+1; i++ {
		b.Delete([]byte(fmt.Sprintf("k%06d", i)))
	}
	require.ErrorIs(t, db.Apply(b, nil), heapkv.ErrBatchTooLarge)
}

// A synced write of an inline value costs two fsyncs (the log's, then its
// sync mark's); so does one of a heap value its record carries (the heap
// is flushed by checkpoints).
func TestSyncedInlineWriteOneFsync(t *testing.T) {
	db, err := heapkv.Open(t.TempDir(), nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	put := func(v []byte) int64 {
		before, err := db.Stats()
		require.NoError(t, err)
		require.NoError(t, db.Put([]byte("k"), v))
		after, err := db.Stats()
		require.NoError(t, err)
		return after.Fsyncs - before.Fsyncs
	}
	put(bytes.Repeat([]byte{1}, 10)) // the first sync after open flushes the heap
	require.EqualValues(t, 2, put(bytes.Repeat([]byte{2}, 100)), "inline Put")
	require.EqualValues(t, 2, put(bytes.Repeat([]byte{3}, 10000)), "heap Put")
	require.EqualValues(t, 2, put(bytes.Repeat([]byte{4}, 100)), "inline Put after a heap Put")
}
