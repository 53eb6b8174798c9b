package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/heapkv/heapkv"
)

func Example() {
	dir, err := os.MkdirTemp("", "heapkv-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	db, err := heapkv.Open(dir, nil) // nil options: defaults, durable writes
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	if err := db.Put([]byte("greeting"), []byte("hello")); err != nil {
		log.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 64<<10) // above the inline threshold: stored in the heap
	if err := db.Put([]byte("blob"), big); err != nil {
		log.Fatal(err)
	}
	v, err := db.Get([]byte("greeting"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", v)

	if err := db.Delete([]byte("greeting")); err != nil {
		log.Fatal(err)
	}
	_, err = db.Get([]byte("greeting"))
	fmt.Println(errors.Is(err, heapkv.ErrNotFound))
	// Output:
	// hello
	// true
}

func ExampleDB_Apply() {
	dir, _ := os.MkdirTemp("", "heapkv-example")
	defer os.RemoveAll(dir)
	db, err := heapkv.Open(dir, &heapkv.Options{NoSync: true}) // bulk load: sync at the end
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	b := db.NewBatch()
	b.Put([]byte("a"), []byte("1"))
	b.Put([]byte("b"), []byte("2"))
	b.Delete([]byte("c"))
	// All three writes take effect together; this one is durable on return.
	if err := db.Apply(b, &heapkv.WriteOptions{Sync: true}); err != nil {
		log.Fatal(err)
	}
	if err := db.Sync(); err != nil { // make the NoSync writes durable too
		log.Fatal(err)
	}
	v, _ := db.Get([]byte("b"))
	fmt.Printf("%s\n", v)
	// Output: 2
}

func ExampleDB_Check() {
	dir, _ := os.MkdirTemp("", "heapkv-example")
	defer os.RemoveAll(dir)
	db, err := heapkv.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 10; i++ {
		db.Put([]byte{byte('a' + i)}, bytes.Repeat([]byte{byte(i)}, 10000))
	}
	rep, err := db.Check(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rep.Keys, rep.HeapValues, rep.LeakedBlocks, rep.OK())
	// Output: 10 10 0 true
}

// Two read-only handles read a database side by side; writes fail and no
// file changes. A read-write Open waits for both to close.
func ExampleOptions_readOnly() {
	dir, err := os.MkdirTemp("", "heapkv-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := heapkv.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := db.Put([]byte("k"), []byte("v")); err != nil {
		log.Fatal(err)
	}
	if err := db.Close(); err != nil {
		log.Fatal(err)
	}

	a, err := heapkv.Open(dir, &heapkv.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := heapkv.Open(dir, &heapkv.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	v, err := b.Get([]byte("k"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", v)
	fmt.Println(errors.Is(a.Put([]byte("k"), []byte("w")), heapkv.ErrReadOnly))
	_, err = heapkv.Open(dir, nil)
	fmt.Println(errors.Is(err, heapkv.ErrLocked))
	// Output:
	// v
	// true
	// true
}

// A backup into a new directory copies everything; run again into the
// same directory, it copies only what changed since.
func ExampleDB_Backup() {
	root, err := os.MkdirTemp("", "heapkv-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	db, err := heapkv.Open(root+"/db", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	for i := range 100 {
		if err := db.Put(fmt.Appendf(nil, "key%03d", i), bytes.Repeat([]byte{'v'}, 1000)); err != nil {
			log.Fatal(err)
		}
	}
	ctx := context.Background()
	full, err := db.Backup(ctx, root+"/backup", nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := db.Put([]byte("key007"), []byte("changed")); err != nil {
		log.Fatal(err)
	}
	if err := db.Delete([]byte("key008")); err != nil {
		log.Fatal(err)
	}
	incr, err := db.Backup(ctx, root+"/backup", nil) // an increment
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("full: %d keys; increment: %d values sent, %d kept, %d deleted\n",
		full.Entries, incr.Entries-incr.Kept, incr.Kept, incr.Deleted)

	cp, err := heapkv.Open(root+"/backup", &heapkv.Options{ReadOnly: true}) // restoring is opening the copy
	if err != nil {
		log.Fatal(err)
	}
	defer cp.Close()
	v, err := cp.Get([]byte("key007"))
	fmt.Printf("%s %v\n", v, err)
	// Output:
	// full: 100 keys; increment: 1 values sent, 98 kept, 1 deleted
	// changed <nil>
}

// Compact gives the disk space of deleted values back to the file system.
func ExampleDB_Compact() {
	dir, err := os.MkdirTemp("", "heapkv-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// Small segments, so that this small heap has several.
	db, err := heapkv.Open(dir, &heapkv.Options{SegmentSize: 64 << 10, NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	for i := range 1000 {
		if err := db.Put(fmt.Appendf(nil, "key%04d", i), bytes.Repeat([]byte{'v'}, 3000)); err != nil {
			log.Fatal(err)
		}
	}
	for i := range 1000 {
		if i%10 != 0 {
			if err := db.Delete(fmt.Appendf(nil, "key%04d", i)); err != nil {
				log.Fatal(err)
			}
		}
	}
	res, err := db.Compact(context.Background(), nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Unsupported || res.FileBytesAfter < res.FileBytesBefore/5)
	// Output:
	// true
}

// Compact with Cluster rewrites values in key order, so that a range scan
// reads neighbouring keys' values from neighbouring blocks; with bounds it
// rewrites one key range only.
func ExampleDB_Compact_cluster() {
	dir, err := os.MkdirTemp("", "heapkv-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := heapkv.Open(dir, &heapkv.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	// Written in an order other than the keys' (a stride of 7 modulo 100):
	// each value lands wherever the heap had room at the time.
	for i := range 100 {
		k := fmt.Appendf(nil, "user:%03d", i*7%100)
		if err := db.Put(k, bytes.Repeat([]byte{'v'}, 1000)); err != nil {
			log.Fatal(err)
		}
	}
	res, err := db.Compact(context.Background(), &heapkv.CompactOptions{
		Cluster:           true,
		ClusterLowerBound: []byte("user:020"),
		ClusterUpperBound: []byte("user:030"),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("values rewritten in key order:", res.ValuesMoved)
	// Output:
	// values rewritten in key order: 10
}
