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
