package engine

import (
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

func init() {
	register(Config{"bbolt", "bbolt defaults, one read-write transaction per write (NoSync when -sync=false)", openBolt})
}

var boltBucket = []byte("usertable")

type boltDB struct{ db *bolt.DB }

func openBolt(dir string, sync bool) (DB, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(dir, "bolt.db"), 0o644, &bolt.Options{NoSync: !sync})
	if err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	return &boltDB{db}, nil
}

func (b *boltDB) set(k, v []byte) error {
	return b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(boltBucket).Put(k, v) })
}

func (b *boltDB) Insert(k, v []byte) error { return b.set(k, v) }
func (b *boltDB) Update(k, v []byte) error { return b.set(k, v) }
func (b *boltDB) Read(k []byte) ([]byte, error) {
	var out []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(boltBucket).Get(k)
		if v == nil {
			return ErrNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

func (b *boltDB) Scan(start []byte, n int) (int, error) {
	got, sum := 0, uint64(0)
	defer func() { touchSink.Add(sum) }()
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltBucket).Cursor()
		for k, v := c.Seek(start); k != nil && got < n; k, v = c.Next() {
			sum += touch(v)
			got++
		}
		return nil
	})
	return got, err
}

func (b *boltDB) Close() error {
	if b.db.NoSync {
		if err := b.db.Sync(); err != nil {
			b.db.Close()
			return err
		}
	}
	return b.db.Close()
}
