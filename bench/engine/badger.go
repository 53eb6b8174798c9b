package engine

import (
	"errors"

	"github.com/dgraph-io/badger/v4"
)

func init() {
	register(Config{"badger", "Badger v4 defaults (values up to 1 MiB stay in the LSM tree)", func(dir string, sync bool) (DB, error) {
		return openBadger(badger.DefaultOptions(dir), sync)
	}})
	register(Config{"badger-vlog", "Badger v4 defaults with ValueThreshold 1 KiB (larger values go to the value log)", func(dir string, sync bool) (DB, error) {
		return openBadger(badger.DefaultOptions(dir).WithValueThreshold(1<<10), sync)
	}})
}

type badgerDB struct{ db *badger.DB }

func openBadger(o badger.Options, sync bool) (DB, error) {
	db, err := badger.Open(o.WithSyncWrites(sync).WithLogger(nil))
	if err != nil {
		return nil, err
	}
	return &badgerDB{db}, nil
}

func (b *badgerDB) set(k, v []byte) error {
	return b.db.Update(func(txn *badger.Txn) error { return txn.Set(k, v) })
}

func (b *badgerDB) Insert(k, v []byte) error { return b.set(k, v) }
func (b *badgerDB) Update(k, v []byte) error { return b.set(k, v) }
func (b *badgerDB) Read(k []byte) ([]byte, error) {
	var out []byte
	err := b.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(k)
		if err != nil {
			return err
		}
		out, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	return out, err
}

func (b *badgerDB) Scan(start []byte, n int) (int, error) {
	got, sum := 0, uint64(0)
	defer func() { touchSink.Add(sum) }()
	err := b.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchSize = min(n, 100)
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Seek(start); it.Valid() && got < n; it.Next() {
			if err := it.Item().Value(func(v []byte) error { sum += touch(v); return nil }); err != nil {
				return err
			}
			got++
		}
		return nil
	})
	return got, err
}

func (b *badgerDB) Close() error { return b.db.Close() }
