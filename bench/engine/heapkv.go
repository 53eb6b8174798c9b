package engine

import (
	"errors"
	"io"
	"log/slog"

	"github.com/heapkv/heapkv"
)

func init() {
	register(Config{"heapkv", "heapkv with its default options (NoSync when -sync=false)", openHeapKV})
}

type heapDB struct{ db *heapkv.DB }

func openHeapKV(dir string, sync bool) (DB, error) {
	db, err := heapkv.Open(dir, &heapkv.Options{
		NoSync: !sync,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	return &heapDB{db}, nil
}

func (h *heapDB) Insert(k, v []byte) error { return h.db.Put(k, v) }
func (h *heapDB) Update(k, v []byte) error { return h.db.Put(k, v) }
func (h *heapDB) Read(k []byte) ([]byte, error) {
	v, err := h.db.Get(k)
	if errors.Is(err, heapkv.ErrNotFound) {
		return nil, ErrNotFound
	}
	return v, err
}

func (h *heapDB) Scan(start []byte, n int) (int, error) {
	it, err := h.db.NewIter(&heapkv.IterOptions{LowerBound: start})
	if err != nil {
		return 0, err
	}
	got := 0
	for ok := it.SeekGE(start); ok && got < n; ok = it.Next() {
		if _, err := it.Value(); err != nil {
			it.Close()
			return got, err
		}
		got++
	}
	if err := it.Error(); err != nil {
		it.Close()
		return got, err
	}
	return got, it.Close()
}

func (h *heapDB) Close() error { return h.db.Close() }
